"""The browser page: static files answered on the WebSocket's own port (the server's `http_handler` hook).

Same port, same origin: the page's WebSocket passes the Origin check without any configuration, and the
strict Content-Security-Policy can say `'self'` for everything. The Host header is checked too, so a
DNS-rebinding page (evil.example resolving to 127.0.0.1) gets nothing from us, not even the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voiced.config import ServerSettings
from voiced.server.auth import origin_allowed

# path -> (file in static/, content type)
ROUTES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    # the page links the SVG; /favicon.ico is what a browser asks for when a page names none (a tab on /nope)
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}

# Everything from our own origin, nothing inline, no framing: a pairing code in the fragment is readable by
# any script on the page, so no script but ours may ever run here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Permissions-Policy", "microphone=(self), camera=(), geolocation=()"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def load_static() -> dict[str, StaticFile]:
    """Read the page once at start: a handful of small files, and a missing one fails at start, not on a click."""
    root = resources.files("voiced.server") / "static"
    files: dict[str, StaticFile] = {}
    for path, (name, ctype) in ROUTES.items():
        try:
            body = (root / name).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"the browser page file static/{name} is missing from the voiced package; reinstall voiced (pip install -e .)"
            ) from None
        files[path] = StaticFile(body, ctype)
    return files


def host_allowed(host: str | None, port: int, allowed_origins: list[str]) -> bool:
    """Serve only under a name whose origin the WebSocket accepts: the page would be useless anywhere else,
    and a rebound foreign name must not reach it."""
    if not host:
        return False
    return origin_allowed(f"http://{host.strip()}", port, allowed_origins)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close"), *SECURITY_HEADERS])
    return Response(status.value, status.phrase, headers, body)


def _text(status: HTTPStatus, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def make_http_handler(settings: ServerSettings) -> Callable[[ServerConnection, Request], Response]:
    """The `http_handler` for VoicedServer: GET of the page's files; 403 under a foreign Host; 404 otherwise."""
    files = load_static()

    def handle(conn: ServerConnection, request: Request) -> Response:
        port = conn.local_address[1]
        host = request.headers.get("Host")
        if not host_allowed(host, port, settings.allowed_origins):
            return _text(
                HTTPStatus.FORBIDDEN, f"host {host!r} is not this daemon's; open the page with `voiced open` (http://127.0.0.1:{port}/)\n"
            )
        f = files.get(urlsplit(request.path).path)
        if f is None:
            return _text(HTTPStatus.NOT_FOUND, "not found; the voiced page is at /\n")
        return _response(HTTPStatus.OK, f.body, f.content_type)

    return handle
