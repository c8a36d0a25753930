"""The client's address: X-Forwarded-For is believed only as far as it was written by trusted proxies.

Walking the chain from the right (the entry our own peer wrote last), every address that is a trusted
proxy is skipped; the first one that is not is the client. With ``hops`` instead of CIDRs, exactly that
many proxies in front of us are trusted (Werkzeug's ProxyFix ``x_for=N``). A client talking to us directly
can write anything into the header: it is ignored, because its own address is not trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[Network], hops: int = 0) -> str:
    if not forwarded_for or (not trusted and hops <= 0):
        return peer
    chain = [part.strip() for part in forwarded_for.split(",") if part.strip()]
    if hops > 0:
        return chain[-hops] if len(chain) >= hops and _valid(chain[-hops]) else peer
    if not _in(peer, trusted):
        return peer
    for address in reversed(chain):
        if not _valid(address):
            break
        if not _in(address, trusted):
            return address
    # Every hop was trusted (or the chain is malformed): the last trusted address is the best we know.
    return peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def matches(address: str, networks: Sequence[Network]) -> bool:
    """True when ``address`` lies in one of ``networks`` (a malformed address matches nothing)."""
    return _in(address, networks)
