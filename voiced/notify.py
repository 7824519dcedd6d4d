"""systemd's notify protocol (READY=1, WATCHDOG=1, STATUS=, STOPPING=1): a few datagrams, no libsystemd.

Without NOTIFY_SOCKET (not started by systemd) every call is a no-op, so the daemon code never branches on it.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address = None
        if address:
            # "@name" is the abstract namespace
            self._address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError:
            return False

    def watchdog_interval(self) -> float | None:
        """Half of WatchdogSec, as systemd recommends; None when no watchdog was asked for."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return max(0.05, int(usec) / 2e6)
        except ValueError:
            return None
