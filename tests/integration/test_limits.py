"""Every limit verified by behaviour from inside a real container (a busybox init does not mount
cgroups, so the container cannot just read its own limit files), at start and live."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

import lxdlib
from lxdlib import runtime
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons

__all__ = ["zfs_daemon", "zfs_daemons"]  # fixtures used by name

pytestmark = pytest.mark.root

CPUS = os.cpu_count() or 1


def cg(c: lxdlib.Instance, key: str) -> str | None:
    return runtime.cgroup_get(c.handle(), key)


def v1() -> bool:
    return runtime.cgroup_version() == 1


def test_cpu_count_pinning_and_live_change(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"limits.cpu": "1"})
    assert c.exec(["nproc"]).text.strip() == "1"
    if CPUS >= 2:
        c.set_config("limits.cpu", "0-1")
        assert c.exec(["nproc"]).text.strip() == "2"
        c.set_config("limits.cpu", "1-1")  # a range pins exactly
        assert c.exec(["nproc"]).text.strip() == "1"
        assert cg(c, "cpuset.cpus") == "1"
    c.unset_config("limits.cpu")
    assert c.exec(["nproc"]).text.strip() == str(CPUS)


def test_cpu_count_is_balanced_across_instances(host: lxdlib.Host) -> None:
    if CPUS < 2:
        pytest.skip("needs two CPUs")
    a = host.launch("busybox", "a", config={"limits.cpu": "1"})
    b = host.launch("busybox", "b", config={"limits.cpu": "1"})
    assert {cg(a, "cpuset.cpus"), cg(b, "cpuset.cpus")} == {"0", "1"}


def test_cpu_allowance_and_priority(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"limits.cpu.allowance": "25ms/100ms"})
    if v1():
        assert cg(c, "cpu.cfs_quota_us") == "25000" and cg(c, "cpu.cfs_period_us") == "100000"
    else:
        assert cg(c, "cpu.max") == "25000 100000"
    c.update(config={"limits.cpu.allowance": "50%", "limits.cpu.priority": "5"})
    if v1():
        assert cg(c, "cpu.shares") == str(1024 * 50 // 100 - 5)
        assert cg(c, "cpu.cfs_quota_us") == "-1"


def test_memory_limit_kills_past_it_and_soft_does_not(host: lxdlib.Host) -> None:
    hog = "x=$(head -c 120000000 /dev/zero | tr '\\0' a); echo survived"
    c = host.launch("busybox", "c1", config={"limits.memory": "48MiB"})
    r = c.exec(["sh", "-c", hog])
    assert r.returncode != 0 and b"survived" not in r.stdout
    key = "memory.limit_in_bytes" if v1() else "memory.max"
    assert cg(c, key) == str(48 << 20)
    c.set_config("limits.memory.enforce", "soft")  # live: only a soft limit remains
    assert cg(c, key) in ("9223372036854771712", "max")
    r = c.exec(["sh", "-c", hog])
    assert r.returncode == 0 and b"survived" in r.stdout


def test_memory_percentage(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"limits.memory": "10%"})
    total = host.facts().mem_total
    key = "memory.limit_in_bytes" if v1() else "memory.max"
    value = int(cg(c, key) or 0)
    assert abs(value - total // 10) <= 4096 * 2  # the kernel rounds to pages


def test_processes_limit_stops_fork_loop(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"limits.processes": "20"})
    r = c.exec(["sh", "-c", "for i in $(seq 40); do sleep 5 & done; wait; echo done"])
    assert b"can't fork" in r.stderr.lower() or b"resource temporarily" in r.stderr.lower(), r
    assert cg(c, "pids.max") == "20"
    c.set_config("limits.processes", "100")
    assert cg(c, "pids.max") == "100"
    c.exec(["sh", "-c", "pkill sleep; true"])


def test_kernel_limits_via_prlimit(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"limits.kernel.nofile": "1000:2000"})
    # prlimits apply to init and what it spawns; exec'd commands get init's limits via attach
    status = c.exec(["cat", "/proc/1/limits"]).text
    line = next(ln for ln in status.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["1000", "2000"]


def test_disk_priority_where_the_controller_exists(host: lxdlib.Host) -> None:
    weight_file = "/sys/fs/cgroup/blkio/blkio.weight" if v1() else None
    if v1() and not (weight_file and os.path.exists(weight_file)):
        with pytest.raises(lxdlib.LxdlibError, match=r"blkio|io"):
            host.launch("busybox", "c1", config={"limits.disk.priority": "7"})
        assert host.instances.names() in ([], ["c1"])
    else:
        c = host.launch("busybox", "c1", config={"limits.disk.priority": "7"})
        assert cg(c, "blkio.weight" if v1() else "io.weight") in ("700", "default 700")


def test_environment_reaches_init_and_exec(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"environment.GREETING": "hello world"})
    assert b"GREETING=hello world" in c.exec(["cat", "/proc/1/environ"]).stdout.replace(b"\0",
                                                                                          b"\n")
    assert c.exec(["sh", "-c", "echo $GREETING"]).text.strip() == "hello world"
    assert c.exec(["sh", "-c", "echo $GREETING"], env={"GREETING": "mine"}).text.strip() == "mine"
    c.set_config("environment.GREETING", "changed")  # exec sees it at once
    assert c.exec(["sh", "-c", "echo $GREETING"]).text.strip() == "changed"


def test_sysctl_and_image_properties(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"linux.sysctl.net.ipv4.ip_forward": "1"})
    assert c.exec(["cat", "/proc/sys/net/ipv4/ip_forward"]).text.strip() == "1"
    assert c.config["image.os"] == "busybox"


def test_root_disk_size_changed_live(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", devices={"root": {"type": "disk", "path": "/",
                                                      "pool": "default", "size": "200MiB"}})
    c.exec(["sh", "-c", "dd if=/dev/urandom of=/root/a bs=1M count=60 && sync"], check=True)
    devs = c.devices
    devs["root"]["size"] = "40MiB"
    c.update(devices=devs)
    r = c.exec(["sh", "-c", "dd if=/dev/urandom of=/root/b bs=1M count=60 && sync"])
    assert r.returncode != 0


def test_isolated_idmaps_do_not_overlap(host: lxdlib.Host) -> None:
    cfg = {"security.idmap.isolated": "true"}
    a = host.launch("busybox", "a", config=cfg)
    b = host.launch("busybox", "b", config=cfg)
    ma = a.exec(["cat", "/proc/self/uid_map"]).text.split()
    mb = b.exec(["cat", "/proc/self/uid_map"]).text.split()
    assert ma[2] == mb[2] == "65536"
    assert abs(int(ma[1]) - int(mb[1])) >= 65536
    with pytest.raises(lxdlib.LxdlibError, match="Not enough uid/gid"):
        host.create("busybox", "huge", config={**cfg, "security.idmap.size": "4000000000"})
    assert "huge" not in host.instances


def _uid_map(c: lxdlib.Instance) -> tuple[int, int]:
    _, host_id, size = c.exec(["cat", "/proc/self/uid_map"]).text.split()
    return int(host_id), int(size)


def test_idmap_keys_changed_after_creation_are_obeyed_at_the_next_start(
        host: lxdlib.Host) -> None:
    """``security.idmap.isolated`` set on an instance that has run (or on a profile it uses)
    gives it a block of its own at its next start, as LXD does; unset, it goes back to the
    shared range. Before, the key was kept and not obeyed: the instance shown isolated shared
    its map with every other. Its files stay its root's (the pool maps them: btrfs)."""
    shared = host.launch("busybox", "idmshared")
    base = _uid_map(shared)
    c = host.launch("busybox", "idmc1")
    c.exec(["sh", "-c", "echo x > /root/f; chown 1000:1000 /root/f"], check=True)
    assert _uid_map(c) == base
    c.set_config("security.idmap.isolated", "true")
    assert _uid_map(c) == base  # a running instance keeps its map until it restarts
    c.restart(force=True)
    isolated = _uid_map(c)
    assert isolated[1] == 65536 and isolated[0] != base[0]
    assert c.record().config["volatile.idmap.base"] == str(isolated[0])
    assert c.exec(["stat", "-c", "%u %g", "/root/f"]).text.split() == ["1000", "1000"]
    assert c.exec(["stat", "-c", "%u", "/root"]).text.strip() == "0"
    c.restart(force=True)
    assert _uid_map(c) == isolated  # chosen once, kept
    # through a profile: another instance gets a block of its own, not the same one
    host.profiles.create("iso", {"security.idmap.isolated": "true"})
    d = host.launch("busybox", "idmd1")
    d.stop(force=True)
    d.update(profiles=["default", "iso"])
    d.start()
    other = _uid_map(d)
    assert other[0] != base[0] and abs(other[0] - isolated[0]) >= 65536
    # unset: back on the shared range at the next start
    c.unset_config("security.idmap.isolated")
    c.restart(force=True)
    assert _uid_map(c) == base
    assert c.exec(["stat", "-c", "%u %g", "/root/f"]).text.split() == ["1000", "1000"]
    assert _uid_map(shared) == base


