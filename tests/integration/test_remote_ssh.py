"""SSH remotes against a real sshd on 127.0.0.1: the same scenario on a local ``Host`` and on
``lxdlib.connect(...)``, typed errors across the wire, ``remote add/list/rename/remove``, the
CLI's ``h2:`` names, and a dropped connection that leaves nothing running on the far side."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib.sshhost import RemoteHost
from tests.integration.ssh_fixtures import SshServer, sshd_server

pytestmark = pytest.mark.root

__all__ = ["sshd_server"]

LXDLIB = str(Path(sys.executable).with_name("lxdlib"))


def _connect(server: SshServer, root: Path) -> RemoteHost:
    return lxdlib.connect(server.url(root), ssh_config=server.ssh_config, command=LXDLIB)


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest, host: lxdlib.Host,
           sshd_server: SshServer) -> Iterator[Any]:
    """The host fixture's root, used directly or through ssh (each with its busybox image)."""
    if request.param == "local":
        yield host
        return
    remote = _connect(sshd_server, host.paths.root)
    try:
        yield remote
    finally:
        remote.close()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_same_scenario_on_a_local_and_a_remote_host(target: Any) -> None:
    name = "rssh1"
    assert "busybox" in [a["name"] for i in target.images.list() for a in i.aliases]
    assert "default" in target.profiles.names() and "default" in target.pool_names()
    inst = target.launch("busybox", name)
    assert name in target.instances and name in target.instances.names()
    assert inst.state == "RUNNING"

    r = inst.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert inst.exec("cat", input=b"fed\n").stdout == b"fed\n"
    with pytest.raises(lxdlib.ExecError):
        inst.exec(["false"], check=True)

    data = bytes(range(256)) * 5000  # over one 1 MiB frame, every byte value
    inst.files.put("/root/blob", data, mode=0o600)
    assert inst.files.get("/root/blob") == data
    inst.files.put("/root/note", b"before")
    snap = inst.snapshots.create("s1")
    assert snap.name == "s1" and "s1" in inst.snapshots.names()
    inst.files.put("/root/note", b"after")
    inst.snapshots.restore("s1")
    assert inst.files.get("/root/note") == b"before"

    inst.set_config("user.note", "remote or not")
    assert inst.config["user.note"] == "remote or not"

    # typed errors, raised where the work ran
    with pytest.raises(lxdlib.NotFound):
        inst.snapshots.restore("no-such-snapshot")
    with pytest.raises(lxdlib.WrongState):
        inst.start()
    with pytest.raises(lxdlib.NotFound):
        target.instances.get("rssh-missing")
    with pytest.raises(lxdlib.AlreadyExists):
        target.create("busybox", name)

    inst.stop(force=True)
    assert inst.state == "STOPPED"
    inst.snapshots.delete("s1")
    assert inst.snapshots.names() == []
    inst.delete()
    assert name not in target.instances


