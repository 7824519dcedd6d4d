"""Browser pairing: one-time codes for `voiced open`, session credentials for the page. Policy, no sockets.

A browser cannot read the token file, and the token must never travel in a URL (history, logs, other
origins' Referer). So `voiced open` mints a short-lived code *from* the token (HMAC over expiry and nonce):
the separate process needs no RPC with the daemon, and the daemon can check the code with what it already
holds. The page trades the code (once) for a session credential of the same shape with a longer expiry,
kept in sessionStorage; neither can be turned back into the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from voiced.config import ServerSettings, Settings, config_home
from voiced.server.auth import TokenError, read_token, token_matches

PAIR_KIND = "pair1"
SESSION_KIND = "sess1"
PAIR_TTL_S = 60.0
SESSION_TTL_S = 12 * 3600.0
CLOCK_SKEW_S = 5.0  # `voiced open` and the daemon read the same clock, but allow a little for slow starts
MAX_SPENT = 4096  # spent codes remembered until they expire; minting one needs the token, so no flood risk

GrantKind = Literal["token", "pairing", "session"]


def _mac(token: str, kind: str, expiry: int, nonce: str) -> str:
    digest = hmac.new(token.encode(), f"voiced/{kind}/{expiry}/{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _mint(token: str, kind: str, ttl_s: float, now: float | None) -> str:
    expiry = int((time.time() if now is None else now) + ttl_s)
    nonce = secrets.token_urlsafe(9)
    return f"{kind}.{expiry}.{nonce}.{_mac(token, kind, expiry, nonce)}"


def mint_pairing_code(token: str, now: float | None = None, ttl_s: float = PAIR_TTL_S) -> str:
    """A code the daemon accepts once, until `now + ttl_s` (URL-safe: it goes in the page URL's fragment)."""
    return _mint(token, PAIR_KIND, ttl_s, now)


def mint_session(token: str, now: float | None = None, ttl_s: float = SESSION_TTL_S) -> str:
    return _mint(token, SESSION_KIND, ttl_s, now)


def revocation_path(server: ServerSettings) -> Path:
    """Where `voiced open --revoke` records its time, next to the token (the same private directory)."""
    return (server.token_file or config_home() / "token").with_name("revoked-before")


@dataclass
class Revocation:
    """The time before which no pairing code or session credential counts: `voiced open --revoke` writes it, the
    daemon reads it at each check (a stat; re-read when it changed), so revoking needs no restart."""

    path: Path
    _seen: tuple[float, float] = (-1.0, 0.0)  # (mtime, value)

    def __call__(self) -> float:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return 0.0
        if mtime != self._seen[0]:
            try:
                self._seen = (mtime, float(self.path.read_text().strip() or 0))
            except (OSError, ValueError):
                self._seen = (mtime, 0.0)
        return self._seen[1]


def revoke(path: Path, now: float | None = None) -> float:
    """Refuse from now on every pairing code and session credential issued until now (written atomically, 0600)."""
    at = time.time() if now is None else now
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{at:.3f}\n")
    os.replace(tmp, path)
    return at


@dataclass(frozen=True)
class Grant:
    """What a client proved: the token itself, a one-time pairing code, or a session credential."""

    kind: GrantKind
    expires: float | None = None


@dataclass
class Gate:
    """The daemon's side: checks every secret a hello may carry; owns the ledger of spent pairing codes."""

    token: str
    clock: Callable[[], float] = time.time
    session_ttl_s: float = SESSION_TTL_S
    _spent: dict[str, float] = field(default_factory=dict, repr=False)
    # Pairing codes minted before this gate existed are refused: the ledger of spent codes lives in memory, so
    # without this a code used before a restart would work again after it. A code dies with the daemon instead.
    started: float = field(default=-1.0)
    revoked_before: Callable[[], float] = lambda: 0.0  # a Revocation: `voiced open --revoke`

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def check(self, offered: str | None) -> Grant | None:
        """The grant for `offered`, or None (wrong, expired, forged or already used: the caller says nothing)."""
        if offered is None:
            return None
        if token_matches(self.token, offered):
            return Grant("token")
        parts = offered.split(".")
        if len(parts) != 4 or parts[0] not in (PAIR_KIND, SESSION_KIND) or not parts[1].isdigit():
            return None
        kind, expiry_s, nonce, mac = parts
        expiry = int(expiry_s)
        if not hmac.compare_digest(mac.encode(), _mac(self.token, kind, expiry, nonce).encode()):
            return None
        now = self.clock()
        ttl = PAIR_TTL_S if kind == PAIR_KIND else self.session_ttl_s
        if not (now <= expiry <= now + ttl + CLOCK_SKEW_S):
            return None
        if expiry <= self.revoked_before() + ttl:  # minted (expiry - ttl) before the revocation
            return None
        if kind == SESSION_KIND:
            return Grant("session", float(expiry))
        # expiry is int(mint time + PAIR_TTL_S): a code minted at or after the start has expiry > started + TTL - 1
        if expiry <= self.started + PAIR_TTL_S - 1:
            return None
        self._forget_expired(now)
        if mac in self._spent or len(self._spent) >= MAX_SPENT:
            return None
        self._spent[mac] = float(expiry)
        return Grant("pairing", float(expiry))

    def issue_session(self) -> str:
        return mint_session(self.token, self.clock(), self.session_ttl_s)

    def _forget_expired(self, now: float) -> None:
        for mac in [m for m, exp in self._spent.items() if exp < now]:
            del self._spent[mac]


# --------------------------------------------------------------------------------------------- `voiced open`

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"}


def page_url(settings: Settings, code: str, port: int | None = None) -> str:
    """The page's URL with the code in the fragment, which browsers never send to any server."""
    host = settings.server.host.strip()
    port = settings.server.port if port is None else port
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"  # one of the daemon's own origins (auth.own_origins)
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/#pair={code}"


def _daemon_answers(url_host: str, port: int) -> bool:
    try:
        with socket.create_connection((url_host.strip("[]"), port), timeout=1.0):
            return True
    except OSError:
        return False


def _launch_browser(url: str) -> bool:
    """xdg-open only where a desktop session exists: on a console it may start a text browser in the terminal."""
    xdg = shutil.which("xdg-open")
    if xdg is None or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        subprocess.Popen([xdg, url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return False
    return True


def revoke_command(settings: Settings) -> int:
    """`voiced open --revoke`: every browser session and unused pairing code stops working, at once."""
    path = revocation_path(settings.server)
    try:
        revoke(path)
    except OSError as e:
        print(f"voiced: cannot write {path}: {e.strerror or e}; run as the user who runs `voiced serve`", file=sys.stderr)
        return 1
    print(
        "revoked: every browser session and pairing code issued until now is refused (connected pages keep their "
        "connection until they reconnect); run `voiced open` to pair a browser again. The token itself still works: "
        "to replace it, delete the token file and restart the daemon.",
        file=sys.stderr,
    )
    return 0


def open_command(settings: Settings) -> int:
    """Print (and open, on a desktop) a one-time URL for the browser page of the running daemon."""
    if settings.server.port == 0:
        print("voiced: server.port is 0 (a random port), so the page's address is unknown; set server.port in the config", file=sys.stderr)
        return 2
    try:
        token = read_token(settings.token_path())
    except TokenError as e:
        print(f"voiced: {e}", file=sys.stderr)
        return 1
    url = page_url(settings, mint_pairing_code(token))
    print(url, flush=True)
    host = url.split("//", 1)[1].rsplit(":", 1)[0]
    if not _daemon_answers(host, settings.server.port):
        print(
            f"voiced: nothing answers on {host}:{settings.server.port}; start the daemon with `voiced serve` "
            f"and run `voiced open` again (the link works once, within {int(PAIR_TTL_S)} s)",
            file=sys.stderr,
        )
        return 1
    if _launch_browser(url):
        print(f"opened in your browser; the link works once, within {int(PAIR_TTL_S)} s", file=sys.stderr)
    else:
        print(f"open this link in a browser on this machine within {int(PAIR_TTL_S)} s (it works once)", file=sys.stderr)
    return 0
