"""Snapshots against real btrfs and liblxc: naming, taking them from a running instance, restore,
rename, delete, expiry and scheduled snapshots through housekeeping, and stateful snapshots
through CRIU (which fails on some kernels: then cleanly)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time

import btrfsutil
import pytest

import lxdlib
from lxdlib import criu, housekeeping, journal
from lxdlib.errors import NotFound
from tests.integration import invariants
from tests.integration.storage_fixtures import die_at, run_with_pause

pytestmark = pytest.mark.root


def _snap_path(host: lxdlib.Host, inst: str, snap: str) -> os.PathLike[str]:
    return host.pool("default").volume_path("containers-snapshots", f"{inst}/{snap}")


def test_running_snapshot_restore_rename_delete(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", config={"user.before": "1"})
    c.wait_ready()
    c.exec(["sh", "-c", "echo one > /root/f"], check=True)
    pid = c.pid
    s0 = c.snapshots.create()
    assert s0.name == "snap0" and not s0.stateful
    assert c.state == "RUNNING" and c.pid == pid  # taken without a stop
    assert btrfsutil.get_subvolume_read_only(_snap_path(host, "c1", "snap0"))
    assert s0.config["user.before"] == "1"
    # the snapshot keeps its own config, devices and profiles
    c.update(config={"user.after": "2"},
             devices={"data": {"type": "disk", "source": "/tmp", "path": "/mnt"}})
    c.exec(["sh", "-c", "echo two > /root/f"], check=True)
    s1 = c.snapshots.create("named", description="before the upgrade")
    assert s1.devices["data"]["path"] == "/mnt" and "user.before" not in s1.config
    assert c.snapshots["named"].description == "before the upgrade"
    uuid = c.config["volatile.uuid"]
    c.snapshots.restore("snap0")
    assert c.state == "RUNNING"  # stopped, restored and started again
    assert c.exec(["cat", "/root/f"]).text == "one\n"
    assert c.config.get("user.before") == "1" and "user.after" not in c.config
    assert "data" not in c.devices
    assert c.config["volatile.uuid"] == uuid
    assert c.snapshots.names() == ["snap0", "named"]
    c.snapshots.restore("named")
    assert c.exec(["cat", "/root/f"]).text == "two\n" and c.devices["data"]["path"] == "/mnt"
    # duplicates and bad names are refused before anything changes
    with pytest.raises(lxdlib.AlreadyExists):
        c.snapshots.create("snap0")
    for bad in ("a b", "a/b", "..", "", "x*y"):
        with pytest.raises(lxdlib.InvalidName):
            c.snapshots.create(bad)
    assert c.snapshots.names() == ["snap0", "named"]
    # --reuse replaces an existing snapshot
    c.exec(["sh", "-c", "echo three > /root/f"], check=True)
    c.snapshots.create("snap0", reuse=True)
    assert c.snapshots.names() == ["named", "snap0"]
    with open(os.path.join(_snap_path(host, "c1", "snap0"), "rootfs/root/f")) as f:
        assert f.read() == "three\n"
    c.snapshots.rename("named", "renamed")
    with pytest.raises(lxdlib.AlreadyExists):
        c.snapshots.rename("renamed", "snap0")
    with pytest.raises(lxdlib.NotFound):
        c.snapshots.rename("gone", "x")
    assert c.snapshots.names() == ["renamed", "snap0"]
    assert host.pool("default").list_snapshots("c1") == ["renamed", "snap0"]
    info = c.info()
    assert [(s["name"], s["stateful"]) for s in info["snapshots"]] == [("renamed", False),
                                                                     ("snap0", False)]
    assert dt.datetime.fromisoformat(info["snapshots"][0]["created_at"]).tzinfo is not None
    c.snapshots.delete("renamed")
    with pytest.raises(lxdlib.NotFound):
        c.snapshots.delete("renamed")
    assert host.pool("default").list_snapshots("c1") == ["snap0"]
    invariants.check(host)


def test_pattern_naming_and_indexes(host: lxdlib.Host) -> None:
    c = host.create("busybox", "c1")
    assert [c.snapshots.create().name for _ in range(3)] == ["snap0", "snap1", "snap2"]
    c.snapshots.delete("snap1")
    assert c.snapshots.create().name == "snap3"  # a gap below the highest is not reused
    c.snapshots.delete("snap3")
    assert c.snapshots.create().name == "snap3"  # the highest index is
    c.set_config("snapshots.pattern", "{{ creation_date|date:'2006-01-02' }}-%d")
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert c.snapshots.create().name == f"{today}-0"
    assert c.snapshots.create().name == f"{today}-1"
    c.set_config("snapshots.pattern", "fixed")
    assert [c.snapshots.create().name for _ in range(2)] == ["fixed", "fixed-0"]
    with pytest.raises(lxdlib.InvalidConfig):
        c.set_config("snapshots.pattern", "a%db%d")
    with pytest.raises(lxdlib.WrongState, match="isn't running"):
        c.snapshots.create(stateful=True)
    invariants.check(host)


def test_expiry_and_scheduled_snapshots(host: lxdlib.Host) -> None:
    c = host.create("busybox", "c1", config={"snapshots.expiry": "1H"})
    s = c.snapshots.create()
    assert s.expires_at is not None
    assert s.expires_at - s.created_at == dt.timedelta(hours=1)
    keep = c.snapshots.create(no_expiry=True)
    assert keep.expires_at is None
    c.snapshots.set_expiry(keep.name, None)
    now = dt.datetime.now(dt.UTC)
    report = housekeeping.run(host, now=now)
    assert report.expired == [] and report.created == []
    report = housekeeping.run(host, now=now + dt.timedelta(hours=2))
    assert report.expired == [f"c1/{s.name}"]
    assert c.snapshots.names() == [keep.name]
    # a schedule: stopped instances only with snapshots.schedule.stopped
    c.update(config={"snapshots.schedule": "*/5 * * * *"})
    t = dt.datetime(2030, 1, 1, 12, 4, 30, tzinfo=dt.UTC)
    assert housekeeping.run(host, now=t).created == []  # not running
    c.update(config={"snapshots.schedule": "*/5 * * * *",
                     "snapshots.schedule.stopped": "true"})
    assert housekeeping.run(host, now=t).created == []  # 12:04 is not on the schedule
    assert housekeeping.run(host, now=t + dt.timedelta(seconds=40)).created == ["c1/snap2"]
    # idempotent: the same minute again takes nothing; a late run catches up once
    assert housekeeping.run(host, now=t + dt.timedelta(seconds=50)).created == []
    assert housekeeping.run(host, now=t + dt.timedelta(minutes=30)).created == ["c1/snap3"]
    assert housekeeping.last_run(host, "c1") == t + dt.timedelta(minutes=30)
    c.update(config={"snapshots.schedule": "@hourly", "snapshots.schedule.stopped": "true"})
    created = housekeeping.run(host, now=t + dt.timedelta(hours=2)).created
    assert created == ["c1/snap4"]
    assert c.snapshots.names() == [keep.name, "snap2", "snap3", "snap4"]
    # the command runs the same pass (the image store's housekeeping too)
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        "housekeeping"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    invariants.check(host)


_KILLED_BEFORE_STAMP = """
import datetime as dt, os, signal, sys
import lxdlib
from lxdlib import housekeeping
write = housekeeping.write_record
def killed_at_stamp(path, data, **kw):  # the run's last write: the snapshot is committed
    if "taking" not in data:
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, data, **kw)
housekeeping.write_record = killed_at_stamp
housekeeping.run(lxdlib.Host(sys.argv[1]), now=dt.datetime.fromisoformat(sys.argv[2]))
"""


def test_housekeeping_killed_after_its_snapshot_takes_no_second(host: lxdlib.Host) -> None:
    """A run killed after its scheduled snapshot's commit and before its stamp: the next run
    in the same minute finds the snapshot taken and takes none (it took a second one), and a
    run killed before the commit is redone by the next."""
    c = host.create("busybox", "c1", config={"snapshots.schedule": "* * * * *",
                                              "snapshots.schedule.stopped": "true"})
    t = dt.datetime(2030, 1, 1, 12, 0, 5, tzinfo=dt.UTC)
    assert housekeeping.run(host, now=t).created == ["c1/snap0"]
    r = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_STAMP, str(host.paths.root),
                        (t + dt.timedelta(minutes=1)).isoformat()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert c.snapshots.names() == ["snap0", "snap1"]
    assert housekeeping.run(host, now=t + dt.timedelta(minutes=1, seconds=30)).created == []
    assert housekeeping.last_run(host, "c1") == t + dt.timedelta(minutes=1, seconds=30)
    # killed inside the snapshot, before its commit: undone, and the next run takes it
    env = {**os.environ, "LXDLIB_CRASHPOINT": "snapshot.made"}
    r = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_STAMP, str(host.paths.root),
                        (t + dt.timedelta(minutes=2)).isoformat()],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert housekeeping.run(host, now=t + dt.timedelta(minutes=2, seconds=30)).created == [
        "c1/snap2"]
    assert c.snapshots.names() == ["snap0", "snap1", "snap2"]
    invariants.check(host)


def test_a_housekeeping_run_that_waited_puts_no_stamp_back(host: lxdlib.Host) -> None:
    """Two runs at once: the one that started first (its ``now`` older) waited for the lock
    while the later one took the minute's snapshot; its stamp put the look back, and a third
    run in that minute took a second snapshot. The stamp never goes back, unless by more than
    a run can wait (a clock set back)."""
    c = host.create("busybox", "c1", config={"snapshots.schedule": "* * * * *",
                                              "snapshots.schedule.stopped": "true"})
    t = dt.datetime(2030, 1, 1, 10, 0, 5, tzinfo=dt.UTC)
    assert housekeeping.run(host, now=t).created == ["c1/snap0"]
    later = dt.datetime(2030, 1, 1, 10, 1, 0, 100_000, tzinfo=dt.UTC)
    assert housekeeping.run(host, now=later).created == ["c1/snap1"]
    waited = dt.datetime(2030, 1, 1, 10, 0, 59, 900_000, tzinfo=dt.UTC)
    assert housekeeping.run(host, now=waited).created == []
    assert housekeeping.last_run(host, "c1") == later
    assert housekeeping.run(host, now=later + dt.timedelta(seconds=30)).created == []
    assert housekeeping.run(host, now=later + dt.timedelta(minutes=1)).created == ["c1/snap2"]
    back = dt.datetime(2029, 1, 1, 10, 0, 30, tzinfo=dt.UTC)  # the clock set back a year
    assert housekeeping.run(host, now=back).created == []
    assert housekeeping.run(host, now=back + dt.timedelta(minutes=1)).created == ["c1/snap3"]
    assert c.snapshots.names() == ["snap0", "snap1", "snap2", "snap3"]
    # the run's own expiry frees the name before its scheduled snapshot is named, as LXD's
    c.snapshots.set_expiry("snap3", back)
    report = housekeeping.run(host, now=back + dt.timedelta(minutes=2))
    assert report.expired == ["c1/snap3"] and report.created == ["c1/snap3"]


def _criu_fails() -> str | None:
    return criu.check()


def test_stateful_without_working_criu_leaves_nothing(host: lxdlib.Host) -> None:
    why = _criu_fails()
    if why is None:
        pytest.skip("criu check passes here: the success path is tested instead")
    c = host.launch("busybox", "c1")
    c.wait_ready()
    pid = c.pid
    with pytest.raises(lxdlib.LXCError, match="CRIU"):
        c.snapshots.create("live", stateful=True)
    assert c.snapshots.names() == []
    assert host.pool("default").list_snapshots("c1") == []
    assert not (c.volume / journal.STATE_DIR).exists()
    assert c.state == "RUNNING" and c.pid == pid
    with pytest.raises(lxdlib.LXCError, match="CRIU"):
        c.stop(stateful=True)
    assert c.state == "RUNNING" and not (c.volume / journal.STATE_DIR).exists()
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        "snapshot", "c1", "--stateful"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("Error: CRIU could not checkpoint")
    c.snapshots.create("plain")
    with pytest.raises(lxdlib.WrongState, match="stateless"):
        c.snapshots.restore("plain", stateful=True)
    assert c.state == "RUNNING"
    invariants.check(host)


@pytest.mark.slow
def test_stateful_snapshot_and_stop_keep_a_counter_going(host: lxdlib.Host) -> None:
    why = _criu_fails()
    if why is not None:
        pytest.skip(f"criu check fails on this host: {why}")
    c = host.launch("busybox", "c1")
    c.wait_ready()
    c.exec(["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done "
            "</dev/null >/dev/null 2>&1 &"], check=True)
    time.sleep(1)
    c.snapshots.create("live", stateful=True)
    assert c.snapshots["live"].stateful
    at_snapshot = int(c.exec(["cat", "/tmp/n"]).text)
    time.sleep(1)
    c.snapshots.restore("live", stateful=True)
    time.sleep(0.5)
    after = int(c.exec(["cat", "/tmp/n"]).text)
    assert after > at_snapshot - 20  # the counter went on from its saved value, not from 0
    c.stop(stateful=True)
    assert c.state == "STOPPED"
    c.start()
    time.sleep(0.5)
    assert int(c.exec(["cat", "/tmp/n"]).text) > after
    invariants.check(host)


def test_snapshot_cli(host: lxdlib.Host) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                               str(host.paths.root), *args], capture_output=True, text=True,
                              timeout=120)
    host.create("busybox", "c1")
    assert run("snapshot", "c1").returncode == 0
    assert run("snapshot", "c1", "keep", "--no-expiry").returncode == 0
    r = run("snapshot", "c1", "keep")
    assert r.returncode == 1 and "already exists" in r.stderr
    assert run("snapshot", "c1", "keep", "--reuse").returncode == 0
    info = run("info", "c1").stdout
    assert "Snapshots:" in info and "snap0" in info and "keep" in info and "STATEFUL" in info
    assert run("move", "c1/snap0", "c1/first").returncode == 0
    assert run("restore", "c1", "first").returncode == 0
    assert run("copy", "c1/first", "c2").returncode == 0
    assert host.instances["c2"].snapshots.names() == []
    assert run("delete", "c1/first").returncode == 0
    assert host.instances["c1"].snapshots.names() == ["keep"]
    r = run("restore", "c1", "nope")
    assert (r.returncode, r.stderr) == (1, "Error: Snapshot c1/nope does not exist\n")
    invariants.check(host)


def test_restore_that_brings_a_profile_back_against_its_edit(host: lxdlib.Host) -> None:
    """A restore of a running instance to a snapshot that names a profile the instance has
    since left takes that profile's lock first, as an edit adding a profile does: an edit
    of the profile paused between finding its users (none yet) and saving, with the restore
    under way meanwhile, ends with the instance running on what the profile says, not on
    what it said before (an edit that found no user re-applies to none)."""
    host.profiles.create("hlkenv", {"environment.HLK": "one"}, {})
    c = host.launch("busybox", "hlkrest", profiles=["default", "hlkenv"])
    c.snapshots.create("s0")
    c.update(profiles=["default"])
    edit = run_with_pause(host, "lxdlib.journal", "profile.begun",
                          "h.update_profile('hlkenv', config={'environment.HLK': 'two'})")
    restore = subprocess.Popen([sys.executable, "-m", "lxdlib.cli.main", "--root",
                                str(host.paths.root), "restore", "hlkrest", "s0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            restore.wait(timeout=10)  # done by then when it takes no lock of the profile
        edit.send_signal(signal.SIGCONT)
        _, err = edit.communicate(timeout=120)
        assert edit.returncode == 0, err
        _, err = restore.communicate(timeout=120)
        assert restore.returncode == 0, err
    finally:
        for p in (edit, restore):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                p.wait(timeout=30)
    assert c.profiles == ["default", "hlkenv"] and c.state == "RUNNING"
    assert c.expanded_config["environment.HLK"] == "two"
    rendered = (host.paths.lxcpath / "hlkrest" / "config").read_text()
    assert "lxc.environment = HLK=two" in rendered
    invariants.check(host)


def test_restore_to_a_snapshot_naming_a_deleted_profile_changes_nothing(
        host: lxdlib.Host) -> None:
    """The profile a snapshot names, deleted since (the instance had left it): a restore of
    the running instance is refused with ``NotFound`` before it stops anything."""
    host.profiles.create("hlkgone", {"user.x": "1"}, {})
    c = host.launch("busybox", "hlkgone1", profiles=["default", "hlkgone"])
    c.snapshots.create("s0")
    c.update(profiles=["default"])
    host.profiles.delete("hlkgone")
    pid = c.pid
    with pytest.raises(NotFound, match="hlkgone"):
        c.snapshots.restore("s0")
    assert c.state == "RUNNING" and c.pid == pid and c.profiles == ["default"]
    assert not journal.pending(host.paths, "hlkgone1")
    invariants.check(host)


@pytest.mark.parametrize("point", ["snapshot.prepared", "snapshot.made"])
def test_a_snapshot_killed_beside_its_record_is_undone(host: lxdlib.Host, point: str) -> None:
    """On btrfs the record that names a new snapshot is written (into its spare file) on a
    thread while the snapshot is made (``lxdlib.background``). Killed there, the snapshot
    made or not (``snapshot.prepared``), or after it with the record not yet swapped in
    (``snapshot.made``): the instance keeps its snapshots as they were, the volume of the
    one cut short is removed, and the same name can be taken again."""
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    die_at(host, point, "h.instances['c1'].snapshots.create('s1')")
    fresh = lxdlib.Host(host.paths.root)
    c = fresh.instances["c1"]
    assert c.snapshots.names() == ["s0"]
    c.set_config("user.after", "kill")  # a locked call: finishes what the intent names
    assert fresh.pool("default").list_snapshots("c1") == ["s0"]
    invariants.check(fresh)
    c.snapshots.create("s1")
    assert c.snapshots.names() == ["s0", "s1"]
    assert fresh.pool("default").list_snapshots("c1") == ["s0", "s1"]
