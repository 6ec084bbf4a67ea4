"""``runtime.Container``, the typed handle that is lxdlib's only way to a liblxc container.

Everything here uses containers that are never started (a missing one, a defined one, a broken
one), so no root and no kernel features are needed: what a started container does is covered
by the integration suite. What is checked is what the handle promises on top of python3-lxc:
failures raise instead of returning ``False``, waits time out, a broken config names its line,
the log fd closes when the handle goes, effects are logged, and no other module imports lxc.
"""

from __future__ import annotations

import ast
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lxdlib
from lxdlib import runtime
from lxdlib.errors import LXCError, WrongState


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def lxcpath(tmp_path: Path) -> Path:
    path = tmp_path / "containers"
    path.mkdir()
    return path


def _define(lxcpath: Path, name: str, *lines: str) -> Path:
    d = lxcpath / name
    d.mkdir()
    (d / "config").write_text("".join(f"{line}\n" for line in (f"lxc.uts.name = {name}",
                                                                 *lines)))
    return d


def test_a_missing_container_opens_stopped_and_undefined(lxcpath: Path) -> None:
    c = runtime.open_container(lxcpath, "nothere")
    assert isinstance(c, runtime.Container)
    assert (c.name, c.lxcpath) == ("nothere", lxcpath)
    assert c.state == "STOPPED"
    assert not c.defined
    assert not c.running
    assert c.init_pid == -1
    assert "nothere" in repr(c)


def test_a_defined_container_is_defined(lxcpath: Path) -> None:
    _define(lxcpath, "c1")
    c = runtime.open_container(lxcpath, "c1")
    assert c.defined and not c.running and c.state == "STOPPED"


def test_the_raw_object_is_not_reachable_by_a_public_name(lxcpath: Path) -> None:
    c = runtime.open_container(lxcpath, "c1")
    assert not hasattr(c, "__dict__")  # __slots__: no stray attributes, no per-object dict
    with pytest.raises(AttributeError):
        c.network = None  # type: ignore[attr-defined]
    public = [getattr(c, n) for n in dir(c) if not n.startswith("_")]
    assert not any(type(v).__module__ in ("lxc", "_lxc") or type(v).__name__ == "_lxc.Container"
                   for v in public)
    with pytest.raises(AttributeError):
        c.name = "other"  # type: ignore[misc]


def test_effects_on_a_missing_container_raise(lxcpath: Path) -> None:
    c = runtime.open_container(lxcpath, "nothere")
    with pytest.raises(LXCError, match="failed to start instance 'nothere'"):
        c.start()
    with pytest.raises(LXCError, match="failed to freeze"):
        c.freeze()
    with pytest.raises(LXCError, match="failed to unfreeze"):
        c.unfreeze()
    with pytest.raises(LXCError, match=r"failed to set cgroup pids.max=5 on instance 'nothere'"):
        c.set_cgroup_item("pids.max", "5")
    # the module-level spellings are the same calls
    with pytest.raises(LXCError, match="failed to start"):
        runtime.start(c, lxcpath)
    with pytest.raises(LXCError, match="failed to set cgroup"):
        runtime.cgroup_set(c, lxcpath, "pids.max", "5")


