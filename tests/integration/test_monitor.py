"""The liblxc monitor an lxdlib start leaves behind: a small C process (liblxc's ``lxc-start``),
not a copy of the Python process that asked for the start, and independent of it.

Each running instance keeps its monitor for its whole life, so its size is paid per instance: a
fork of the caller's Python heap cost about 7 MB of private memory each.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lxdlib
from lxdlib.errors import LXCError

pytestmark = pytest.mark.root


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def _uss_kb(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def _monitor(inst: lxdlib.Instance) -> int:
    init = inst.pid
    assert init > 0
    return _ppid(init)


def test_started_instance_outlives_the_python_process_that_started_it(
        host: lxdlib.Host) -> None:
    host.create("busybox", "c1")
    script = textwrap.dedent(f"""
        import os, sys
        import lxdlib
        host = lxdlib.Host({str(host.paths.root)!r})
        host.instances.get("c1").start()
        print(os.getpid())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    starter = int(proc.stdout.split()[-1])
    assert not Path(f"/proc/{starter}").exists()  # the starting process is gone …

    c = host.instances.get("c1")
    assert c.state == "RUNNING"  # … and the instance still runs and is usable
    assert c.exec(["echo", "hi"]).text == "hi\n"

    monitor = _monitor(c)
    exe = os.path.basename(os.readlink(f"/proc/{monitor}/exe"))
    comm = Path(f"/proc/{monitor}/comm").read_text().strip()
    assert "python" not in exe and "python" not in comm, (exe, comm)
    assert exe == "lxc-start"
    cmdline = Path(f"/proc/{monitor}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert cmdline.startswith(f"[lxc monitor] {host.paths.lxcpath} c1"), cmdline
    # the monitor is not a child of anything lxdlib keeps: it was reparented when it daemonized
    assert _ppid(monitor) != os.getpid()
    # a copy of a Python heap is several MB of private pages; liblxc's tool is well under 3 MB
    assert _uss_kb(monitor) < 3 * 1024, _uss_kb(monitor)

    c.stop(force=True)  # stop works from another process than the starter
    assert c.state == "STOPPED"
    deadline = time.monotonic() + 10  # it reports STOPPED, then runs its post-stop work
    while Path(f"/proc/{monitor}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{monitor}").exists()
    c.start()  # and an in-process start gets the same kind of monitor
    assert "python" not in os.readlink(f"/proc/{_monitor(c)}/exe")
    c.restart(force=True)
    assert c.state == "RUNNING" and c.exec(["true"]).ok


def test_a_failed_start_raises_lxcerror_with_liblxc_log_tail(host: lxdlib.Host) -> None:
    """A config liblxc loads but cannot start: the bind source does not exist."""
    missing = host.paths.root / "no-such-source"
    c = host.create("busybox", "c1", config={
        "raw.lxc": f"lxc.mount.entry = {missing} mnt none bind,create=dir 0 0\n"})
    with pytest.raises(LXCError) as e:
        c.start()
    assert "failed to start instance 'c1'" in str(e.value)
    assert str(missing) in e.value.log_tail, e.value.log_tail
    assert " ERROR " in e.value.log_tail
    # lxc-start's own advice (foreground mode, --logfile) is not mistaken for the reason
    assert "foreground" not in e.value.log_tail
    assert c.state == "STOPPED"
    # the tool wrote no log file of its own next to liblxc's
    assert not (host.paths.instance_dir("c1") / "c1.log").exists()
    c.unset_config("raw.lxc")
    c.start()
    assert c.state == "RUNNING"


def test_liblxc_log_level_of_the_config_still_applies(host: lxdlib.Host) -> None:
    """The tool is told to open no log of its own, so ``lxc.log.file``/``lxc.log.level`` of the
    config decide, as for an in-process start: raising the level fills the same file."""
    c = host.launch("busybox", "c1", config={"raw.lxc": "lxc.log.level = DEBUG\n"})
    log = (host.paths.instance_dir("c1") / "lxc.log").read_text()
    assert " DEBUG " in log and "lxc-start c1 " in log
    c.stop(force=True)
    c.unset_config("raw.lxc")
    c.start()
    assert " DEBUG " not in (host.paths.instance_dir("c1") / "lxc.log").read_text()


def test_a_start_that_fails_in_a_hook_returns_once_torn_down(host: lxdlib.Host) -> None:
    """A start-host hook that fails (a proxy whose address is taken) aborts the start after
    init exists: liblxc answers the start as soon as the monitor reports ABORTING, before it
    has killed init. The failed start returns only once liblxc reports the instance stopped, so
    no one sees that init in the payload cgroup, which the kernel's view reads as RUNNING. The
    window is short (about one start in fifteen hit it here), hence the repeats."""
    c = host.create("busybox", "c1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        c.update(devices={"clash": {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}",
                                    "connect": "tcp:127.0.0.1:5000"}})
        seen = []
        for _ in range(30):
            with pytest.raises(LXCError, match=r"(?i)address already in use"):
                c.start()
            seen.append((c.state, c.pid))
        assert set(seen) == {("STOPPED", -1)}
    c.start()
    assert c.state == "RUNNING" and c.pid > 0
