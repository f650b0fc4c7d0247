"""Which addresses a webhook may be sent to when private ones are not allowed: only globally
routable ones. An IPv6 address that carries an IPv4 one (NAT64, 6to4, Teredo, IPv4-mapped or
-compatible) reaches that IPv4 address, so it is judged by it; Python's `is_global` alone
counts several of these (and multicast) as global."""

import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services (AWS's IPv6 one is in fd00::/8, the IPv4 one link-local): named so
# that no change to the rules below can let them through.
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"),
                      ipaddress.ip_address("fd00:ec2::254")})
# RFC 6052's well-known NAT64 prefix embeds the IPv4 address in the last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215's local-use NAT64 prefix: each network picks where in it the IPv4 address goes, so
# what it reaches cannot be told; it is never global.
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# IPv4-compatible addresses (`::a.b.c.d`, deprecated, still routed by some stacks).
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (none for a plain IPv6 address)."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)  # the relay server's and the client's
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def _plainly_global(address: IPAddress) -> bool:
    return address.is_global and not (
        address.is_multicast or address.is_private or address.is_reserved
        or address.is_loopback or address.is_link_local or address.is_unspecified
        or address in METADATA
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local))


def is_public(address: IPAddress) -> bool:
    """True if a webhook may go to `address` on a server that sends to public ones only."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL:
            return False
        carried = embedded_ipv4(address)
        if carried:
            return all(_plainly_global(v4) for v4 in carried)
    return _plainly_global(address)


def parse_address(text: str) -> IPAddress | None:
    """The address `text` is written as (an IPv6 zone `%eth0` dropped), or None for a name."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def refused_host(host: str) -> str | None:
    """Why a URL's host is refused before any lookup (`localhost`, a non-public literal
    address); None for a public address or a name, whose addresses are checked when looked
    up."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is a private address"
    address = parse_address(host)
    if address is not None and not is_public(address):
        return f"{host} is a private address"
    return None


def refused_addresses(host: str, addresses: Iterable[str]) -> str | None:
    """Why `host`, resolved to `addresses`, is refused: any one of them not public (a name
    with one private address among public ones could be made to reach it)."""
    for text in addresses:
        address = parse_address(text)
        if address is None or not is_public(address):
            return f"{host} resolves to a private address"
    return None


def lookup(host: str, port: int) -> list[str]:
    """What `host` resolves to, in the system resolver's order (blocking)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
