"""An instance on a managed bridge: DHCP lease, a static address, DNS name, reachability of the
gateway — all traffic stays on the bridge the test made."""

from __future__ import annotations

import secrets

import pytest

import lxdlib

pytestmark = pytest.mark.root


@pytest.fixture
def net(host: lxdlib.Host) -> str:
    name = f"lxt{secrets.token_hex(3)}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false"})
    p = host.profiles.get("default")
    host.update_profile("default", devices={**p.devices, "eth0": {
        "type": "nic", "name": "eth0", "network": name}})
    return name


def test_dhcp_address_and_gateway(host: lxdlib.Host, net: str) -> None:
    c = host.launch("busybox", "c1")
    assert c.wait_for(lambda: bool(c.addresses()), timeout=20), c.network_state()
    addr = c.addresses()[0]
    gw = host.networks.get(net)["config"]["ipv4.address"].split("/")[0]
    assert addr.rsplit(".", 1)[0] == gw.rsplit(".", 1)[0]
    assert c.exec(["ping", "-c", "1", "-W", "2", gw]).returncode == 0
    leases = host.networks.leases(net)
    assert any(le["address"] == addr for le in leases)
    info = c.info()
    assert info["network"]["eth0"]["counters"]["bytes_received"] > 0


def test_static_ipv4_address_honoured(host: lxdlib.Host, net: str) -> None:
    gw = host.networks.get(net)["config"]["ipv4.address"].split("/")[0]
    static = gw.rsplit(".", 1)[0] + ".77"
    c = host.launch("busybox", "c1", devices={"eth0": {"type": "nic", "name": "eth0",
                                                       "network": net, "ipv4.address": static}})
    assert c.wait_for(lambda: static in c.addresses(), timeout=20), c.addresses()
    with pytest.raises(lxdlib.InUse):
        host.networks.delete(net)
    c.delete(force=True)
    # the static entry is gone with the instance: another one may take the address
    c2 = host.launch("busybox", "c2", devices={"eth0": {"type": "nic", "name": "eth0",
                                                        "network": net, "ipv4.address": static}})
    assert c2.wait_for(lambda: static in c2.addresses(), timeout=20)
