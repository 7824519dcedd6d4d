"""Zeroconf (mDNS) for the Wyoming endpoint: Home Assistant discovers `_wyoming._tcp.local.` services and offers
to add them, so a user need not type a host and a port.

Announced only when the endpoint is bound beyond loopback (a loopback or Unix-socket endpoint is reachable from
this host only: announcing it on the LAN would invite peers that cannot connect), and unless
`server.wyoming_zeroconf` is false. A wildcard bind (0.0.0.0) announces this host's non-loopback IPv4
addresses. The library is python-zeroconf (the one Home Assistant itself uses); announcing is best effort: a
network without multicast logs a warning and the endpoint serves as before.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."


@dataclass(frozen=True)
class Announcement:
    """What to announce: the instance name, the addresses and the port (pure; see `plan`)."""

    name: str
    addresses: tuple[str, ...]
    port: int


def _host_ipv4s() -> list[str]:
    import ifaddr  # zeroconf's own dependency

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                out.append(ip.ip)
    return out


def plan(uri: str, port: int | None, hostname: str, host_addresses: Callable[[], list[str]]) -> Announcement | None:
    """The announcement for an endpoint bound at `uri` (its real `port`), or None when nothing is to be announced."""
    parsed = urlparse(uri)
    if parsed.scheme != "tcp" or port is None or not parsed.hostname:
        return None
    try:
        bound = ipaddress.ip_address(parsed.hostname)
    except ValueError:  # a host name: announce what it resolves to only if that is beyond loopback
        return None
    if bound.is_loopback or bound.version != 4:
        return None
    addresses = tuple(host_addresses()) if bound.is_unspecified else (str(bound),)
    if not addresses:
        return None
    label = "".join(c if c.isalnum() or c == "-" else "-" for c in hostname.split(".")[0])[:40] or "host"
    return Announcement(name=f"voiced-{label}", addresses=addresses, port=port)


class Announcer:
    """Registers one Announcement with python-zeroconf while the endpoint serves."""

    def __init__(self) -> None:
        self._zc: object | None = None
        self._info: object | None = None

    async def start(self, announcement: Announcement) -> bool:
        try:
            from zeroconf import IPVersion, ServiceInfo
            from zeroconf.asyncio import AsyncZeroconf
        except ImportError:
            log.warning(
                "Wyoming is not announced on the LAN: install zeroconf (pip install zeroconf), or set "
                "server.wyoming_zeroconf = false to silence this"
            )
            return False
        info = ServiceInfo(
            SERVICE_TYPE,
            f"{announcement.name}.{SERVICE_TYPE}",
            port=announcement.port,
            addresses=[socket.inet_aton(a) for a in announcement.addresses],
            server=f"{announcement.name}.local.",
            properties={"program": "voiced"},
        )
        zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        try:
            await zc.async_register_service(info)
        except Exception as e:  # no multicast here: serve anyway, say why nobody will discover us
            log.warning("could not announce Wyoming on the LAN (%s); add it in Home Assistant by host and port", e)
            await zc.async_close()
            return False
        self._zc, self._info = zc, info
        log.info("announced Wyoming as %s on %s port %d", info.name, ", ".join(announcement.addresses), announcement.port)
        return True

    async def stop(self) -> None:
        zc, info, self._zc, self._info = self._zc, self._info, None, None
        if zc is not None:
            await zc.async_unregister_service(info)  # type: ignore[attr-defined]
            await zc.async_close()  # type: ignore[attr-defined]


async def announce(uri: str, port: int | None, enabled: bool) -> Announcer | None:
    """Announce the endpoint if `enabled` and it is bound beyond loopback; the Announcer to stop, or None."""
    if not enabled:
        return None
    found = plan(uri, port, socket.gethostname(), _host_ipv4s)
    if found is None:
        return None
    announcer = Announcer()
    return announcer if await announcer.start(found) else None
