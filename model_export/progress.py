"""Progress lines of the model_export commands: `[command] message` on stderr, so that stdout stays free for the
one JSON summary or path a command prints (scripts and tests parse it). Long phases say their own elapsed time."""

from __future__ import annotations

import sys
from collections.abc import Callable


def printer(command: str) -> Callable[[str], None]:
    """A `say(message)` for `command`'s progress lines."""

    def say(msg: str) -> None:
        print(f"[{command}] {msg}", file=sys.stderr, flush=True)

    return say
