"""The system prompt says what voiced can really do, composed at run time on top of the bundle's own prompt.

Why at run time and not in the exported manifest: the bundles already prepared on users' machines carry the
prompt they were exported with (the default one says "If asked to set a timer or reminder, confirm it in one
sentence.", which made the model claim timers it never set), and re-exporting a bundle to change one sentence
costs minutes; what voiced can do also depends on its configuration (commands on or off), not on the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# The sentence of the default bundle's prompt (voiced/model/catalog.py) that this replaces.
STALE = "If asked to set a timer or reminder, confirm it in one sentence."

# Worded by trying it on the 1.5B default: "you cannot control devices" alone still got "Sure, I can turn on
# the kitchen light."; a bare list of what it cannot do made it refuse "how do I boil an egg?" too. Asking to
# operate something and asking how to do it are named apart.
CANNOT = (
    "You can only talk: you have no connection to lights, switches, heating, locks, speakers, phones or the "
    "internet, so you cannot operate any of them. If the user asks you to operate one (turn on a light, play "
    "music, lock a door), say in one sentence that you can't do that, and never say or suggest that you did it. "
    "If the user asks how to do something themselves, explain it."
)
HANDLED = (
    "Timers, alarms, reminders, the time and the date are handled by the device before you; if such a request "
    "reaches you, say you didn't catch it and ask the user to say it again."
)
NO_COMMANDS = "You cannot set timers, alarms or reminders, and you do not know the current time or date."


def compose(base: str, commands_enabled: bool = True) -> str:
    """`base` without the stale timer sentence, followed by what voiced can and cannot do. Idempotent."""
    text = base.replace(STALE, "").strip()
    if CANNOT in text:
        return text
    return " ".join(p for p in (text, CANNOT, HANDLED if commands_enabled else NO_COMMANDS) if p)


def for_assistant(base: str, count_tokens: Callable[[str], int], budget: int, commands_run: bool) -> str:
    """The composed prompt for a model, unless it would take more than a quarter of the prompt's token `budget`
    (a small test model's 512-token context): there the account would crowd out the conversation itself, so
    the base prompt stays (logged). `commands_run`: False where commands never run (encoder-free bundles have
    no words to match, so the prompt must not promise them)."""
    text = compose(base, commands_run)
    if count_tokens(text) > budget // 4:
        log.warning("the model's context is too small for the account of what voiced can do; its own prompt stays")
        return base
    return text