def _cli(root: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([LXDLIB, "--root", str(root), *args], input=input,
                          stdin=subprocess.DEVNULL if input is None else None,
                          capture_output=True, timeout=120)


def test_remote_cli(host: lxdlib.Host, sshd_server: SshServer, tmp_path: Path) -> None:
    root = host.paths.root  # one root serves as both ends: the CLI here, lxdlib over ssh there
    url = sshd_server.url(root)
    p = _cli(root, "remote", "add", "h2", url, "--ssh-config", str(sshd_server.ssh_config),
             "--command", LXDLIB)
    assert p.returncode == 0, p.stderr
    listing = _cli(root, "remote", "list", "-f", "csv").stdout.decode()
    assert f"h2,{url},lxdlib,ssh" in listing
    assert b"lxdlib" in _cli(root, "remote", "show", "h2").stdout

    p = _cli(root, "launch", "busybox", "h2:rssh2")
    assert p.returncode == 0, p.stderr
    try:
        p = _cli(root, "list", "h2:", "-f", "csv", "-c", "ns")
        assert p.returncode == 0 and b"rssh2,RUNNING" in p.stdout, p
        p = _cli(root, "exec", "h2:rssh2", "--", "echo", "hi")
        assert (p.returncode, p.stdout) == (0, b"hi\n"), p.stderr
        p = _cli(root, "exec", "h2:rssh2", "--", "sh", "-c", "echo 'a b' >&2; exit 7")
        assert (p.returncode, p.stderr) == (7, b"a b\n")
        p = _cli(root, "exec", "h2:rssh2", "--", "sh", "-c", "cat; echo \"$0\"", "x y",
                 input=b"piped\n")
        assert p.stdout == b"piped\nx y\n", p.stderr  # stdin relayed; words stay words

        src = tmp_path / "pushed"
        src.write_bytes(b"over ssh\n")
        src.chmod(0o640)
        p = _cli(root, "file", "push", str(src), "h2:rssh2/root/pushed")
        assert p.returncode == 0, p.stderr
        back = tmp_path / "pulled"
        p = _cli(root, "file", "pull", "h2:rssh2/root/pushed", str(back))
        assert p.returncode == 0, p.stderr
        assert back.read_bytes() == b"over ssh\n"
        assert _cli(root, "file", "pull", "h2:rssh2/root/pushed", "-").stdout == b"over ssh\n"
        assert host.instances["rssh2"].files.stat("/root/pushed").mode & 0o777 == 0o640

        assert _cli(root, "snapshot", "h2:rssh2", "snap0").returncode == 0
        assert _cli(root, "config", "set", "h2:rssh2", "user.x", "y").returncode == 0
        assert _cli(root, "config", "get", "h2:rssh2", "user.x").stdout == b"y\n"
        assert b"snap0" in _cli(root, "info", "h2:rssh2").stdout
        assert _cli(root, "stop", "-f", "h2:rssh2").returncode == 0
        assert host.instances["rssh2"].state == "STOPPED"
        p = _cli(root, "image", "list", "h2:", "-f", "csv")
        assert p.returncode == 0 and b"busybox" in p.stdout
        p = _cli(root, "info", "h2:rssh-missing")
        assert p.returncode == 1 and b"not found" in p.stderr
        p = _cli(root, "image", "copy", "local:busybox", "h2:")
        assert p.returncode == 1 and b"several hosts" in p.stderr
    finally:
        _cli(root, "delete", "-f", "h2:rssh2")
    assert "rssh2" not in host.instances

    assert _cli(root, "remote", "rename", "h2", "h3").returncode == 0
    assert _cli(root, "remote", "switch", "h3").returncode == 0
    assert _cli(root, "remote", "get-default").stdout == b"h3\n"
    p = _cli(root, "list", "-f", "csv")  # the default remote now: forwarded over ssh
    assert p.returncode == 0, p.stderr
    assert _cli(root, "remote", "remove", "h3").returncode == 1  # the default cannot go
    assert _cli(root, "remote", "switch", "local").returncode == 0
    assert _cli(root, "remote", "remove", "h3").returncode == 0
    assert b"h3" not in _cli(root, "remote", "list").stdout


def test_forwarded_exec_gets_a_terminal(host: lxdlib.Host, sshd_server: SshServer) -> None:
    """``lxdlib exec h2:c -- sh`` from a terminal gets one there (``ssh -t``)."""
    import select
    root = host.paths.root
    assert _cli(root, "remote", "add", "h2", sshd_server.url(root), "--ssh-config",
                str(sshd_server.ssh_config), "--command", LXDLIB).returncode == 0
    host.launch("busybox", "rssh5")
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([LXDLIB, "--root", str(root), "exec", "h2:rssh5", "--", "sh",
                                 "-c", "test -t 0 && test -t 1 && echo TTY-YES"],
                                stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        slave = -1
        out = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal's other end is gone
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(30) == 0, out
        assert b"TTY-YES" in out, out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        with contextlib.suppress(lxdlib.LxdlibError):
            host.instances["rssh5"].delete(force=True)


def test_unreachable_remote_is_a_clear_error(host: lxdlib.Host, sshd_server: SshServer) -> None:
    with pytest.raises(lxdlib.ConnectionLost, match="ssh exited"):
        lxdlib.connect(sshd_server.url(host.paths.root), ssh_config=sshd_server.ssh_config,
                       command="/nonexistent/lxdlib")
    # a host key that is not the known one is refused (no prompt, no silent acceptance)
    bad = sshd_server.dir / "ssh_config_other_known_hosts"
    bad.write_text(sshd_server.ssh_config.read_text().replace(
        str(sshd_server.dir / "known_hosts"), "/dev/null"))
    with pytest.raises(lxdlib.ConnectionLost, match=r"[Hh]ost key"):
        lxdlib.connect(sshd_server.url(host.paths.root), ssh_config=bad, command=LXDLIB)


def test_dropped_connection(host: lxdlib.Host, sshd_server: SshServer) -> None:
    remote = _connect(sshd_server, host.paths.root)
    inst = remote.launch("busybox", "rssh3")
    try:
        pid = remote.server_pid
        assert os.path.exists(f"/proc/{pid}")
        # the channel drops while a command runs there
        errs: list[BaseException] = []

        def run() -> None:
            try:
                inst.exec(["sleep", "300"])
            except BaseException as e:
                errs.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        os.kill(remote._ch.proc.pid, signal.SIGKILL)  # the ssh client dies: the channel drops
        t.join(30)
        assert len(errs) == 1 and isinstance(errs[0], lxdlib.ConnectionLost), errs
        assert "lost" in str(errs[0])
        with pytest.raises(lxdlib.ConnectionLost):
            remote.instances.names()
        # the server sees the channel gone, kills the command it was running, and exits
        assert _gone(pid), "lxdlib serve still running after its channel closed"
        ps = host.instances["rssh3"].exec(["ps", "-o", "args"]).text
        assert "sleep 300" not in ps
    finally:
        remote.close()
        with contextlib.suppress(lxdlib.LxdlibError):
            host.instances["rssh3"].delete(force=True)
    # and a clean close leaves nothing behind either
    remote = _connect(sshd_server, host.paths.root)
    pid = remote.server_pid
    remote.close()
    assert _gone(pid)


def test_streamed_output_and_failing_callbacks(host: lxdlib.Host,
                                               sshd_server: SshServer) -> None:
    remote = _connect(sshd_server, host.paths.root)
    inst = remote.launch("busybox", "rssh4")
    try:
        chunks: list[bytes] = []
        r = inst.exec(["sh", "-c", "echo a; sleep 0.2; echo b"], stdout=chunks.append)
        assert b"".join(chunks) == b"a\nb\n" and r.stdout == b"" and r.returncode == 0

        def bad(b: bytes) -> None:
            raise ValueError("callback")

        with pytest.raises(ValueError, match="callback"):
            inst.exec(["echo", "x"], stdout=bad)
        assert inst.exec(["echo", "still"]).stdout == b"still\n"  # the channel stayed in step

        pid = remote.server_pid

        def interrupt(b: bytes) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            inst.exec(["sh", "-c", "echo go; sleep 300"], stdout=interrupt)
        assert remote.closed
        assert _gone(pid)
        assert "sleep 300" not in host.instances["rssh4"].exec(["ps", "-o", "args"]).text
    finally:
        remote.close()
        with contextlib.suppress(lxdlib.LxdlibError):
            host.instances["rssh4"].delete(force=True)


def test_round_trip_time(host: lxdlib.Host, sshd_server: SshServer) -> None:
    t0 = time.monotonic()
    remote = _connect(sshd_server, host.paths.root)
    connect_s = time.monotonic() - t0
    try:
        n = 100
        t0 = time.monotonic()
        for _ in range(n):
            remote.instances.names()
        rtt_ms = (time.monotonic() - t0) / n * 1000
    finally:
        remote.close()
    print(f"\nssh remote: connect {connect_s:.2f}s, one request {rtt_ms:.2f}ms")
    assert rtt_ms < 100


def test_copy_and_move_between_hosts_from_the_command_line(
        host: lxdlib.Host, sshd_server: SshServer, busybox_tarball: Path) -> None:
    """`copy c1 h2:c1`, `move c1 h2:c2`, `copy h2:c2 back` with the CLI, the far root reached
    through the real sshd; the far side checks the stream as it would a hostile backup."""
    import shutil
    import tempfile

    from tests.cleanup import teardown_root
    base = Path(tempfile.mkdtemp(prefix="lxdlib-test-far-", dir="/var/tmp"))
    base.chmod(0o711)
    far_root = base / "root"
    far_root.mkdir()
    far = lxdlib.Host(far_root)
    root = host.paths.root
    try:
        far.create_pool("default", "btrfs", {"size": "1GiB"})
        far.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                     "pool": "default"}})
        assert _cli(root, "remote", "add", "far", sshd_server.url(far_root), "--ssh-config",
                    str(sshd_server.ssh_config), "--command", LXDLIB).returncode == 0
        c1 = host.create("busybox", "xh1")
        c1.files.put("/marker", b"from here\n")
        c1.snapshots.create("s0")

        p = _cli(root, "copy", "xh1", "far:xh1")
        assert p.returncode == 0, p.stderr
        got = far.instances["xh1"]
        assert got.files.get("/marker") == b"from here\n"
        assert got.snapshots.names() == ["s0"]
        assert got.config.get("volatile.eth0.hwaddr") is None or \
            got.config.get("volatile.eth0.hwaddr") != c1.config.get("volatile.eth0.hwaddr")

        p = _cli(root, "copy", "xh1", "far:xh1")  # already there: refused, nothing changed
        assert p.returncode == 1 and p.stderr.startswith(b"Error: "), p
        p = _cli(root, "copy", "xh1", "far:xh9", "--profile", "x")
        assert p.returncode == 1 and b"between hosts" in p.stderr, p
        p = _cli(root, "copy", "xh1", "far:bad;name")
        assert p.returncode == 1 and "bad;name" not in far.instances.names()

        p = _cli(root, "move", "xh1", "far:xh2", "--instance-only")
        assert p.returncode == 0, p.stderr
        assert "xh1" not in host.instances and "xh2" in far.instances
        assert far.instances["xh2"].snapshots.names() == []

        p = _cli(root, "copy", "far:xh2", "back")
        assert p.returncode == 0, p.stderr
        assert host.instances["back"].files.get("/marker") == b"from here\n"
        assert "xh2" in far.instances  # a copy leaves the source

        # root-equivalent settings: a push carries this root's own; a pull takes them only
        # when this host's root says so (docs/security.md, 2b)
        host.create("busybox", "xh3", config={"security.privileged": "true"})
        p = _cli(root, "copy", "xh3", "far:xh3")
        assert p.returncode == 0, p.stderr
        assert far.instances["xh3"].config.get("security.privileged") == "true"
        p = _cli(root, "copy", "far:xh3", "xh4")
        assert p.returncode == 1 and b"root-equivalent" in p.stderr, p
        assert b"--allow-root-equivalent" in p.stderr
        assert "xh4" not in host.instances
        p = _cli(root, "copy", "far:xh3", "xh4", "--allow-root-equivalent")
        assert p.returncode == 0, p.stderr
        assert host.instances["xh4"].config.get("security.privileged") == "true"
    finally:
        for h in (far, host):
            for inst in h.instances.list():
                with contextlib.suppress(Exception):
                    inst.delete(force=True)
        for name in far.pool_names():
            with contextlib.suppress(Exception):
                far.pool(name).unmount()
        teardown_root(far_root)
        shutil.rmtree(base, ignore_errors=True)
