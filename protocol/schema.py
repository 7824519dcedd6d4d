"""Generates protocol/schema.json from the message models: `python -m protocol.schema` (tests fail when stale).

The schema is for client authors in other languages; the models stay the source of truth, so the file is
never edited by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from protocol import framing
from protocol.messages import PROTOCOL_VERSION, ClientMessageRoot, ServerMessageRoot

SCHEMA_PATH = Path(__file__).with_name("schema.json")


def build_schema() -> dict[str, Any]:
    refs, schema = models_json_schema(
        [(ClientMessageRoot, "validation"), (ServerMessageRoot, "serialization")], ref_template="#/$defs/{model}"
    )
    defs = schema["$defs"]
    # Name the two unions plainly: that is what a client author looks up.
    defs["ClientMessage"] = defs.pop("ClientMessageRoot")
    defs["ServerMessage"] = defs.pop("ServerMessageRoot")
    text = (
        json.dumps(defs)
        .replace("#/$defs/ClientMessageRoot", "#/$defs/ClientMessage")
        .replace("#/$defs/ServerMessageRoot", "#/$defs/ServerMessage")
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:voiced:protocol:{PROTOCOL_VERSION}",
        "title": f"voiced WebSocket protocol ({PROTOCOL_VERSION})",
        "description": (
            "JSON text frames. ClientMessage: client -> server; ServerMessage: server -> client. "
            f"Binary frames carry audio: a {framing.HEADER_SIZE}-byte little-endian header "
            "(u8 version=1, u8 kind 1=microphone/2=reply, u8 format 1=s16le, u8 channels=1, u32 stream, u32 seq, "
            "u32 rate) then PCM s16le. See PROTOCOL.md."
        ),
        "oneOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": json.loads(text),
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args == ["--check"]:
        if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale; run `python -m protocol.schema`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
