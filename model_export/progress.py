"""Progress lines of the model_export commands: `[command] message` on stderr, so that stdout stays free for the
one JSON summary or path a command prints (scripts and tests parse it). Long phases say their own elapsed time;
`elapsed=True` puts the command's running time on every line instead (`[command   12.3s] message`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def printer(command: str, elapsed: bool = False) -> Callable[[str], None]:
    """A `say(message)` for `command`'s progress lines; with `elapsed`, the clock starts when it is made."""
    t0 = time.monotonic()

    def say(msg: str) -> None:
        tag = f"{command} {time.monotonic() - t0:6.1f}s" if elapsed else command
        print(f"[{tag}] {msg}", file=sys.stderr, flush=True)

    return say
