"""One instance whose liblxc monitor does not answer (stuck in a start's hook) breaks no command
about the others: ``lxdlib list`` (``--fast`` too), ``host.instances.list_state()``, the
instances' ``status``, ``info`` of another instance, start and stop of another all return
promptly, the stuck one shown as ERROR with the reason.

liblxc's command to a monitor has no timeout and python3-lxc holds the GIL while it waits, so a
listing that asked the stuck monitor in-process hung for as long as the hook ran. Every command
here runs in a child process with a timeout, so that such a hang fails the test instead of
hanging it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lxdlib

pytestmark = pytest.mark.root

STUCK, RUN, OFF = "hls-stuck", "hls-run", "hls-off"
#: The most one command may take here: a stuck monitor costs a listing ``ANSWER_WITHIN`` (0.5 s)
#: once; a hang lasts as long as the hook (600 s), cut off by the subprocesses' timeout.
BOUND = 5.0


def timed(host: lxdlib.Host, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(lxdlib.__file__).parent.parent)}
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        *args], capture_output=True, text=True, timeout=30, env=env)
    return time.monotonic() - t, r


def py(host: lxdlib.Host, code: str) -> tuple[float, str]:
    """``code`` run in a fresh Python with ``h``, the host; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(Path(lxdlib.__file__).parent.parent)}
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", "import json, lxdlib\n"
                        f"h = lxdlib.Host({str(host.paths.root)!r}, create=False)\n" + code],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t, r.stdout


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_stuck_monitor_breaks_no_command_about_the_others(host: lxdlib.Host,
                                                           tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    pidfile = tmp_path / "hook.pid"
    # the hook stands for any stall of the monitor before its init runs (a device's host-side
    # work that blocks, a slow or hung hook): it tells its pid, so that it is ended by pid
    hook.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 600\n")
    hook.chmod(0o755)
    host.launch("busybox", RUN)
    host.create("busybox", OFF)
    host.create("busybox", STUCK, config={"raw.lxc": f"lxc.hook.pre-start = {hook}"})
    starter = subprocess.Popen([sys.executable, "-m", "lxdlib.cli.main", "--root",
                                str(host.paths.root), "start", STUCK],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hook_pid = -1
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                hook_pid = int(pidfile.read_text())
                break
            time.sleep(0.05)
        assert hook_pid > 0, "the hook did not run"

        took, r = timed(host, "list", "-f", "csv", "-c", "ns")
        assert r.returncode == 0, r.stderr
        assert took < BOUND, took
        assert r.stdout.split() == [f"{OFF},STOPPED", f"{RUN},RUNNING", f"{STUCK},ERROR"]
        assert "does not answer" in r.stderr

        took, r = timed(host, "list", "--fast", "-f", "csv")
        assert r.returncode == 0 and took < BOUND, (took, r.stderr)
        assert [ln.split(",")[:2] for ln in r.stdout.splitlines()] == [
            [OFF, "STOPPED"], [RUN, "RUNNING"], [STUCK, "ERROR"]]

        took, out = py(host, "print(json.dumps([(e.name, e.state, e.pid > 0, e.error) "
                             "for e in h.instances.list_state()]))")
        assert took < BOUND, took
        listed = json.loads(out)
        assert [x[:3] for x in listed] == [[OFF, "STOPPED", False], [RUN, "RUNNING", True],
                                           [STUCK, "ERROR", False]]
        assert "does not answer" in listed[2][3]

        took, out = py(host, "print(json.dumps([(i.name, i.status) "
                             "for i in h.instances.list()]))")
        assert took < BOUND, took
        assert json.loads(out) == [[OFF, "Stopped"], [RUN, "Running"], [STUCK, "Error"]]

        took, r = timed(host, "info", RUN)
        assert r.returncode == 0 and took < BOUND and "Status: RUNNING" in r.stdout, r.stderr
        took, r = timed(host, "info", STUCK)
        assert r.returncode == 0 and took < BOUND, (took, r.stderr)
        assert "Status: ERROR" in r.stdout and "does not answer" in r.stdout

        for verb in ("start", "stop"):
            took, r = timed(host, verb, OFF)
            assert r.returncode == 0 and took < 30, r.stderr
        assert host.instances[STUCK].status == "Error"  # bounded in this process too

        # the start killed: what it left (its intent) is settled by the next listing, which
        # asks liblxc the stuck instance's state: left for later instead of hanging there
        starter.kill()
        starter.wait()
        took, r = timed(host, "list", "-f", "csv", "-c", "ns")
        assert r.returncode == 0 and took < BOUND, (took, r.stderr)
        assert r.stdout.split() == [f"{OFF},STOPPED", f"{RUN},RUNNING", f"{STUCK},ERROR"]
        took, out = py(host, "print(json.dumps(h.instances.names()))")
        assert took < BOUND and json.loads(out) == [OFF, RUN, STUCK], took
    finally:
        if hook_pid > 0:
            _kill(hook_pid)  # the hook fails: the start is undone and the monitor exits
        try:
            starter.wait(timeout=60)
        except subprocess.TimeoutExpired:
            starter.kill()
            starter.wait()
    from lxdlib import livestate
    for _ in range(200):
        if not livestate.monitor_listens(host.paths.lxcpath, STUCK):
            break
        time.sleep(0.05)
    assert host.instances[STUCK].status == "Stopped"
    assert [(e.name, e.state) for e in host.instances.list_state()] == [
        (OFF, "STOPPED"), (RUN, "RUNNING"), (STUCK, "STOPPED")]
