"""Instances against real liblxc: lifecycle, exec exit codes, unprivileged maps, quotas, refusal of
bad input, and crash/concurrency safety of create and delete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lxdlib
from lxdlib import record

pytestmark = pytest.mark.root


def test_launch_exec_and_state(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    assert c.state == "RUNNING"
    assert c.status == "Running"
    r = c.exec(["sh", "-c", "echo out; echo err >&2; hostname"])
    assert r.returncode == 0
    assert r.stdout.decode().split() == ["out", "c1"]
    assert r.stderr == b"err\n"
    assert c.exec("cat", input=b"piped").stdout == b"piped"
    env = c.exec(["env"], env={"FOO": "bar"}).text
    assert "FOO=bar" in env and "HOME=/root" in env and "LANG=C.UTF-8" in env
    assert c.exec(["pwd"]).text.strip() == "/root"
    assert c.exec(["pwd"], cwd="/tmp").text.strip() == "/tmp"
    assert c.exec(["id", "-u"], user=1000, group=1000).text.strip() == "1000"
    assert "c1" in host.instances
    assert [i.name for i in host.instances] == ["c1"]


@pytest.mark.parametrize(("command", "code"), [
    (["true"], 0),
    (["false"], 1),
    (["sh", "-c", "exit 3"], 3),
    (["no-such-command"], 127),
    (["/etc/passwd"], 126),
    (["sh", "-c", "kill -TERM $$"], 143),
    (["sh", "-c", "kill -HUP $$"], 129),
    (["sh", "-c", "kill -KILL $$"], 137),
])
def test_exec_exit_codes(host: lxdlib.Host, command: list[str], code: int) -> None:
    c = host.instances["c1"] if "c1" in host.instances else host.launch("busybox", "c1")
    assert c.exec(command).returncode == code


def test_exec_gives_the_command_no_ignored_signal(host: lxdlib.Host) -> None:
    """Python ignores SIGPIPE and SIGXFSZ, a caller under ``nohup`` SIGHUP, and an ignored
    signal stays ignored across ``exec``: the command starts with every signal at its
    default, as one LXD's daemon starts (``yes | head -1`` ends quietly; a HUP ends it)."""
    import signal
    c = host.launch("busybox", "c1")
    before = signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        status = c.exec(["cat", "/proc/self/status"]).stdout.decode()
        ignored = int(next(line for line in status.splitlines()
                           if line.startswith("SigIgn:")).split()[1], 16)
        # the three this process ignores now (what else the test runner's own parent made it
        # ignore is not this test's to know)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP):
            assert not ignored & (1 << (sig - 1)), (sig, hex(ignored))
        assert c.exec(["sh", "-c", "kill -HUP $$"]).returncode == 129
        piped = c.exec(["sh", "-c", "yes | head -1"])
        assert (piped.returncode, piped.stdout, piped.stderr) == (0, b"y\n", b"")
    finally:
        signal.signal(signal.SIGHUP, before)
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # the caller's own, put back


