"""Where a job's `callback_url` may point: the URL's shape, the tenant's allow-list, and
the addresses a callback may never reach unless its host is named exactly.

A callback runs inside the fleet's network, next to Redis and a cloud metadata service,
so the address is what counts, not the name: the host is resolved at delivery, every
address it resolves to is checked, and the request goes to the checked address.

Allow-list entries (FLEETLINE_API_CALLBACK_HOSTS):

    hooks.acme.com         that host, any port
    hooks.acme.com:8443    that host on that port
    10.0.0.5, [fd00::5]:80 an address (IPv6 in brackets when a port follows)
    *.acme.com             any host under acme.com (not acme.com itself), any port
    *.acme.com:443         ... on that port
    *                      any host

A pattern (`*`, `*.x`) reaches public addresses only; a loopback, private, link-local,
multicast, reserved or unspecified address is reached only through an entry that names
the URL's host exactly.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class CallbackTarget:
    """A callback URL taken apart: its host lowercased, its port filled in."""

    scheme: str
    host: str
    port: int
    # The path and query sent (`/` when the URL has no path).
    target: str

    @property
    def host_header(self) -> str:
        """The Host header: the URL's host, with its port when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with `address` in place of the host (the request goes there)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.target}"

    @property
    def literal(self) -> IPAddress | None:
        """The host as an address, when the URL names one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_callback_url(url: str) -> CallbackTarget:
    """The target of a callback URL; ValueError saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("must be ASCII without spaces (write a host in its xn-- form)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = _host(parts.hostname or "")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CallbackTarget(scheme, host, port or _DEFAULT_PORTS[scheme], target)


def _host(raw: str) -> str:
    host = raw.lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise ValueError(f"has an invalid host {raw!r}")
    return host


@dataclass(frozen=True)
class HostPattern:
    """One allow-list entry: a host (or `*.suffix`, or `*`) and maybe a port."""

    host: str
    port: int | None
    wildcard: bool

    def matches(self, target: CallbackTarget) -> bool:
        if self.port is not None and self.port != target.port:
            return False
        if not self.wildcard:
            return self.host == target.host
        return self.host == "" or target.host.endswith(f".{self.host}")


def parse_pattern(entry: str) -> HostPattern:
    """One allow-list entry; ValueError saying what is wrong with it."""
    text = entry.strip().lower()
    port: int | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or ":" not in host:
            raise ValueError(f"callback host {entry!r}: brackets hold an IPv6 address")
        if rest:
            port = _port(rest.removeprefix(":") if rest.startswith(":") else "", entry)
    elif text.count(":") == 1:
        host, _, given = text.partition(":")
        port = _port(given, entry)
    else:
        host = text
    if host == "*":
        return HostPattern("", port, wildcard=True)
    wildcard = host.startswith("*.")
    try:
        host = _host(host.removeprefix("*.") if wildcard else host)
    except ValueError:
        raise ValueError(f"callback host {entry!r} is not a host, host:port or *.domain") from None
    return HostPattern(host, port, wildcard)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"callback host {entry!r} has an invalid port")
    return int(text)


class Allowance(Enum):
    """How far an allow-list lets a callback go."""

    REFUSED = "refused"
    # Matched by a pattern only: public addresses.
    PUBLIC = "public"
    # The host is named exactly: any address it resolves to.
    NAMED = "named"


def allowance(entries: Sequence[str], target: CallbackTarget) -> Allowance:
    """What the allow-list `entries` allow `target`."""
    found = Allowance.REFUSED
    for pattern in map(parse_pattern, entries):
        if pattern.matches(target):
            if not pattern.wildcard:
                return Allowance.NAMED
            found = Allowance.PUBLIC
    return found


def address_problem(address: IPAddress) -> str | None:
    """Why a callback may not reach `address` unless its host is named exactly (None: it
    is a public address). An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4,
    Teredo) is judged by the IPv4 address too."""
    carried: list[IPAddress] = []
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            carried.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            carried.append(address.sixtofour)
        if address.teredo is not None:
            carried.extend(address.teredo)
        if address in _NAT64:
            carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    for ip in [*carried, address]:
        where = "" if ip is address else f" (in {address})"
        for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
            if getattr(ip, f"is_{name}"):
                return f"{name.replace('_', '-')} address {ip}{where}"
        if not ip.is_global:
            return f"non-public address {ip}{where}"
    return None


def host_refusal(entries: Sequence[str], target: CallbackTarget) -> str | None:
    """Why the allow-list `entries` refuse `target` before its host is resolved (None:
    allowed so far; a host's addresses are checked at delivery)."""
    allowed = allowance(entries, target)
    if allowed is Allowance.REFUSED:
        return f"host {target.host_header} is not on the tenant's callback allow-list"
    literal = target.literal
    if allowed is Allowance.PUBLIC and literal is not None:
        problem = address_problem(literal)
        if problem is not None:
            return f"{problem} is reached only when the allow-list names it exactly"
    return None