def test_idmap_keys_changed_on_a_pool_without_idmapped_mounts_refuse_the_start(
        host: lxdlib.Host, zfs_daemon: ZfsDaemons) -> None:
    """Where the files would have to be shifted (zfs-fuse: no idmapped mounts), a start that
    would change the map is refused with the ways out, and nothing changes: the record keeps
    its map, the files their owners; with the key set back it starts as before."""
    host.create_pool("zi", "zfs", {"size": "512MiB",
                                   "zfs.pool_name": f"lxzi{secrets.token_hex(3)}"})
    c = host.launch("busybox", "idmzc1", pool="zi")
    before = _uid_map(c)
    rec = c.record().config["volatile.idmap.base"]
    c.stop(force=True)
    c.set_config("security.idmap.isolated", "true")
    with pytest.raises(lxdlib.WrongState, match="copy the instance"):
        c.start()
    assert c.status == "Stopped" and c.record().config["volatile.idmap.base"] == rec
    c.unset_config("security.idmap.isolated")
    c.start()
    assert _uid_map(c) == before
    assert c.exec(["stat", "-c", "%u", "/root"]).text.strip() == "0"


def test_raw_lxc_refused_keys(host: lxdlib.Host) -> None:
    for raw in ("lxc.prlimit.nofile=10", "lxc.log.file=/tmp/x", "lxc.ephemeral=1",
                "lxc.notakey=1", "no equals sign"):
        with pytest.raises(lxdlib.InvalidConfig):
            host.create("busybox", "c1", config={"raw.lxc": raw})
    c = host.launch("busybox", "c1", config={"raw.lxc": "lxc.environment = FROM_RAW=yes\n"})
    assert b"FROM_RAW=yes" in c.exec(["cat", "/proc/1/environ"]).stdout


