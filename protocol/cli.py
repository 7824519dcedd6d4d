"""How a command-line client prints one turn's outcome (used by `voiced ask`, over the wire or in-process).

`ask --json` prints exactly one JSON object on stdout (transcript, reply_text, timings_ms, ...): scripts and
checks outside the test suite parse it, so nothing else is ever printed on stdout in that mode.
The commands themselves read the daemon's settings and token, so they live in `voiced/client_cli.py`;
this module, like all of `protocol/`, imports nothing from `voiced/`.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def format_timings(timings: dict[str, float]) -> str:
    """`reply_done`'s timings in one line: times in ms, the `*_tokens` entries as the counts they are."""
    return "timings: " + ", ".join(f"{k} {v:.0f}" if k.endswith("_tokens") else f"{k} {v:.0f} ms" for k, v in timings.items())


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """One turn's outcome, the same way for `ask --url` and the in-process `ask`: JSON alone on stdout with
    --json; otherwise what was heard and the reply on stdout, the timings on stderr."""
    if as_json:
        print(json.dumps(result))
        return
    if result["transcript"]:
        print(f"you: {result['transcript']}")
    print(result["reply_text"])
    if result["timings_ms"]:
        print(format_timings(result["timings_ms"]), file=sys.stderr)