@pytest.mark.parametrize("through", ["lxc-start", "in-process"])
def test_a_failed_start_raises_with_the_log_tail(lxcpath: Path, through: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if through == "in-process":  # what a host without Debian's lxc package gets
        monkeypatch.setattr(runtime, "_lxc_start_tool", lambda: None)
    elif shutil.which("lxc-start") is None:
        pytest.skip("lxc-start is not installed")
    d = _define(lxcpath, "c1", f"lxc.rootfs.path = dir:{lxcpath}/no-such-rootfs",
                f"lxc.log.file = {lxcpath}/c1/{runtime.LOG_NAME}", "lxc.log.level = ERROR")
    c = runtime.open_container(lxcpath, "c1")
    with pytest.raises(LXCError) as e:
        c.start()
    assert "failed to start instance 'c1'" in str(e.value)
    assert (d / runtime.LOG_NAME).exists()
    assert c.state == "STOPPED"
    if through == "lxc-start":
        assert e.value.log_tail and " ERROR " in e.value.log_tail
        assert not (d / "c1.log").exists()  # the tool opened no log of its own


def test_without_a_log_file_the_error_has_what_lxc_start_said(lxcpath: Path) -> None:
    """No ``lxc.log.file``: the reason is what the tool printed, minus its generic advice."""
    if shutil.which("lxc-start") is None:
        pytest.skip("lxc-start is not installed")
    _define(lxcpath, "c1", f"lxc.rootfs.path = dir:{lxcpath}/no-such-rootfs")
    c = runtime.open_container(lxcpath, "c1")
    with pytest.raises(LXCError) as e:
        c.start()
    assert e.value.log_tail.strip()
    assert "foreground" not in e.value.log_tail and "--logfile" not in e.value.log_tail


def test_stopping_what_is_stopped_is_not_an_error(lxcpath: Path) -> None:
    c = runtime.open_container(lxcpath, "nothere")
    c.stop(timeout=1)
    runtime.kill(c, lxcpath, timeout=1)
    assert c.shutdown(1) is True


def test_reads_of_a_stopped_container_are_empty_not_errors(lxcpath: Path) -> None:
    _define(lxcpath, "c1")
    c = runtime.open_container(lxcpath, "c1")
    assert c.get_cgroup_item("pids.current") is None
    assert runtime.cgroup_get(c, "memory.current") is None
    assert c.get_running_config_item("lxc.hook.post-stop") is None
    assert runtime.running_item(c, "lxc.uts.name") is None
    assert c.get_interfaces() == [] and c.get_ips() == [] and c.get_ips("eth0", "inet") == []


def test_wait_polls_and_times_out(lxcpath: Path) -> None:
    c = runtime.open_container(lxcpath, "nothere")
    assert c.wait("STOPPED", 0)
    assert c.wait({"RUNNING", "STOPPED"}, 0)
    assert runtime.wait_state(c, {"STOPPED"}, 0)
    t = time.monotonic()
    assert not c.wait("RUNNING", 0.1)
    assert not c.wait({"RUNNING", "FROZEN"}, 0)
    assert time.monotonic() - t >= 0.1


def test_commands_need_a_running_container(lxcpath: Path) -> None:
    c = runtime.open_container(lxcpath, "nothere")

    def refused() -> None:
        with pytest.raises(WrongState, match="is not running"):
            c.attach(["true"], env={})
        with pytest.raises(WrongState, match="is not running"):
            runtime.spawn(c, ["true"], env={})
        with pytest.raises(WrongState):
            runtime.run(c, ["cat"], env={}, input=b"x")
        with pytest.raises(WrongState):
            runtime.interactive(c, ["true"], env={})
    # a first round: an attach first reaps the processes earlier tests of this process let
    # go and closes their pidfds, which counted among ``before`` (CI saw 20 then 18)
    refused()
    before = _fds()
    refused()
    assert _fds() == before  # run's pipes are closed when the spawn is refused


def test_a_config_liblxc_refuses_names_its_line(lxcpath: Path) -> None:
    _define(lxcpath, "bad", "lxc.no.such.key = 1")
    with pytest.raises(LXCError, match=r"instance 'bad' is broken: .*lxc\.no\.such\.key"):
        runtime.open_container(lxcpath, "bad")
    with pytest.raises(LXCError, match="is broken"):
        runtime.Container(lxcpath, "bad")


def test_dropping_the_handle_closes_liblxc_log_fd(lxcpath: Path) -> None:
    """liblxc opens ``lxc.log.file`` when it loads the config and closes it only when the
    object is freed: reference counting must free it, not a later garbage collection."""
    _define(lxcpath, "c1", f"lxc.log.file = {lxcpath}/c1/{runtime.LOG_NAME}",
            "lxc.log.level = DEBUG")
    before = _fds()
    c = runtime.open_container(lxcpath, "c1")
    assert c.state == "STOPPED"
    opened = _fds() - before
    del c
    assert _fds() == before, f"{opened} fd(s) opened, not all closed"


def test_effects_are_logged_at_debug_with_the_name(lxcpath: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    c = runtime.open_container(lxcpath, "logme")
    caplog.set_level(logging.DEBUG, logger="lxdlib.runtime")
    for effect in (c.start, c.freeze, c.unfreeze, lambda: c.set_cgroup_item("pids.max", "7")):
        with pytest.raises(LXCError):
            effect()
    c.stop(1)
    c.shutdown(0)
    records = [r for r in caplog.records if r.name == "lxdlib.runtime"]
    assert all(r.levelno == logging.DEBUG for r in records)
    messages = [r.getMessage() for r in records]
    for pattern in (r"^starting logme$", r"^freezing logme$", r"^unfreezing logme$",
                    r"^killing logme$", r"^asking logme to shut down", r"logme: pids.max = 7$"):
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)


def test_nothing_is_logged_above_debug_by_default(lxcpath: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lxdlib")
    c = runtime.open_container(lxcpath, "quiet")
    with pytest.raises(LXCError):
        c.start()
    assert not [r for r in caplog.records if r.name.startswith("lxdlib")]


def test_no_other_module_imports_lxc() -> None:
    """The handle is the only way to liblxc only while no other module can import it."""
    root = Path(lxdlib.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "runtime.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(n == "lxc" or n.startswith("lxc.") or n == "_lxc" for n in names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root (a pid namespace whose next pid it sets)")
def test_an_attached_process_reaped_elsewhere_leaves_its_pids_new_owner_registered() -> None:
    """An ``Attached`` whose process someone else reaped (a ``waitpid(-1)`` of the program's
    own) took, when its owner waited, the registration of whatever process had its pid by
    then: a later attach that got the pid again was no longer known to a stop, which neither
    killed nor reaped it, and init waited for it for ever. Run in a pid namespace of its own,
    where the reused pid is chosen (``ns_last_pid``)."""
    script = textwrap.dedent("""
        import os, time
        from pathlib import Path
        from lxdlib import runtime

        def child():
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            return pid

        first = child()
        a = runtime.Attached(first, Path("/x"), "c1")
        os.kill(first, 9)
        os.waitpid(first, 0)  # the program's own reaper: the pid is free again
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(first - 1))
        assert child() == first
        b = runtime.Attached(first, Path("/x"), "c1")
        print(a.wait(0), runtime._ATTACHED.get(first) is b)
        runtime.end_attached(Path("/x"), "c1", kill=True, timeout=5)
        print(b.code)
    """)
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                        script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["255 True", "137", ""], r.stdout


def test_the_leaked_pidfd_sweep_keeps_pidfds_on_this_processs_own_children() -> None:
    """After each attach lxdlib closes the pidfd liblxc leaks (a copy of its monitor's, proved
    by ``kcmp``). A pidfd that another thread opened meanwhile on a child of this process (an
    ``Attached``: attached processes are this process's children) is not such a copy: "the
    monitor" is this process then, and ``kcmp`` of the fd with itself matched, so the sweep
    closed another thread's pidfd and its wait failed with ``EBADF`` (``examples/launch_many.py``
    on a fresh Debian 12, three threads exec'ing at once). Here the interleaving is made by
    hand: the fd is opened after the sweep's snapshot of the fds, as the other thread's was."""
    before = set(os.listdir("/proc/self/fd"))
    child = subprocess.Popen(["sleep", "30"])
    try:
        opened = os.pidfd_open(child.pid)
        fd = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, 200)  # a number not in the snapshot
        os.close(opened)
        try:
            runtime._close_monitor_pidfds(before)
            os.fstat(fd)  # EBADF if the sweep closed it
        finally:
            os.close(fd)
    finally:
        child.kill()
        child.wait()
