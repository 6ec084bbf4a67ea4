"""Host limit checks on injected readings, and the batch specs of ``launch_many``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lxdlib import hostlimits
from lxdlib.errors import HostLimit, InvalidArgument
from lxdlib.hostlimits import KeyUse, Need, Readings
from lxdlib.launcher import make_specs

BASE = 1000000


def readings(**kw: object) -> Readings:
    values: dict[str, object] = dict(pty_nr=0, pty_max=4096, pty_reserve=1024, maxkeys=200,
                                     maxbytes=20000, key_users={}, bridge_ports={})
    values.update(kw)
    return Readings(**values)  # type: ignore[arg-type]


def test_key_users_parsed() -> None:
    text = ("    0:     9 8/8 3/1000000 40/25000000\n"
            "1000000:   150 150/150 150/200 13500/20000\n")
    users = hostlimits.read_key_users(text)
    assert users[0] == KeyUse(3, 1000000, 40, 25000000)
    assert users[BASE] == KeyUse(150, 200, 13500, 20000)


def test_nothing_to_say_when_everything_fits() -> None:
    need = Need(instances=100, bridge_ports={"br0": 100}, key_owners={BASE: 100})
    assert hostlimits.problems(need, readings(bridge_ports={"br0": 900})) == []


def test_full_bridge_refused_with_how_to_spread() -> None:
    need = Need(instances=10, bridge_ports={"br0": 10})
    with pytest.raises(HostLimit) as e:
        hostlimits.check(need, readings(bridge_ports={"br0": 1020}))
    assert e.value.limit == "bridge br0 ports"
    assert (e.value.value, e.value.in_use, e.value.needed) == (1023, 1020, 10)
    assert "several networks" in str(e.value) and "profile" in str(e.value)


def test_bridge_exactly_full_is_allowed() -> None:
    need = Need(instances=3, bridge_ports={"br0": 3})
    hostlimits.check(need, readings(bridge_ports={"br0": 1020}))


def test_ptys_counted_against_max_minus_reserve() -> None:
    need = Need(instances=100)
    hostlimits.check(need, readings(pty_nr=2972))  # 3072 usable by containers
    with pytest.raises(HostLimit) as e:
        hostlimits.check(need, readings(pty_nr=2973))
    assert e.value.limit == "kernel.pty.max"
    assert "sysctl -w kernel.pty.max=" in e.value.fix


def test_keyrings_of_the_shared_uid() -> None:
    users = {BASE: KeyUse(150, 200, 13500, 20000)}
    hostlimits.check(Need(instances=50, key_owners={BASE: 50}),
                     readings(key_users=users))
    with pytest.raises(HostLimit) as e:
        hostlimits.check(Need(instances=51, key_owners={BASE: 51}),
                         readings(key_users=users))
    assert e.value.limit == "kernel.keys.maxkeys"
    assert str(BASE) in e.value.fix and "kernel.keys.maxkeys=" in e.value.fix


def test_a_uid_without_keys_yet_gets_the_sysctl_default() -> None:
    with pytest.raises(HostLimit) as e:
        hostlimits.check(Need(instances=250, key_owners={BASE: 250}), readings())
    assert e.value.limit == "kernel.keys.maxkeys" and e.value.value == 200


def test_root_keys_use_root_quota_names() -> None:
    users = {0: KeyUse(10, 20, 0, 10**9)}
    with pytest.raises(HostLimit) as e:
        hostlimits.check(Need(instances=20, key_owners={0: 20}), readings(key_users=users))
    assert e.value.limit == "kernel.keys.root_maxkeys"


def test_bytes_quota_checked_too() -> None:
    users = {BASE: KeyUse(10, 100000, 19990, 20000)}
    with pytest.raises(HostLimit) as e:
        hostlimits.check(Need(instances=5, key_owners={BASE: 5}), readings(key_users=users))
    assert e.value.limit == "kernel.keys.maxbytes"


def test_every_limit_crossed_is_in_the_message() -> None:
    need = Need(instances=300, bridge_ports={"br0": 300}, key_owners={BASE: 300})
    with pytest.raises(HostLimit) as e:
        hostlimits.check(need, readings(bridge_ports={"br0": 800}, pty_nr=2900))
    assert e.value.limit == "bridge br0 ports"
    assert {o.limit for o in e.value.others} >= {"kernel.pty.max", "kernel.keys.maxkeys"}
    for name in ("br0", "kernel.pty.max", "kernel.keys.maxkeys"):
        assert name in str(e.value)


def test_need_from_expanded_instances() -> None:
    nic = {"type": "nic", "network": "lxdbr0", "name": "eth0"}
    parent = {"type": "nic", "nictype": "bridged", "parent": "br9", "name": "eth1"}
    disk = {"type": "disk", "path": "/", "pool": "default"}
    need = hostlimits.need_for([
        ({}, {"eth0": nic, "root": disk}),
        ({"security.privileged": "true"}, {"eth0": nic, "eth1": parent}),
        ({"security.idmap.isolated": "true"}, {}),
        ({"security.idmap.base": "2000000"}, {}),
        ({"raw.lxc": "lxc.keyring.session = 0\n"}, {}),
    ], BASE)
    assert need.instances == 5
    assert need.bridge_ports == {"lxdbr0": 2, "br9": 1}
    assert need.key_owners == {BASE: 1, 0: 1, 2000000: 1}


def test_bridge_ports_counted_from_brif(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    brif = tmp_path / "br0" / "brif"
    brif.mkdir(parents=True)
    for i in range(1000):
        (brif / f"veth{i}").touch()
    monkeypatch.setattr(hostlimits, "SYS_NET", tmp_path)
    t = time.perf_counter()
    assert hostlimits.bridge_port_count("br0") == 1000
    assert time.perf_counter() - t < 0.05  # one directory read, even at 1,000 ports
    assert hostlimits.bridge_port_count("absent") == 0


def test_advice_lists_only_settings_below_the_suggestion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"kernel/keys/maxkeys": 200, "kernel/keys/maxbytes": 10**9,
                       "kernel/pty/max": 4096, "fs/inotify/max_user_instances": 128,
                       "fs/inotify/max_user_watches": 10**9,
                       "net/ipv4/neigh/default/gc_thresh3": 10**6,
                       "kernel/pid_max": 4194304}.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(f"{value}\n")
    monkeypatch.setattr(hostlimits, "PROC_SYS", tmp_path)
    got = {a.sysctl: a for a in hostlimits.advice(1000)}
    assert set(got) == {"kernel.keys.maxkeys", "kernel.pty.max",
                        "fs.inotify.max_user_instances"}
    assert got["kernel.keys.maxkeys"].current == 200
    assert got["kernel.keys.maxkeys"].suggested >= 1050


def test_specs_from_a_count() -> None:
    specs = make_specs(3, image="busybox", prefix="web", profiles=None, config={"a": "1"},
                       devices=None, pool=None, ephemeral=False, description="", start=True)
    assert [s.name for s in specs] == ["web1", "web2", "web3"]
    assert all(s.config == {"a": "1"} and s.image == "busybox" for s in specs)


def test_specs_lay_their_settings_over_the_batch() -> None:
    specs = make_specs(
        ["a", {"name": "b", "config": {"k": "2"}, "devices": {"eth0": {"type": "none"}},
               "profiles": ["p"], "image": "other"}],
        image="busybox", prefix="c", profiles=["default"], config={"k": "1", "j": "1"},
        devices={"eth0": {"type": "nic", "network": "n"}}, pool="p1", ephemeral=True,
        description="d", start=False)
    a, b = specs
    assert (a.profiles, a.config, a.image, a.pool, a.start) == (
        ["default"], {"k": "1", "j": "1"}, "busybox", "p1", False)
    assert (b.profiles, b.config, b.devices, b.image) == (
        ["p"], {"k": "2", "j": "1"}, {"eth0": {"type": "none"}}, "other")


@pytest.mark.parametrize("items", ["abc", [{"config": {}}], [{"name": "a", "bogus": 1}], -1])
def test_bad_batches_refused(items: object) -> None:
    with pytest.raises(InvalidArgument):
        make_specs(items, image=None, prefix="c", profiles=None,  # type: ignore[arg-type]
                   config=None, devices=None, pool=None, ephemeral=False, description="",
                   start=True)


def test_worker_count_fits_the_batch() -> None:
    from lxdlib.launcher import worker_count
    assert worker_count(10, None, 2) == 1  # starting workers would cost more than it saves
    assert worker_count(20, None, 2) == 2
    assert worker_count(1000, None, 2) == 4
    assert worker_count(1000, 3, 2) == 3
    assert worker_count(2, 8, 2) == 2
    assert worker_count(5, 0, 2) == 1
