"""The address half of the SSRF policy, tested on the checker itself (no connection is ever made)."""

from __future__ import annotations

import ipaddress

import pytest

from vitserve.service.inputs.addresses import AddressRefused, check_address, embedded_ipv4, parse_ip_literal

REFUSED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1", "100.64.0.1", "100.100.100.200", "224.0.0.1", "239.255.255.250", "255.255.255.255",
    "240.0.0.1", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "192.0.0.8", "192.88.99.1",
    "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254",  # AWS's IPv6 metadata endpoint
    "ff02::1", "2001:db8::1", "fec0::1", "100::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "::127.0.0.1", "::10.0.0.1",  # IPv4-compatible
    "2002:7f00:1::", "2002:a9fe:a9fe::1",  # 6to4 around 127.0.0.1 and 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo (client 127.0.0.1)
    "2001::1",
]  # fmt: skip
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("text", REFUSED)
def test_refused(text: str) -> None:
    with pytest.raises(AddressRefused):
        check_address(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_pass(text: str) -> None:
    check_address(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"])
def test_loopback_switch_opens_loopback_only(text: str) -> None:
    check_address(ipaddress.ip_address(text), allow_loopback=True)


@pytest.mark.parametrize("text", ["10.0.0.1", "169.254.169.254", "fd00:ec2::254", "::ffff:192.168.0.1", "0.0.0.0"])
def test_loopback_switch_keeps_everything_else_refused(text: str) -> None:
    with pytest.raises(AddressRefused):
        check_address(ipaddress.ip_address(text), allow_loopback=True)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("2852039166", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("8.8.8.8.", "8.8.8.8"),
    ],
)
def test_odd_encodings_parse_like_the_c_resolver(host: str, expected: str) -> None:
    parsed = parse_ip_literal(host)
    assert parsed == ipaddress.ip_address(expected)
    if host not in ("8.8.8.8.",):
        with pytest.raises(AddressRefused):
            check_address(parsed)


@pytest.mark.parametrize("host", ["example.com", "images.test", "1.2.3.4.example", "0x7g.1", "localhost"])
def test_names_are_not_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


def test_numeric_nonsense_is_refused_rather_than_resolved() -> None:
    with pytest.raises(AddressRefused):
        parse_ip_literal("99999999999")


def test_embedded_ipv4_forms() -> None:
    v6 = ipaddress.IPv6Address
    assert embedded_ipv4(v6("::ffff:1.2.3.4")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("::1.2.3.4")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("2002:0102:0304::")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("64:ff9b::102:304")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("2606:4700::1")) is None
    assert embedded_ipv4(v6("::1")) is None
