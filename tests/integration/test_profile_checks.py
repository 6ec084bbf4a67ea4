"""What a profile edit checks before it writes anything: every device of every user is
rendered, so one device that cannot be rendered now (a missing disk source, which LXD saves
anyway) hides no other's invalid value; a device already in the profile that turned invalid
keeps no other device from being removed; and a refused edit leaves no intent behind."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest

import lxdlib
from lxdlib import journal
from lxdlib.errors import InvalidArgument, InvalidConfig, ProfileApplyError

pytestmark = pytest.mark.root

MISSING = {"type": "disk", "source": "/var/tmp/lxdlib-no-such-source", "path": "/mnt"}


@pytest.fixture
def user(host: lxdlib.Host) -> Iterator[tuple[str, str]]:
    """Profile ``pc`` and its user ``pc1``, made while the profile had a nic ``e0`` on a
    bridge of its own (so the instance keeps e0's MAC, and an address of e0 is checked
    against the network), e0 then removed; yields (network, its gateway address)."""
    net = f"lxt{secrets.token_hex(3)}"
    host.networks.create(net, {"ipv4.address": "auto", "ipv4.nat": "false"})
    gw = host.networks.get(net)["config"]["ipv4.address"].split("/")[0]
    host.profiles.create("pc", devices={"e0": {"type": "nic", "network": net}})
    host.create("busybox", "pc1", profiles=["default", "pc"])
    host.modify_profile("pc", lambda p: p.devices.pop("e0"))
    try:
        yield net, gw
    finally:
        host.instances["pc1"].delete(force=True)
        host.profiles.delete("pc")
        host.networks.delete(net)


def _add(name: str, dev: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda p: p.devices.__setitem__(name, dict(dev))


def test_a_device_that_cannot_render_hides_no_invalid_value(
        host: lxdlib.Host, user: tuple[str, str]) -> None:
    net, gw = user
    gateway_nic = {"type": "nic", "network": net, "ipv4.address": gw}
    with pytest.raises(InvalidConfig):  # alone: refused
        host.modify_profile("pc", _add("e0", gateway_nic))
    with pytest.raises(ProfileApplyError):  # saved, as LXD does, the user reported
        host.modify_profile("pc", _add("d1", MISSING))
    with pytest.raises(InvalidConfig, match="gateway"):  # beside d1: refused all the same
        host.modify_profile("pc", _add("e0", gateway_nic))
    assert set(host.profiles["pc"].devices) == {"d1"}
    assert not journal.pending(host.paths, "pc1")


def test_a_device_can_be_removed_beside_one_that_turned_invalid(
        host: lxdlib.Host, user: tuple[str, str]) -> None:
    net, gw = user
    # as a profile saved before its nic's address became invalid (or by an older lxdlib)
    host.ctx.profiles.save("pc", {}, {"d1": MISSING, "e0": {
        "type": "nic", "network": net, "ipv4.address": gw}}, "")
    with pytest.raises(ProfileApplyError):  # saved; e0 is still reported against pc1
        host.modify_profile("pc", lambda p: p.devices.pop("d1"))
    assert set(host.profiles["pc"].devices) == {"e0"}
    host.modify_profile("pc", lambda p: p.devices.pop("e0"))
    assert host.profiles["pc"].devices == {}
    assert not journal.pending(host.paths, "pc1")


def test_a_refused_edit_leaves_no_intent(host: lxdlib.Host, user: tuple[str, str],
                                         caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ProfileApplyError):
        host.modify_profile("pc", _add("d1", MISSING))
    bad = {"type": "disk", "source": "/var/tmp", "path": "/mnt/../x"}
    with pytest.raises(InvalidConfig):
        host.modify_profile("pc", _add("d2", bad))
    with pytest.raises(InvalidArgument):  # as a create refuses it
        host.profiles.update("pc", description="a\rb")
    assert not journal.pending(host.paths, "pc1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lxdlib"):
        fresh = lxdlib.Host(host.paths.root)
        fresh.instances["pc1"].config  # noqa: B018 — a later command on the user
        fresh.modify_profile("pc", lambda p: p.devices.pop("d1"))
    assert "recovery" not in caplog.text
    assert host.profiles["pc"].devices == {}


def test_a_disk_on_a_pool_that_does_not_exist_is_refused(host: lxdlib.Host) -> None:
    """LXD refuses a profile disk whose pool does not exist; lxdlib saved it, and every
    instance that took the profile failed at its create. Refused on create, device add,
    edit (whole update) and preseed, with the profile as it was; a real pool is taken."""
    import subprocess
    import sys

    from lxdlib import preseed
    from lxdlib.errors import NotFound
    bad = {"type": "disk", "pool": "nope", "path": "/x", "source": "v"}
    with pytest.raises(NotFound, match="nope"):
        host.profiles.create("pn", devices={"d": bad})
    assert "pn" not in host.profiles
    host.profiles.create("pn", {"user.k": "1"})
    try:
        with pytest.raises(NotFound, match="nope"):
            host.modify_profile("pn", _add("d", bad))
        with pytest.raises(NotFound, match="nope"):
            host.profiles.update("pn", config={}, devices={"d": bad})
        with pytest.raises(NotFound, match="nope"):
            host.profiles["pn"].update(devices={"root": {"type": "disk", "path": "/",
                                                         "pool": "nope"}})
        r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                            str(host.paths.root), "profile", "device", "add", "pn", "d",
                            "disk", "pool=nope", "path=/x", "source=v"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "not found" in r.stderr.lower(), r.stderr
        with pytest.raises(NotFound, match="nope"):
            preseed.apply(host.ctx, {"profiles": [{"name": "pn2", "devices": {"d": bad}}]})
        assert "pn2" not in host.profiles
        p = host.profiles["pn"]
        assert (p.config, p.devices) == ({"user.k": "1"}, {})
        good = {**bad, "pool": host.profiles["default"].devices["root"]["pool"]}
        host.modify_profile("pn", _add("d", good))
        assert host.profiles["pn"].devices == {"d": good}
        # and the pool cannot go from under it (only a root disk kept a pool before)
        host.create_pool("pn-extra", "dir")
        host.modify_profile("pn", _add("d", {**bad, "pool": "pn-extra"}))
        with pytest.raises(lxdlib.InUse, match="profile 'pn'"):
            host.delete_pool("pn-extra")
        host.modify_profile("pn", lambda p: p.devices.pop("d"))
        host.delete_pool("pn-extra")
    finally:
        host.profiles.delete("pn")
