"""The guard of every outbound connection (SMTP, attachments, callbacks): resolve once, check, connect there.

A tenant chooses SMTP hosts, attachment URLs and callback URLs. Without this guard they reach what the
service's own addresses reach: the Lambda runtime API on 127.0.0.1:9001, the instance metadata on
169.254.169.254, a VPC's private hosts (and SMTP errors recorded in `GET /messages` turn it into a port
scanner). The name is resolved once, every address it resolves to is checked, and the socket connects to
a checked address: a second resolution (DNS rebinding) never happens. TLS keeps the original name for
SNI and certificate verification; HTTP keeps it in the Host header.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from mailproxy.errors import DestinationNotAllowed
from mailproxy.settings import Network, get_outbound_settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[int, int, int, str, Any]  # socket.getaddrinfo's entries

ALLOW_HINT = "set GMP_ALLOWED_NETWORKS to allow it"


def _nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


@functools.cache
def rules() -> tuple[tuple[str, tuple[Network, ...]], ...]:
    """The refusal rules, checked in order (the first that contains an address names it); made on first
    use, not at import: the sender imports this module at every cold start."""
    return (
        ("loopback", _nets("127.0.0.0/8", "::1/128")),
        ("unspecified address", _nets("0.0.0.0/8", "::/128")),
        ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
        ("private network", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
        ("carrier-grade NAT", _nets("100.64.0.0/10")),
        ("unique local address", _nets("fc00::/7", "fec0::/10")),
        ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
        (
            "reserved address",
            _nets(
                "192.0.0.0/24",
                "192.0.2.0/24",
                "198.18.0.0/15",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "240.0.0.0/4",  # broadcast included
                "64:ff9b:1::/48",
                "100::/64",
                "2001::/23",  # Teredo and other IETF assignments
                "2001:db8::/32",
            ),
        ),
    )


_NAT64 = "64:ff9b::/96"
_IPV4_COMPATIBLE = "::/96"
_network = functools.cache(ipaddress.ip_network)  # parsed once, on first use


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, compatible, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _network(_NAT64) or (address in _network(_IPV4_COMPATIBLE) and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address, allowed: Iterable[Network] = ()) -> str | None:
    """The rule that refuses `address` (e.g. "private network"), or None when it may be reached."""
    inner = embedded_ipv4(address)
    candidates = [address] if inner is None else [address, inner]
    allowed = tuple(allowed)
    if any(
        candidate in network for candidate in candidates for network in allowed if network.version == candidate.version
    ):
        return None
    for candidate in reversed(candidates):  # the embedded IPv4 address names the rule when there is one
        for rule, networks in rules():
            if any(candidate in network for network in networks if network.version == candidate.version):
                return rule
    if not address.is_global or (inner is not None and not inner.is_global):
        return "reserved address"
    return None


def _address(sockaddr: Any) -> Address:
    return ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])


def check(infos: Sequence[AddrInfo]) -> None:
    """DestinationNotAllowed naming the first rule an address of `infos` breaks.

    Every address must pass, not one: the connection may go to any of them.
    """
    allowed = get_outbound_settings().allowed_networks
    for info in infos:
        rule = refusal(_address(info[4]), allowed)
        if rule is not None:
            raise DestinationNotAllowed(f"destination not allowed: {rule} ({ALLOW_HINT})")


def resolve(host: str, port: int) -> Sequence[AddrInfo]:
    """The checked TCP addresses of `host` (one resolution)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    check(infos)
    return infos


def connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP socket connected to a checked address of `host` (as socket.create_connection, guarded)."""
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in resolve(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"no address for {host}")


async def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A non-blocking TCP socket connected to a checked address of `host`, for asyncio clients."""
    import asyncio  # here: the reporter, which imports this module, runs no event loop

    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), timeout
    )
    check(infos)
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            error = exc if isinstance(exc, OSError) else TimeoutError(f"timed out connecting to {host}:{port}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error or OSError(f"no address for {host}")
