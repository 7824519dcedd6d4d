"""The daemon's token and the handshake checks (token, Origin). Policy only; the server does the I/O.

A token in a private file, rather than "loopback is trusted", because every local process and every web page
the user visits can reach 127.0.0.1: the token proves the client can read the user's own files.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from voiced.errors import VoicedError


class TokenError(VoicedError):
    """The token file cannot be used; the message says how to fix it."""


def load_or_create_token(path: Path) -> str:
    """Read the token, creating it (mode 0600, parent 0700) on first start; refuse one others can read."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return load_or_create_token(path)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise TokenError(f"token file {path} has mode {mode:04o}: other users could read it and use the microphone. Fix: chmod 600 {path}")
    token = path.read_text().strip()
    if len(token) < 16:
        raise TokenError(f"token file {path} is empty or too short; delete it and restart `voiced serve` to make a new one")
    return token


def read_token(path: Path) -> str:
    """The client side: read an existing token, never create one."""
    path = Path(path)
    if not path.exists():
        raise TokenError(f"no token at {path}: start the daemon first with `voiced serve` (it creates the token)")
    try:
        token = path.read_text().strip()
    except PermissionError:
        raise TokenError(f"cannot read the token at {path}; run as the user who runs `voiced serve`") from None
    if not token:
        raise TokenError(f"token file {path} is empty; delete it and restart `voiced serve`")
    return token


def token_matches(expected: str, offered: str | None) -> bool:
    """Constant-time comparison so the token cannot be guessed byte by byte from response times."""
    return offered is not None and hmac.compare_digest(expected.encode(), offered.encode())


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def own_origins(port: int) -> set[str]:
    return {f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"}


def origin_allowed(origin: str | None, port: int, allowed: list[str]) -> bool:
    """No Origin = not a browser (token still required). A browser must come from our own page or the allowlist."""
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    return origin in own_origins(port) or origin in {a.rstrip("/").lower() for a in allowed}
