"""Timers, alarms and reminders on disk, only when `privacy.save_reminders` allows it (off by default).

One JSON file in `privacy.data_dir`, written whole on every change (a temporary file renamed over the old one,
mode 0600: a reminder's words are the user's), read once at start. A file that cannot be read is left where it
is, untouched, and saving stays off for that run, so a bad edit by hand never costs the user their reminders.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from voiced.commands.schedule import Item

log = logging.getLogger(__name__)

FILE = "commands.json"
VERSION = 1


class Store:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir).expanduser() / FILE
        self.writable = True

    def load(self) -> list[Item]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            return [Item.from_dict(d) for d in data["items"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            self.writable = False
            log.error("%s cannot be read (%s); timers and reminders will not be saved this run. Fix: move the file "
                      "away (voiced then starts a new one) or repair it", self.path, e)  # fmt: skip
            return []

    def save(self, items: list[Item]) -> None:
        if not self.writable:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": VERSION, "items": [i.to_dict() for i in items]}, f)
        os.replace(tmp, self.path)
