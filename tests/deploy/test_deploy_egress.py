"""The serving pods' egress NetworkPolicy: DNS and public web addresses only, in every serving build."""

from __future__ import annotations

import ipaddress

import pytest

from tests.deploy.k8s_objects import Manifest, find

SERVING_BUILDS = ("base", "overlays/cpu", "overlays/ascend")
# What a URL input must never reach from a pod, whatever the app's own check says.
REFUSED = ("169.254.169.254", "168.63.129.16", "10.1.2.3", "172.20.0.1", "192.168.1.1", "127.0.0.1", "100.100.100.200")
REFUSED_V6 = ("fd00:ec2::254", "::1", "fe80::1")
PUBLIC = ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")


def allowed(policy: Manifest, address: str, port: int) -> bool:
    """Whether some egress rule's ipBlock admits ``address`` on TCP ``port``."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}
        if ports and ("TCP", port) not in ports:
            continue
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if block is None:
                continue
            net = ipaddress.ip_network(block["cidr"])
            excepted = any(ip in ipaddress.ip_network(e) for e in block.get("except", []) if ip.version == net.version)
            if ip.version == net.version and ip in net and not excepted:
                return True
    return False


@pytest.mark.parametrize("build", SERVING_BUILDS)
def test_serving_pods_reach_public_web_addresses_only(rendered: dict[str, list[Manifest]], build: str) -> None:
    objects = rendered[build]
    policy = find(objects, "NetworkPolicy", "vitserve-egress")
    deployment = find(objects, "Deployment", "vitserve")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items(), "the policy must select the serving pods"
    assert "Egress" in policy["spec"]["policyTypes"]
    for address in (*REFUSED, *REFUSED_V6):
        for port in (80, 443):
            assert not allowed(policy, address, port), f"{build}: egress to {address}:{port} is allowed"
    for address in PUBLIC:
        assert allowed(policy, address, 443), f"{build}: egress to {address}:443 is refused"
    assert not allowed(policy, PUBLIC[0], 22), "only the web ports"
