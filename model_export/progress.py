"""Progress lines of the model_export commands: `[command 12.3s] message` on stderr, so that stdout stays free for
the one JSON summary or path a command prints (scripts and tests parse it), and every line says how long the
command has run (the long phases are minutes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def printer(command: str) -> Callable[[str], None]:
    """A `say(message)` for `command`'s progress lines; the clock starts when it is made."""
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{command} {time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say
