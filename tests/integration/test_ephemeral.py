"""Ephemeral instances are deleted when they stop: by ``stop``, and by liblxc's post-stop hook
when they stop from inside (``poweroff``), with no lxdlib process around; a reboot keeps them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lxdlib
from lxdlib import housekeeping
from tests.integration import invariants

pytestmark = pytest.mark.root


def _gone(host: lxdlib.Host, name: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in host.instances and not host.paths.instance_dir(name).exists():
            return True
        time.sleep(0.1)
    return False


def test_ephemeral_deleted_on_stop_and_poweroff(host: lxdlib.Host) -> None:
    e1 = host.launch("busybox", "e1", ephemeral=True)
    assert e1.ephemeral and e1.info()["type"] == "container (ephemeral)"
    e1.wait_ready()
    e1.stop(force=True)
    assert "e1" not in host.instances
    assert not host.pool("default").volume_exists("containers", "e1")
    # from inside: the hook's detached reaper deletes it once liblxc reports it stopped
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        "launch", "busybox", "e2", "--ephemeral"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    e2 = host.instances["e2"]
    assert e2.wait_ready()
    e2.snapshots.create("s")
    e2.exec(["poweroff"])
    assert _gone(host, "e2")
    assert not host.pool("default").volume_exists("containers", "e2")
    assert host.pool("default").list_volumes("containers") == []  # type: ignore[attr-defined]
    invariants.check(host)


def test_ephemeral_survives_reboot_restart_and_restore(host: lxdlib.Host) -> None:
    e = host.launch("busybox", "e3", ephemeral=True)
    e.wait_ready()
    pid = e.pid
    e.exec(["reboot"])
    assert e.wait_for(lambda: e.running and e.pid not in (0, -1, pid), timeout=60)
    e.restart(force=True)
    assert e.running and e.ephemeral
    e.snapshots.create("s")
    e.snapshots.restore("s")
    assert e.running
    time.sleep(1)  # a reaper woken by the restore's stop must leave it alone
    assert "e3" in host.instances and e.running
    e.stop(force=True)
    assert "e3" not in host.instances
    invariants.check(host)


_HOLD = """
import sys, time
import lxdlib
from lxdlib.state import lock
h = lxdlib.Host(sys.argv[1])
with lock(h.paths, "instance", sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def _reaper(name: str, timeout: float = 30.0) -> int:
    """The pid of the detached reaper the post-stop hook started for ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if b"lxdlib.hooks" in argv and b"reap" in argv and name.encode() in argv:
                return int(cmdline.parent.name)
        time.sleep(0.05)
    raise AssertionError(f"no reaper for {name}")


def test_an_ephemeral_whose_reaper_died_is_deleted_by_the_next_locked_call(
        host: lxdlib.Host) -> None:
    """``poweroff`` inside while another process held the instance's lock, and the reaper
    that waited for it was killed: the instance stayed, stopped, for good (and its record
    kept it ephemeral). The next call that takes its lock — housekeeping's pass — deletes it,
    as the reaper would have."""
    e = host.launch("busybox", "e5", ephemeral=True)
    assert e.wait_ready()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(host.paths.root), "e5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        e.exec(["poweroff"])
        reaper = _reaper("e5")
        deadline = time.monotonic() + 30
        while e.state != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(reaper, signal.SIGKILL)  # started by this test's poweroff
    finally:
        holder.kill()
        holder.wait()
    assert "e5" in host.instances.names()
    housekeeping.run(host)
    assert "e5" not in host.instances.names()
    assert not host.paths.instance_dir("e5").exists()
    assert not host.pool("default").volume_exists("containers", "e5")
    invariants.check(host)
