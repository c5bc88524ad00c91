"""A signed POST to a checked address: what job callbacks and the supervisor's webhook
action send.

The host is resolved here, every address it resolves to checked against the allow-list
(`shared/callback_hosts.py`: loopback, private, link-local and other non-public
addresses only for a host the list names exactly), and the request built for the checked
address with the URL's Host header (and its host name for TLS SNI and certificate
checks), so DNS that changes after the check cannot send it elsewhere. The body is signed
with `shared/webhooks.py` (HMAC-SHA256 of `timestamp.body`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import httpx

from fleetline.shared.callback_hosts import (
    Allowance,
    CallbackTarget,
    IPAddress,
    address_problem,
    allowance,
)
from fleetline.shared.webhooks import signed_headers

USER_AGENT = "fleetline-webhook/1"

Resolver = Callable[[str, int], list[IPAddress]]


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found


class CallbackRefused(Exception):
    """The callback may not be sent; retrying cannot change that."""


def checked_address(target: CallbackTarget, entries: list[str], resolver: Resolver) -> IPAddress:
    """The address to send `target`'s request to, every address of its host checked.

    Raises CallbackRefused when a host that only a pattern allows resolves to an address
    that is not public, OSError when it does not resolve.
    """
    literal = target.literal
    addresses = [literal] if literal is not None else resolver(target.host, target.port)
    if not addresses:
        raise OSError(f"{target.host} resolves to no address")
    if allowance(entries, target) is not Allowance.NAMED:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise CallbackRefused(
                    f"{target.host} resolves to {problem}, reached only when the "
                    "allow-list names the host exactly"
                )
    return addresses[0]


def signed_request(
    http: httpx.Client,
    target: CallbackTarget,
    address: IPAddress,
    body: bytes,
    secret: str,
    extra_headers: dict[str, str],
) -> httpx.Request:
    """The POST of `body` to `address`, signed, as if sent to the URL's host."""
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **extra_headers,
        **signed_headers(secret, body),
    }
    # TLS checks the certificate against the URL's host, not the address connected to.
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return http.build_request(
        "POST", target.url_for(address), content=body, headers=headers, extensions=extensions
    )
