"""Which IP addresses a URL input may reach: the address half of the SSRF policy.

Public unicast only. Refused: loopback, private (RFC 1918, fc00::/7), shared/CGNAT 100.64/10, link-local (which
holds the cloud metadata endpoints 169.254.169.254 and, via fc00::/7, fd00:ec2::254), multicast, unspecified,
reserved and documentation ranges, Azure's host endpoint 168.63.129.16, and IPv6 forms that smuggle an IPv4
address (IPv4-mapped, SIIT-translated ``::ffff:0:a.b.c.d``, IPv4-compatible, 6to4, NAT64, Teredo), whose
embedded IPv4 is checked by the same rules. Host strings are parsed the way the C resolver parses them, so
``2130706433``, ``0x7f.1`` and ``017700000001`` are all 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space / CGNAT (and Alibaba's metadata 100.100.100.200)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: AWS/GCP/Azure metadata at 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "168.63.129.16/32",  # Azure's host endpoint (wire server: DHCP, health probes, VM agent), a public address
    )
]
_V6_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) included
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local: AWS's IPv6 metadata endpoint fd00:ec2::254 is here
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
]
_V4_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_V6_LOOPBACK = ipaddress.ip_address("::1")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible ::a.b.c.d
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated ::ffff:0:a.b.c.d (RFC 7915 SIIT)
# What inet_aton accepts: 1-4 parts, each decimal, octal (leading 0) or hex (0x).
_INET_ATON = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}\.?$")


class AddressRefused(ValueError):
    """An address the URL policy refuses; the message says which rule."""


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes without DNS (IPv6, dotted quad, or inet_aton forms), else ``None``."""
    host = host.strip().strip("[]")
    if "%" in host:  # an IPv6 zone index: only meaningful for link-local addresses
        host = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            raise AddressRefused(f"{host!r} looks like a numeric address but is not a valid one") from None
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: mapped, translated (SIIT), compatible, 6to4, NAT64 or Teredo's
    client."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _SIIT or (ip in _COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def check_address(ip: IPAddress, *, allow_loopback: bool = False) -> None:
    """Raise ``AddressRefused`` unless a URL input may connect to ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise AddressRefused(f"{ip} has a zone index: link-scoped addresses are refused")
        if allow_loopback and ip == _V6_LOOPBACK:
            return
        inner = embedded_ipv4(ip)
        if inner is not None:
            try:
                check_address(inner, allow_loopback=allow_loopback)
            except AddressRefused as err:
                raise AddressRefused(f"{ip} embeds {inner}: {err}") from None
            if ip.teredo is not None:
                raise AddressRefused(f"{ip} is a Teredo tunnel address")
            return
        for net in _V6_BLOCKED:
            if ip in net:
                raise AddressRefused(f"{ip} is in the refused range {net}")
        if not ip.is_global:
            raise AddressRefused(f"{ip} is not a global unicast address")
        return
    if allow_loopback and ip in _V4_LOOPBACK:
        return
    for net4 in _V4_BLOCKED:
        if ip in net4:
            raise AddressRefused(f"{ip} is in the refused range {net4}")
    if not ip.is_global:
        raise AddressRefused(f"{ip} is not a global unicast address")
