"""Profiles against real containers: LXD's rules, live re-application, the seed's docker profile
(nesting), and autostart."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import yaml

import lxdlib
from lxdlib import journal, runtime
from tests.integration.seed_profiles import DOCKER_PROFILE

pytestmark = pytest.mark.root


def cli(host: lxdlib.Host, *args: str, input: str | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                        str(host.paths.root), *args], capture_output=True, text=True,
                       input=input, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{args}: {r.stderr}")
    return r


def mem(c: lxdlib.Instance) -> str | None:
    key = "memory.limit_in_bytes" if runtime.cgroup_version() == 1 else "memory.max"
    return runtime.cgroup_get(c.handle(), key)


def test_profile_cli_verbs_and_rules(host: lxdlib.Host) -> None:
    cli(host, "profile", "create", "web")
    cli(host, "profile", "set", "web", "limits.memory", "64MiB")
    cli(host, "profile", "set", "web", "user.a=1", "user.b=2")
    assert cli(host, "profile", "get", "web", "user.b").stdout.strip() == "2"
    cli(host, "profile", "unset", "web", "user.b")
    cli(host, "profile", "device", "add", "web", "data", "disk", "source=/srv", "path=/mnt",
        "required=false")
    assert cli(host, "profile", "device", "list", "web").stdout.split() == ["data"]
    cli(host, "profile", "device", "set", "web", "data", "readonly", "true")
    assert cli(host, "profile", "device", "get", "web", "data", "readonly").stdout.strip() == "true"
    cli(host, "profile", "device", "remove", "web", "data")
    cli(host, "profile", "copy", "web", "web2")
    cli(host, "profile", "rename", "web2", "web3")
    names = [ln.split("|")[1].strip() for ln in cli(host, "profile", "list").stdout.splitlines()
             if ln.startswith("| ") and "NAME" not in ln]
    assert names == ["default", "web", "web3"]
    shown = yaml.safe_load(cli(host, "profile", "show", "web").stdout)
    assert shown["config"] == {"limits.memory": "64MiB", "user.a": "1"}
    for args in (["profile", "delete", "default"], ["profile", "rename", "default", "x"]):
        r = cli(host, *args, check=False)
        assert r.returncode == 1 and "default" in r.stderr
    cli(host, "launch", "busybox", "c1", "-p", "default", "-p", "web")
    r = cli(host, "profile", "delete", "web", check=False)
    assert r.returncode == 1 and "in use" in r.stderr
    cli(host, "profile", "delete", "web3")
    # the seed's spelling: lxc profile apply <c> p1,p2 ; then add/remove
    cli(host, "profile", "apply", "c1", "default")
    assert host.instances["c1"].profiles == ["default"]
    cli(host, "profile", "add", "c1", "web")
    assert host.instances["c1"].profiles == ["default", "web"]
    cli(host, "profile", "remove", "c1", "web")
    assert cli(host, "profile", "apply", "c1", "default,default", check=False).returncode == 1
    assert cli(host, "profile", "apply", "c1", "nope", check=False).returncode == 1
    assert host.instances["c1"].profiles == ["default"]


def test_order_decides_and_local_wins(host: lxdlib.Host) -> None:
    host.profiles.create("a", {"user.x": "a", "user.only-a": "1"},
                         {"d": {"type": "disk", "source": "/srv", "path": "/a"}})
    host.profiles.create("b", {"user.x": "b"}, {"d": {"type": "disk", "source": "/srv",
                                                      "path": "/b", "readonly": "true"}})
    c = host.create("busybox", "c1", profiles=["default", "a", "b"])
    cfg, devs = c.expanded()
    assert cfg["user.x"] == "b" and cfg["user.only-a"] == "1"
    assert devs["d"] == {"type": "disk", "source": "/srv", "path": "/b", "readonly": "true"}
    c.update(profiles=["default", "b", "a"])
    assert c.expanded_config["user.x"] == "a"
    c.update(config={"user.x": "local"}, devices={"d": {"type": "none"}})
    cfg, devs = c.expanded()
    assert cfg["user.x"] == "local" and "d" not in devs
    e = host.create("busybox", "empty-profiles", profiles=[],
                    devices={"root": {"type": "disk", "path": "/", "pool": "default"}})
    assert e.profiles == []
    with pytest.raises(lxdlib.InvalidConfig, match="root disk"):
        host.create("busybox", "no-root", profiles=[])


def test_profile_edit_reapplies_live_to_users(host: lxdlib.Host) -> None:
    host.profiles.create("lim", {"limits.memory": "128MiB"}, {})
    run1 = host.launch("busybox", "run1", profiles=["default", "lim"])
    run2 = host.launch("busybox", "run2", profiles=["default", "lim"])
    stopped = host.create("busybox", "stopped", profiles=["default", "lim"])
    assert mem(run1) == str(128 << 20)
    doc = yaml.safe_load(cli(host, "profile", "show", "lim").stdout)
    doc["config"]["limits.memory"] = "96MiB"
    cli(host, "profile", "edit", "lim", input=yaml.safe_dump(doc))
    assert mem(run1) == mem(run2) == str(96 << 20)
    config_text = (host.paths.instance_dir("stopped") / "config").read_text()
    assert str(96 << 20) in config_text
    assert stopped.state == "STOPPED"


def test_profile_change_failure_is_reported_per_instance(host: lxdlib.Host) -> None:
    host.profiles.create("lim", {}, {})
    ok = host.create("busybox", "ok", profiles=["default", "lim"])
    busy = host.launch("busybox", "busy", profiles=["default", "lim"])
    # busy holds 40 MB in tmpfs: a 16 MiB hard limit cannot be applied to it live
    busy.exec(["sh", "-c", "head -c 40000000 /dev/zero > /dev/shm/fill"], check=True)
    with pytest.raises(lxdlib.ProfileApplyError) as err:
        host.update_profile("lim", config={"limits.memory": "16MiB"})
    assert list(err.value.failures) == ["busy"]
    assert "still saved" in str(err.value)
    assert host.profiles.get("lim").config == {"limits.memory": "16MiB"}  # the change stays
    assert str(16 << 20) in (host.paths.instance_dir("ok") / "config").read_text()
    # a value that is invalid anywhere is refused before anything is saved
    with pytest.raises(lxdlib.InvalidConfig):
        host.update_profile("lim", config={"limits.processes": "0"})
    assert host.profiles.get("lim").config == {"limits.memory": "16MiB"}
    assert ok.exists


def test_seed_docker_profile_runs_a_nested_container(host: lxdlib.Host) -> None:
    seed = DOCKER_PROFILE
    cli(host, "profile", "create", "docker")
    cli(host, "profile", "edit", "docker", input=seed)
    cli(host, "launch", "busybox", "docker", "-p", "default", "-p", "docker")
    c = host.instances["docker"]
    # a nested container: new user, mount, pid and uts namespaces, its own /proc and rootfs
    script = textwrap.dedent("""
        set -e
        mkdir -p /nested/bin /nested/proc /nested/etc
        cp /bin/busybox /nested/bin/busybox
        ln -sf busybox /nested/bin/sh
        exec unshare -U -r -m -p -u -f sh -c '
            mount -t proc proc /nested/proc && hostname nested &&
            exec chroot /nested /bin/busybox sh -c "echo pid=\\$\\$ host=\\$(busybox hostname)"'
    """)
    r = c.exec(["sh", "-c", script])
    assert r.returncode == 0, r.stderr
    assert r.text.split() == ["pid=1", "host=nested"]
    cli(host, "config", "set", "docker", "security.privileged", "true")
    cli(host, "restart", "docker", "--force")
    assert c.exec(["cat", "/proc/self/uid_map"]).text.split() == ["0", "0", "4294967295"]


def test_autostart_in_priority_order(host: lxdlib.Host) -> None:
    host.launch("busybox", "low", config={"boot.autostart": "true",
                                          "boot.autostart.priority": "1"})
    host.launch("busybox", "high", config={"boot.autostart": "true",
                                           "boot.autostart.priority": "9"})
    host.launch("busybox", "was-running")  # unset: follows its last state
    never = host.launch("busybox", "never", config={"boot.autostart": "false"})
    off = host.create("busybox", "was-stopped")
    assert "lxc.start.auto = 1" in (host.paths.instance_dir("high") / "config").read_text()
    assert "lxc.start.order = -9" in (host.paths.instance_dir("high") / "config").read_text()
    for name in ("low", "high", "never", "was-running"):
        runtime.kill(host.instances[name].handle(), host.paths.lxcpath)  # as a host crash would…
    for name in ("low", "high", "never", "was-running"):  # …which runs no post-stop hook
        marker = journal.stopped_marker(host.paths, name)
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        marker.unlink()
    result = host.autostart(sleep=lambda s: None)
    assert list(result) == ["high", "low", "was-running"]
    assert set(result.values()) == {"started"}
    assert never.state == "STOPPED" and off.state == "STOPPED"
