"""SSRF corners of the address policy: SIIT, Azure's host endpoint, and IPv4 inside every IPv6 embedding."""

from __future__ import annotations

import ipaddress

import pytest

from vitserve.service.inputs.addresses import AddressRefused, check_address, embedded_ipv4


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:0:7f00:1",  # SIIT-translated 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # SIIT-translated 169.254.169.254
        "::ffff:0:a00:1",  # SIIT-translated 10.0.0.1
        "168.63.129.16",  # Azure's host endpoint (a public address)
        "::ffff:a83f:8110",  # ... mapped
        "::ffff:0:a83f:8110",  # ... translated
        "64:ff9b::a83f:8110",  # ... through NAT64
        "2002:a83f:8110::1",  # ... as 6to4
        "64:ff9b::a9fe:a9fe",  # NAT64 metadata
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
        "2002:a9fe:a9fe::1",  # 6to4 metadata
        "2001:0:4136:e378:8000:63bf:5601:fefe",  # Teredo (client 169.254.1.1 obfuscated): refused as Teredo
    ],
)
def test_refused(address: str) -> None:
    with pytest.raises(AddressRefused):
        check_address(ipaddress.ip_address(address))


def test_siit_is_unwrapped() -> None:
    inner = embedded_ipv4(ipaddress.IPv6Address("::ffff:0:7f00:1"))
    assert inner == ipaddress.IPv4Address("127.0.0.1")


def test_public_addresses_still_pass() -> None:
    for address in ("93.184.216.34", "::ffff:0:5db8:d822", "64:ff9b::5db8:d822", "2606:2800:220:1::1"):
        check_address(ipaddress.ip_address(address))
