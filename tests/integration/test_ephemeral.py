"""Ephemeral instances are deleted when they stop: by ``stop``, and by liblxc's post-stop hook
when they stop from inside (``poweroff``), with no lxdlib process around; a reboot keeps them."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import lxdlib
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
