"""Terminals and events: ``lxdlib exec`` and ``lxdlib console`` driven through a real tmux
terminal (pty, window size, Ctrl-C, exit codes), ``console --show-log``, and lifecycle events
seen by ``host.events()`` and ``lxdlib monitor`` while other processes act on the root."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lxdlib

pytestmark = pytest.mark.root

REPO = Path(lxdlib.__file__).resolve().parents[1]


def lxdlib_cmd(host: lxdlib.Host, *args: str) -> list[str]:
    return [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]


def run_cli(host: lxdlib.Host, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(lxdlib_cmd(host, *args), capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r


def wait_until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


class Tmux:
    """A tmux server of our own (its own socket), killed at the end whatever happened."""

    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / "tmux.sock")  # removed with the test's directory

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=20, check=True).stdout

    def start(self, argv: list[str], rc_file: Path, width: int = 80, height: int = 24) -> None:
        env = f"PYTHONPATH={shlex.quote(str(REPO))}"
        # written aside and renamed: the test waits for the file to exist, then reads it
        tmp = shlex.quote(f"{rc_file}.tmp")
        cmd = (f"env {env} {shlex.join(argv)}; echo rc=$? > {tmp}; "
               f"mv {tmp} {shlex.quote(str(rc_file))}")
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), cmd)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        try:
            return self.tmux("capture-pane", "-p", "-t", "t")
        except subprocess.CalledProcessError:
            return ""

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        assert wait_until(lambda: text in self.screen(), timeout), \
            f"{text!r} never appeared on the terminal:\n{self.screen()}"
        return self.screen()

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.kill()


@pytest.fixture
def c1(host: lxdlib.Host) -> lxdlib.Instance:
    inst = host.launch("busybox", "c1")
    assert inst.wait_ready(10)
    return inst


def test_exec_on_a_terminal(c1: lxdlib.Instance, tmux: Tmux, tmp_path: Path) -> None:
    rc = tmp_path / "rc"
    tmux.start(lxdlib_cmd(c1.ctx, "exec", "c1", "--", "sh"), rc)
    tmux.wait_for("#")
    tmux.keys("tty; stty size", "Enter")
    screen = tmux.wait_for("24 80")
    assert "/dev/pts/" in screen
    tmux.tmux("resize-window", "-t", "t", "-x", "100", "-y", "30")
    tmux.keys("clear; stty size", "Enter")
    tmux.wait_for("30 100")
    # Ctrl-C reaches the process in the container, not lxdlib: the shell carries on
    tmux.keys("sleep 1000", "Enter")
    assert wait_until(lambda: "sleep 1000" in c1.exec("ps").text)
    tmux.keys("C-c")
    assert wait_until(lambda: "sleep 1000" not in c1.exec("ps").text)
    tmux.keys("echo after-$((40+2))", "Enter")
    tmux.wait_for("after-42")
    tmux.keys("exit 42", "Enter")
    assert wait_until(rc.exists) and rc.read_text().strip() == "rc=42"
    # -T forbids the pty: no terminal inside even on a terminal
    rc2 = tmp_path / "rc2"
    tmux.kill()
    tmux.start(lxdlib_cmd(c1.ctx, "exec", "-T", "c1", "--", "sh", "-c",
                          "tty > /root/tty-T; exit 3"), rc2)
    assert wait_until(rc2.exists) and rc2.read_text().strip() == "rc=3"
    assert c1.files.get("/root/tty-T") == b"not a tty\n"


def test_file_edit_on_a_terminal_uses_the_editor(c1: lxdlib.Instance, tmux: Tmux,
                                                  tmp_path: Path) -> None:
    c1.files.put("/root/conf", b"colour=red\n", mode=0o600, uid=7)
    rc = tmp_path / "rc"
    argv = ["env", "EDITOR=sed -i s/red/blue/", *lxdlib_cmd(c1.ctx, "file", "edit",
                                                            "c1/root/conf")]
    tmux.start(argv, rc)
    assert wait_until(rc.exists) and rc.read_text().strip() == "rc=0"
    assert c1.files.get("/root/conf") == b"colour=blue\n"
    st = c1.files.stat("/root/conf")
    assert (st.mode, st.uid) == (0o600, 7)


def test_console_attach_and_log(c1: lxdlib.Instance, tmux: Tmux, tmp_path: Path) -> None:
    word = f"console-{secrets.token_hex(4)}"
    c1.exec(f"echo {word} > /dev/console", check=True)
    assert wait_until(lambda: word in run_cli(c1.ctx, "console", "c1", "--show-log").stdout)
    rc = tmp_path / "rc"
    tmux.start(lxdlib_cmd(c1.ctx, "console", "c1"), rc)
    tmux.wait_for("<ctrl>+a q")
    live = f"live-{secrets.token_hex(4)}"
    time.sleep(0.5)
    c1.exec(f"echo {live} > /dev/console", check=True)
    tmux.wait_for(live)
    tmux.keys("C-a", "q")
    assert wait_until(rc.exists) and rc.read_text().strip() == "rc=0"
    r = subprocess.run(lxdlib_cmd(c1.ctx, "console", "c1"), capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "needs a terminal" in r.stderr


def test_events_from_other_processes(host: lxdlib.Host) -> None:
    wanted = ["instance-created", "instance-started", "instance-stopped", "instance-started",
              "instance-paused", "instance-resumed", "instance-renamed", "instance-deleted"]
    events = host.events(["lifecycle"], timeout=90)  # positioned now: nothing is missed
    seen: list[dict[str, object]] = []

    def follow() -> None:
        for ev in events:
            seen.append(ev)
            meta = ev["metadata"]
            assert isinstance(meta, dict)
            if meta["action"] == "instance-deleted":
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    monitor = subprocess.Popen(lxdlib_cmd(host, "monitor", "--all", "--format", "json",
                                          "--type", "lifecycle"),
                               stdout=subprocess.PIPE, text=True, env=env)
    try:
        for args in (("launch", "busybox", "m1"), ("stop", "--force", "m1"), ("start", "m1"),
                     ("pause", "m1"), ("start", "m1"), ("stop", "-f", "m1"),
                     ("move", "m1", "m2"), ("delete", "m2")):
            run_cli(host, *args)
        t.join(60)
        actions = [ev["metadata"]["action"] for ev in seen]  # type: ignore[index]
        assert [a for a in actions if a in wanted] == [*wanted[:6], "instance-stopped",
                                                       *wanted[6:]]
        sources = {ev["metadata"]["source"] for ev in seen}  # type: ignore[index]
        assert sources == {"m1", "m2"}
        from_monitor: list[str] = []
        assert monitor.stdout is not None
        for line in monitor.stdout:
            ev = json.loads(line)
            from_monitor.append(ev["metadata"]["action"])
            if ev["metadata"]["action"] == "instance-deleted":
                break
        assert [a for a in from_monitor if a.startswith("instance-")] == \
            [a for a in actions if a.startswith("instance-")]
    finally:
        monitor.kill()  # the monitor we started, by its own handle
        monitor.wait()