def test_exec_check_and_timeout(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    with pytest.raises(lxdlib.ExecError, match="status 2") as err:
        c.exec(["sh", "-c", "echo bad >&2; exit 2"], check=True)
    assert "'c1'" in str(err.value) and "exit 2" in str(err.value)
    assert err.value.result.returncode == 2 and err.value.result.stderr == b"bad\n"
    with pytest.raises(lxdlib.Timeout):
        c.exec(["sleep", "30"], timeout=0.5)
    chunks: list[bytes] = []
    r = c.exec(["sh", "-c", "for i in 1 2 3; do echo $i; done"], stdout=chunks.append)
    assert r.returncode == 0 and b"".join(chunks) == b"1\n2\n3\n" and r.stdout == b""


def test_stop_start_restart_pause(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    with pytest.raises(lxdlib.WrongState, match="already running"):
        c.start()
    c.stop(force=True)
    assert c.state == "STOPPED"
    with pytest.raises(lxdlib.WrongState, match="already stopped"):
        c.stop()
    with pytest.raises(lxdlib.WrongState):
        c.exec(["true"])
    c.start()
    pid1 = c.pid
    c.restart(force=True)
    assert c.state == "RUNNING" and c.pid != pid1
    c.pause()
    assert c.state == "FROZEN"
    with pytest.raises(lxdlib.WrongState, match="frozen"):
        c.exec(["true"])
    c.start()  # start resumes a frozen instance, as LXD does
    assert c.state == "RUNNING"
    assert c.exec(["true"]).returncode == 0
    c.stop(timeout=30)  # graceful: busybox init halts on SIGPWR
    assert c.state == "STOPPED"


def test_delete_refuses_running_without_force(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    vol = c.volume
    with pytest.raises(lxdlib.WrongState, match="running"):
        c.delete()
    assert c.state == "RUNNING" and "c1" in host.instances
    c.delete(force=True)
    assert "c1" not in host.instances
    assert not vol.exists()
    assert not host.paths.instance_dir("c1").exists()
    with pytest.raises(lxdlib.NotFound):
        host.instances["c1"]


def test_unprivileged_idmap_seen_from_inside(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    alloc = host.facts().idmap
    uid_map = c.exec(["cat", "/proc/self/uid_map"]).text.split()
    assert uid_map == ["0", str(alloc.base), str(alloc.size)]
    status = Path(f"/proc/{c.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(alloc.base)  # init runs as an unprivileged host uid
    # idmapped rootfs: a file root makes inside is owned by 0 on disk (no chown pass needed)
    c.exec(["touch", "/root/made-inside"], check=True)
    st = os.stat(c.volume / "rootfs" / "root" / "made-inside")
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert "Seccomp:\t2" in c.exec(["cat", "/proc/self/status"]).text


def test_privileged_opt_out(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"security.privileged": "true"})
    assert c.exec(["cat", "/proc/self/uid_map"]).text.split() == ["0", "0", "4294967295"]


def test_root_disk_quota_hit_inside(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", devices={"root": {"type": "disk", "path": "/",
                                                      "pool": "default", "size": "40MiB"}})
    r = c.exec(["sh", "-c", "dd if=/dev/urandom of=/root/big bs=1M count=80 && sync"])
    assert r.returncode != 0
    assert b"quota" in r.stderr.lower() or b"space" in r.stderr.lower()
    # the pool itself and the instance stay usable once the file is gone
    c.exec(["rm", "-f", "/root/big"], check=True)
    c.exec(["sh", "-c", "echo ok > /root/small && sync"], check=True)
    other = host.launch("busybox", "c2")
    other.exec(["sh", "-c", "dd if=/dev/zero of=/root/f bs=1M count=60 && sync"], check=True)


def test_live_memory_limit(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    c.set_config("limits.memory", "64MiB")
    from lxdlib import runtime
    key = "memory.max" if runtime.cgroup_version() == 2 else "memory.limit_in_bytes"
    assert runtime.cgroup_get(c.handle(), key) == str(64 * 1024 * 1024)
    # a process that goes past the limit is killed
    r = c.exec(["sh", "-c", "x=$(head -c 150000000 /dev/zero | tr '\\0' a); echo done"])
    assert r.returncode != 0 and b"done" not in r.stdout
    c.unset_config("limits.memory")
    assert runtime.cgroup_get(c.handle(), key) not in (None, str(64 * 1024 * 1024))


@pytest.mark.parametrize("name", ["", "-abc", "abc-", "1234", "foo.bar", "a_b", "a" * 64,
                                  "../x", "a/b", "a b"])
def test_invalid_names_refused(host: lxdlib.Host, name: str) -> None:
    with pytest.raises(lxdlib.InvalidName):
        host.create("busybox", name)
    assert host.instances.names() == []


def test_duplicate_name_refused(host: lxdlib.Host) -> None:
    host.create("busybox", "c1")
    with pytest.raises(lxdlib.AlreadyExists, match="c1"):
        host.create("busybox", "c1")
    assert host.instances.names() == ["c1"]


@pytest.mark.parametrize("config", [
    {"environment.FOO": "x\nlxc.hook.pre-start = /bin/touch /tmp/pwned"},
    {"user.note": "a\rb"},
    {"environment.X": "nul\0"},
    {"limits.memory": "lots"},
    {"no.such.key": "1"},
    {"raw.lxc": "lxc.log.file=/tmp/x"},
])
def test_bad_config_refused_and_nothing_created(host: lxdlib.Host, config: dict[str, str]
                                                ) -> None:
    with pytest.raises(lxdlib.InvalidConfig):
        host.create("busybox", "c1", config=config)
    assert host.instances.names() == []
    assert not host.paths.instance_dir("c1").exists()
    assert not host.pool("default").volume_exists("containers", "c1")


def test_bad_config_update_changes_nothing(host: lxdlib.Host) -> None:
    c = host.create("busybox", "c1", config={"user.a": "1"})
    before = (host.paths.instance_dir("c1") / "config").read_text()
    with pytest.raises(lxdlib.InvalidConfig):
        c.update(config={"user.a": "2", "environment.E": "x\nlxc.init.cmd = /bin/evil"})
    assert c.config["user.a"] == "1"
    assert (host.paths.instance_dir("c1") / "config").read_text() == before


def test_snapshot_restore_and_info(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    c.exec(["sh", "-c", "echo one > /root/f"], check=True)
    s = c.snapshots.create()
    assert s.name == "snap0"
    c.exec(["sh", "-c", "echo two > /root/f"], check=True)
    assert c.snapshots.create().name == "snap1"
    c.snapshots.restore("snap0")
    assert c.state == "RUNNING"
    assert c.exec(["cat", "/root/f"]).text == "one\n"
    info = c.info()
    assert [x["name"] for x in info["snapshots"]] == ["snap0", "snap1"]
    assert info["pid"] == c.pid
    c.snapshots.delete("snap1")
    assert c.snapshots.create().name == "snap1"
    with pytest.raises(lxdlib.AlreadyExists):
        c.snapshots.create("snap0")


def test_rename_stopped_only(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    c.snapshots.create("s")
    with pytest.raises(lxdlib.WrongState):
        c.rename("c2")
    c.stop(force=True)
    c2 = c.rename("c2")
    assert host.instances.names() == ["c2"]
    assert c2.snapshots.names() == ["s"]
    c2.start()
    assert c2.exec(["hostname"]).text.strip() == "c2"


_LAUNCH = textwrap.dedent("""
    import sys, lxdlib
    h = lxdlib.Host(sys.argv[1])
    try:
        h.launch("busybox", sys.argv[2])
        print("ok")
    except lxdlib.AlreadyExists:
        print("exists")
""")


def _spawn(root: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _LAUNCH, str(root), name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_launch_into_one_root(host: lxdlib.Host) -> None:
    procs = [_spawn(host.paths.root, n) for n in ("p1", "p2", "p3")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o[0].strip() for o in outs] == ["ok", "ok", "ok"], outs
    assert host.instances.names() == ["p1", "p2", "p3"]
    assert all(host.instances[n].state == "RUNNING" for n in ("p1", "p2", "p3"))
    # same name from two processes: exactly one wins
    procs = [_spawn(host.paths.root, "same") for _ in range(2)]
    results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert results == ["exists", "ok"]


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.6])
def test_kill_9_during_launch_leaves_old_or_new(host: lxdlib.Host, delay: float) -> None:
    p = _spawn(host.paths.root, "k1")
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    fresh = lxdlib.Host(host.paths.root)
    names = fresh.instances.names()  # recovers leftovers
    pool = fresh.pool("default")
    if names == ["k1"]:
        inst = fresh.instances["k1"]
        if inst.state == "STOPPED":
            inst.start()
        assert inst.exec(["true"]).returncode == 0
    else:
        assert names == []
        assert not fresh.paths.instance_dir("k1").exists()
        assert not pool.volume_exists("containers", "k1")
        # and the name is free again
        fresh.launch("busybox", "k1")
    leftovers = [p.name for p in (pool.volume_path("containers", "x").parent).iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


def test_kill_9_during_delete_finishes_on_next_use(host: lxdlib.Host) -> None:
    host.launch("busybox", "d1")
    # simulate a delete killed right after its commit point
    os.replace(host.paths.instance_record("d1"),
               record.marker(host.paths, "d1", record.DELETING))
    vol = host.pool("default").volume_path("containers", "d1")
    assert vol.exists()
    fresh = lxdlib.Host(host.paths.root)
    assert fresh.instances.names() == []
    assert not vol.exists()
    assert not host.paths.instance_dir("d1").exists()


def test_restarts_do_not_pile_up_monitor_cgroups(host: lxdlib.Host) -> None:
    """liblxc leaks one monitor cgroup per start; past 999 a name could never start again."""
    from lxdlib import runtime

    def leaked() -> int:
        pattern = "lxc.monitor.cgleak"
        return sum(1 for d in runtime._cgroup_dirs() if d.is_dir()
                   for e in os.listdir(d) if e == pattern or e.startswith(pattern + "-"))

    c = host.launch("busybox", "cgleak")
    for _ in range(6):
        c.stop(force=True)
        c.start()
    hierarchies = sum(1 for d in runtime._cgroup_dirs() if d.is_dir())
    assert leaked() <= 2 * hierarchies  # at most the running monitor's and one leftover each


def test_hot_plugged_device_gets_stop_work_without_a_post_stop_hook(host: lxdlib.Host) -> None:
    import socket as socket_
    import time as time_
    # started with no Python hook in its liblxc config (every instance has the shell one that
    # marks a stop from inside: it does no device work)
    c = host.launch("busybox", "hp1")
    assert "lxdlib.hooks" not in (host.paths.instance_dir("hp1") / "config").read_text()
    with socket_.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    devs = c.devices
    devs["web"] = {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}",
                   "connect": "tcp:127.0.0.1:80"}
    c.update(devices=devs)
    pidfile = host.paths.instance_dir("hp1") / "devices" / "stop-watcher.pid"
    deadline = time_.monotonic() + 15
    while not pidfile.exists() and time_.monotonic() < deadline:
        time_.sleep(0.05)
    watcher = int(pidfile.read_text())
    assert Path(f"/proc/{watcher}").exists()
    c.stop(force=True)
    deadline = time_.monotonic() + 15
    while Path(f"/proc/{watcher}").exists() and time_.monotonic() < deadline:
        time_.sleep(0.05)
    assert not Path(f"/proc/{watcher}").exists()
