"""``storage get|set|unset`` and ``storage edit`` of a pool's config, on a real loop-backed btrfs
pool: ``size`` grows the loop file and btrfs (a running instance keeps running), mount options
remount after a trial mount, everything else is refused before anything changes, and a kill
between the host's change and the record's leaves the old record, which the same ``set``
again brings up to date. Error lines that LXD 5.0.2 has are its own (read off ``lxc``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

import lxdlib

pytestmark = pytest.mark.root

MiB = 1024 * 1024


def run(host: lxdlib.Host, *args: str, input: str | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, input=input,
                          env={**os.environ, **env})


def ok(host: lxdlib.Host, *args: str, input: str | None = None) -> str:
    r = run(host, *args, input=input)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def refused(host: lxdlib.Host, *args: str, input: str | None = None) -> str:
    """The error of a command that must fail (exit status 1) and change nothing."""
    before = host.pools["hhp"].record()
    r = run(host, *args, input=input)
    assert r.returncode == 1, (args, r.stdout, r.stderr)
    assert host.pools["hhp"].record() == before
    return r.stderr.strip()


def mount_line(host: lxdlib.Host) -> list[str]:
    """The mount options and the superblock options of the pool's mount."""
    mp = str(host.paths.pools / "hhp")
    with open("/proc/self/mountinfo") as f:
        lines = [ln.split() for ln in f if ln.split()[4] == mp]
    assert len(lines) == 1, lines
    fields = lines[0]
    return fields[5].split(",") + fields[-1].split(",")


def btrfs_size(host: lxdlib.Host) -> int:
    out = subprocess.run(["btrfs", "filesystem", "show", "--raw", str(host.paths.pools / "hhp")],
                         capture_output=True, text=True, check=True).stdout
    (line,) = [ln for ln in out.splitlines() if "devid" in ln]
    return int(line.split()[3])


@pytest.fixture
def pool(host: lxdlib.Host) -> lxdlib.Host:
    host.create_pool("hhp", "btrfs", {"size": "256MiB"})
    return host


def test_get_set_unset(pool: lxdlib.Host) -> None:
    host = pool
    loop = host.paths.disks / "hhp.img"
    assert ok(host, "storage", "get", "hhp", "size") == "256MiB\n"
    assert ok(host, "storage", "get", "hhp", "user.nothing") == ""  # as lxc 5.0.2: nothing, 0

    # what cannot change is refused with nothing changed
    assert refused(host, "storage", "set", "hhp", "source", "/srv/x") == \
        "Error: Pool source cannot be changed when not in pending state"
    assert refused(host, "storage", "unset", "hhp", "source") == \
        "Error: Pool source cannot be changed when not in pending state"
    assert refused(host, "storage", "set", "hhp", "a") == \
        "Error: Invalid key=value configuration: a"
    assert "nosuch" in refused(host, "storage", "set", "hhp", "nosuch=1")
    assert "nosuch" in refused(host, "storage", "unset", "hhp", "nosuch")
    assert "size" in refused(host, "storage", "set", "hhp", "size=abc")
    assert "cannot shrink" in refused(host, "storage", "set", "hhp", "size", "200MiB")
    assert "cannot be unset" in refused(host, "storage", "unset", "hhp", "size")
    # a remount would take subvol= and ignore it; the trial mount refuses it
    assert "subvol" in refused(host, "storage", "set", "hhp", "btrfs.mount_options",
                               "subvol=/nope")
    assert "subvol=/nope" not in mount_line(host)
    assert os.stat(loop).st_size == 256 * MiB

    # size grows the loop file and the filesystem
    assert ok(host, "storage", "set", "hhp", "size", "512MiB") == ""
    assert os.stat(loop).st_size == 512 * MiB
    assert btrfs_size(host) == 512 * MiB
    assert ok(host, "storage", "get", "hhp", "size") == "512MiB\n"

    # mount options remount the pool (nodev stays whatever they say)
    ok(host, "storage", "set", "hhp", "btrfs.mount_options=user_subvol_rm_allowed,compress=zstd",
       "size=640MiB")
    opts = mount_line(host)
    assert "nodev" in opts and any(o.startswith("compress=zstd") for o in opts)
    assert btrfs_size(host) == 640 * MiB
    assert host.pools["hhp"].config == {"source": "", "size": "640MiB",
                                        "btrfs.mount_options":
                                        "user_subvol_rm_allowed,compress=zstd"}
    ok(host, "storage", "unset", "hhp", "btrfs.mount_options")  # back to the default
    assert host.pools["hhp"].config["btrfs.mount_options"] == "user_subvol_rm_allowed"
    ok(host, "storage", "unset", "hhp", "btrfs.mount_options")  # not set: left so

    # the pool still works after all this, and from the API too
    host.volumes.store.create("hhp", "v1", {}, "")
    host.pools["hhp"].set("size", "700MiB")
    assert btrfs_size(host) == 700 * MiB


