"""The system prompt says what voiced can really do, composed at run time on top of the bundle's own prompt.

Why at run time and not in the exported manifest: the bundles already prepared on users' machines carry the
prompt they were exported with (the default one says "If asked to set a timer or reminder, confirm it in one
sentence.", which made the model claim timers it never set), and re-exporting a bundle to change one sentence
costs minutes; what voiced can do also depends on its configuration (commands on or off), not on the model.
"""

from __future__ import annotations

# The sentence of the default bundle's prompt (model_export/sources.py) that this replaces.
STALE = "If asked to set a timer or reminder, confirm it in one sentence."

HANDLED = (
    "You run on a local device. The device itself sets, cancels, pauses and reports timers, alarms and "
    "reminders, and tells the time and date; those requests are handled before they reach you, so if one "
    "reaches you it was not understood: ask the user to say it again and never say it was set."
)
CANNOT = (
    "You cannot control lights, switches, heating, locks, music or any other device, cannot send messages or "
    "make calls, and cannot look anything up online. When asked to do something you cannot do, say plainly that "
    "you cannot do it; never say or suggest that you did it."
)
NO_COMMANDS = "You cannot set timers, alarms or reminders, and you do not know the current time or date."


def compose(base: str, commands_enabled: bool = True) -> str:
    """`base` without the stale timer sentence, followed by what voiced can and cannot do. Idempotent."""
    text = base.replace(STALE, "").strip()
    if CANNOT in text:
        return text
    return " ".join(p for p in (text, HANDLED if commands_enabled else NO_COMMANDS, CANNOT) if p)
