"""Commands before the model: timers, alarms, reminders and the clock, done for real and said as done.

- `match`: words -> a typed Command (hassil + Home Assistant's English templates + ours in data/en.yaml);
- `when`: time phrases ("tomorrow at 9", "in ten minutes") -> moments; `schedule`: the items as pure state;
- `actions`: a command run on the schedule at `now` -> the reply and what changed (pure);
- `runtime`: the daemon's edge (the pipeline's hook, wake-ups, ringing, messages, saving via `store`);
- `prompt`: the system prompt's account of what voiced can and cannot do; `wyoming`: timer events for peers.
"""