def test_edit_round_trip_and_config_change(pool: lxdlib.Host) -> None:
    host = pool
    shown = ok(host, "storage", "show", "hhp")
    ok(host, "storage", "edit", "hhp", input=shown)  # show | edit changes nothing
    assert ok(host, "storage", "show", "hhp") == shown
    data = yaml.safe_load(shown)
    data["config"]["size"] = "384MiB"
    data["description"] = "grown"
    ok(host, "storage", "edit", "hhp", input=yaml.safe_dump(data))
    assert btrfs_size(host) == 384 * MiB
    assert host.pools["hhp"].description == "grown"
    data["config"]["source"] = "/srv/elsewhere"
    assert refused(host, "storage", "edit", "hhp", input=yaml.safe_dump(data)) == \
        "Error: Pool source cannot be changed when not in pending state"


def test_grow_under_a_running_instance(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    ok(host, "storage", "set", "default", "size", "3GiB")
    assert os.stat(host.paths.disks / "default.img").st_size == 3 * 1024 * MiB
    assert c.state == "RUNNING"
    c.exec(["sh", "-c", "echo still > /root/f"], check=True)
    assert c.exec(["cat", "/root/f"], check=True).text == "still\n"


@pytest.mark.parametrize("point", ["pool.file-grown", "pool.reconfigured"])
def test_a_kill_leaves_the_old_record_and_the_same_set_finishes(pool: lxdlib.Host,
                                                                 point: str) -> None:
    host = pool
    r = run(host, "storage", "set", "hhp", "size", "512MiB", LXDLIB_CRASHPOINT=point)
    assert r.returncode == -9, r.stderr
    assert host.pools["hhp"].config["size"] == "256MiB"
    # between the file and the record, the pool keeps working
    host.volumes.store.create("hhp", "v1", {}, "")
    assert "cannot shrink" in refused(host, "storage", "set", "hhp", "size", "300MiB")
    ok(host, "storage", "set", "hhp", "size", "512MiB")
    assert host.pools["hhp"].config["size"] == "512MiB"
    assert btrfs_size(host) == 512 * MiB


def test_recover_finishes_a_storage_set_killed_before_its_record(pool: lxdlib.Host) -> None:
    """A ``storage set`` killed once the host took the change and before the record says it
    (the mount remounted with the new options, the record old): ``lxdlib recover`` finishes
    it from the intent the set left (a remount cannot take every option back), where it said
    there was nothing to recover and the record and the mount disagreed until a reboot."""
    host = pool
    before = host.pools["hhp"].config["btrfs.mount_options"]
    wanted = f"{before},noatime"
    r = run(host, "storage", "set", "hhp", "btrfs.mount_options", wanted,
            LXDLIB_CRASHPOINT="pool.reconfigured")
    assert r.returncode == -9, r.stderr
    assert host.pools["hhp"].config["btrfs.mount_options"] == before
    assert "noatime" in mount_line(host)
    out = ok(host, "recover")
    assert "pool:hhp" in out, out
    assert host.pools["hhp"].config["btrfs.mount_options"] == wanted
    assert "noatime" in mount_line(host)
    assert not os.path.lexists(host.paths.pools / ".hhp.reconfigure")
    assert "Nothing to recover" in ok(host, "recover")
    assert "hhp" in ok(host, "storage", "list", "-f", "csv")
