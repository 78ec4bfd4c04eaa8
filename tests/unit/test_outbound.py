"""The outbound guard's rules: which addresses are refused, under which name, and what the allow-list opens."""

from __future__ import annotations

import ipaddress

import pytest
from mailproxy.outbound import embedded_ipv4, refusal


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private network"),
        ("172.16.0.1", "private network"),
        ("172.31.255.254", "private network"),
        ("192.168.1.1", "private network"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fd00::1", "unique local address"),
        ("fc00::1", "unique local address"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved address"),
        ("240.0.0.1", "reserved address"),
        ("192.0.2.1", "reserved address"),
        ("198.18.0.1", "reserved address"),
        ("2001:db8::1", "reserved address"),
        # IPv6 forms of internal IPv4 addresses are refused as what they stand for.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private network"),
        ("::10.0.0.1", "private network"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::1", "loopback"),
    ],
)
def test_internal_addresses_are_refused_by_name(address: str, rule: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == rule


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_only_its_networks() -> None:
    allowed = [ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("127.0.0.0/8")]

    assert refusal(ipaddress.ip_address("10.1.2.3"), allowed) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.2.0.1"), allowed) == "private network"
    assert refusal(ipaddress.ip_address("::1"), allowed) == "loopback"


def test_embedded_ipv4_forms_are_unwrapped() -> None:
    assert embedded_ipv4(ipaddress.ip_address("::ffff:1.2.3.4")) == ipaddress.ip_address("1.2.3.4")
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::102:304")) == ipaddress.ip_address("1.2.3.4")
    assert embedded_ipv4(ipaddress.ip_address("2002:102:304::")) == ipaddress.ip_address("1.2.3.4")
    assert embedded_ipv4(ipaddress.ip_address("::1")) is None
    assert embedded_ipv4(ipaddress.ip_address("1.2.3.4")) is None
