"""systemd for tests without a running systemd: `systemd-analyze verify` on unit files, and a notify socket.

Why a fake home for verify: `--user` resolves %h and the unit search path from HOME/XDG_CONFIG_HOME and
insists on a private XDG_RUNTIME_DIR (as root in a container there is none), and it checks that ExecStart's
program exists, so a test gives it a home where the program the unit names really is.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Verdict:
    returncode: int
    output: str

    def ok_for(self, unit: Path) -> bool:
        """rc 0 is not enough: unknown keys and bad values are only warnings, printed with the file's name."""
        return self.returncode == 0 and unit.name not in self.output and str(unit) not in self.output


def verify_user_unit(unit: Path, home: Path, env: dict[str, str] | None = None) -> Verdict:
    # short: the distribution's own user units put socket paths under it, and sun_path holds 108 bytes
    with tempfile.TemporaryDirectory(prefix="sdv-", dir="/tmp") as runtime:
        os.chmod(runtime, 0o700)
        base = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        full = {**base, "HOME": str(home), "XDG_RUNTIME_DIR": runtime, "SYSTEMD_LOG_COLOR": "0", **(env or {})}
        r = subprocess.run(["systemd-analyze", "verify", "--user", str(unit)], env=full, capture_output=True, text=True, timeout=60)
    return Verdict(r.returncode, r.stdout + r.stderr)


# Linux's SO_TIMESTAMP (asm-generic/socket.h), absent from Python's socket module; SCM_TIMESTAMP has the same value
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)


@dataclass(frozen=True)
class Datagram:
    fields: tuple[str, ...]
    at: float  # kernel arrival time (SO_TIMESTAMP): immune to the test being slow to read


class NotifySocket:
    """The AF_UNIX datagram socket systemd listens on for sd_notify, with kernel arrival timestamps."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[Datagram] = []

    def close(self) -> None:
        self.sock.close()

    async def next(self, timeout: float) -> Datagram:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no sd_notify datagram in {timeout} s; got so far: {self.received}") from None
                fut = loop.create_future()
                loop.add_reader(self.sock.fileno(), lambda: fut.done() or fut.set_result(None))
                try:
                    await asyncio.wait_for(fut, left)
                except TimeoutError:
                    pass
                finally:
                    loop.remove_reader(self.sock.fileno())
                continue
            at = time.time()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                    sec, usec = struct.unpack("qq", value[:16])
                    at = sec + usec / 1e6
            d = Datagram(tuple(data.decode().split("\n")), at)
            self.received.append(d)
            return d

    async def until(self, field: str, timeout: float) -> Datagram:
        deadline = time.monotonic() + timeout
        while True:
            d = await self.next(max(0.01, deadline - time.monotonic()))
            if field in d.fields:
                return d