def test_usage_is_read_from_the_cgroup_files_liblxc_reads(
        host: lxdlib.Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """``info`` and ``usage()`` read the counters from the payload cgroup's files that
    ``/proc/<init>/cgroup`` shows: the figures liblxc gives (asking the monitor per file)."""
    from lxdlib.instance import cgroup_usage
    c = host.launch("busybox", "c1")
    two_sleeps = "for i in 1 2; do setsid sleep 60 </dev/null >/dev/null 2>&1 & done"
    c.exec(["sh", "-c", two_sleeps]).check()
    handle = c.handle()
    pid = handle.init_pid
    by_liblxc = cgroup_usage(c.name, -1, lambda: handle)
    asked: list[str] = []
    real_get = runtime.cgroup_get

    def counted(h: runtime.Container, key: str) -> str | None:
        asked.append(key)
        return real_get(h, key)
    monkeypatch.setattr(runtime, "cgroup_get", counted)
    by_files = cgroup_usage(c.name, pid, lambda: handle)
    assert asked == []  # every counter came from a file (or is not kept by this kernel)
    assert by_files["processes"] == by_liblxc["processes"] == 3
    assert set(by_files) == set(by_liblxc)
    for key in ("memory_usage", "memory_usage_peak", "cpu_usage_ns"):
        assert (by_files[key] is None) == (by_liblxc[key] is None), key
    assert by_files["memory_usage"] > 0 and by_files["cpu_usage_ns"] > 0
    # the instance's API and info agree, with no liblxc round trip for the counters
    assert c.usage()["processes"] == 3 and c.info()["resources"]["processes"] == 3
    assert asked == []
    # with the pid a listing knows, liblxc is not even opened (no round trip for the pid)
    opened: list[str] = []
    real_open = runtime.open_container

    def counted_open(lxcpath: Path, name: str) -> runtime.Container:
        opened.append(name)
        return real_open(lxcpath, name)
    monkeypatch.setattr(runtime, "open_container", counted_open)
    again = c.usage(pid=pid)
    assert again["processes"] == 3 and set(again) == set(by_files)
    assert opened == [] and asked == []
    monkeypatch.setattr(runtime, "open_container", real_open)
    # a pid that is not this container's init: no file is trusted, liblxc answers
    assert cgroup_usage(c.name, os.getpid(), lambda: handle)["processes"] == 3
    assert asked
    c.exec(["sh", "-c", "pkill sleep; true"])
