"""Fixtures for the storage integration tests: a private root per test, pools with unique names,
and teardown that removes mounts, loop devices, zpools and the zfs-fuse daemons the tests started
even when a test fails half-way."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib.state import Paths
from lxdlib.storage import (
    create_pool,
    delete_pool,
    ensure_zfs_daemon,
    load_pool,
    stop_zfs_daemon,
)
from lxdlib.storage.base import PoolDriver
from lxdlib.storage.loop import detach_loops, mounts

MiB = 1024 * 1024

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[Paths]:
    p = Paths.at(tmp_path / "root")
    p.ensure()
    try:
        yield p
    finally:
        force_cleanup(p)
        # a zfs-fuse that a pool's mount() had to start under this root goes with it
        from tests.cleanup import _pidfiles
        _pidfiles(p.root)


def force_cleanup(paths: Paths, zpools: tuple[str, ...] = ()) -> None:
    """Last-resort teardown: destroy the test's zpools, unmount everything under its root
    (deepest first) and detach the loop devices of its disk files."""
    for zpool in zpools:
        if shutil.which("zpool") and subprocess.run(
                ["zpool", "list", "-H", zpool], capture_output=True, check=False).returncode == 0:
            subprocess.run(["zpool", "destroy", "-f", zpool], capture_output=True, check=False)
    root = str(paths.root)
    for mp in sorted((m for m, _, _ in mounts() if m == root or m.startswith(root + "/")),
                     key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
    if paths.disks.is_dir():
        for f in paths.disks.iterdir():
            with contextlib.suppress(Exception):
                detach_loops(f)


def teardown_pool(paths: Paths, name: str, zpools: tuple[str, ...] = ()) -> None:
    """Delete what a test left on the pool, then the pool; fall back to force_cleanup."""
    try:
        pool = load_pool(paths, name)
        lister = getattr(pool, "list_volumes")  # noqa: B009 - every lxdlib driver has it
        for inst in lister("containers"):
            pool.delete_instance_volume(inst)
        for vol in lister("custom"):
            pool.delete_custom_volume(vol)
        delete_pool(paths, name)
    except lxdlib.NotFound:
        pass
    finally:
        force_cleanup(paths, zpools)


@pytest.fixture
def btrfs_pool(paths: Paths) -> Iterator[PoolDriver]:
    name = unique("bt")
    pool = create_pool(paths, name, "btrfs", {"size": "1GiB"})
    try:
        yield pool
    finally:
        teardown_pool(paths, name)


@pytest.fixture
def dir_pool(paths: Paths) -> Iterator[PoolDriver]:
    name = unique("dp")
    pool = create_pool(paths, name, "dir", {})
    try:
        yield pool
    finally:
        teardown_pool(paths, name)


class ZfsDaemons:
    """The zfs-fuse daemons this test session started (only those are ever stopped)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.started: list[int] = []

    def ensure(self) -> None:
        pid = ensure_zfs_daemon(self.paths)
        if pid is not None:
            self.started.append(pid)

    def adopt_from(self, paths: Paths) -> None:
        """Record a daemon that a pool's mount() started under another root."""
        pidfile = paths.run / "zfs-fuse.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(pidfile.read_text().strip())
            if pid not in self.started:
                self.started.append(pid)

    def stop_ours(self) -> None:
        while self.started:
            stop_zfs_daemon(self.started.pop())


@pytest.fixture(scope="session")
def zfs_daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZfsDaemons]:
    if shutil.which("zfs-fuse") is None:
        pytest.skip("zfs-fuse is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    daemons = ZfsDaemons(Paths.at(tmp_path_factory.mktemp("zfsd")))
    try:
        daemons.ensure()
        yield daemons
    finally:
        daemons.stop_ours()


@pytest.fixture
def zfs_daemon(zfs_daemons: ZfsDaemons) -> ZfsDaemons:
    zfs_daemons.ensure()  # a test may have stopped it to simulate a reboot
    return zfs_daemons


def make_zfs_pool(paths: Paths, extra: dict[str, str] | None = None) -> tuple[str, str]:
    name = unique("zp")
    zpool = unique("lxdt")
    create_pool(paths, name, "zfs", {"size": "512MiB", "zfs.pool_name": zpool, **(extra or {})})
    return name, zpool


@pytest.fixture
def zfs_pool(paths: Paths, zfs_daemon: ZfsDaemons) -> Iterator[PoolDriver]:
    name, zpool = make_zfs_pool(paths)
    try:
        yield load_pool(paths, name)
    finally:
        teardown_pool(paths, name, (zpool,))


def write_bytes(path: Path, nbytes: int) -> None:
    """Write incompressible data in 1 MiB chunks (raises the OSError a full quota gives)."""
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            chunk = os.urandom(min(MiB, left))
            f.write(chunk)
            left -= len(chunk)
        f.flush()
        os.fsync(f.fileno())


def fill_image(content: str = "image") -> Callable[[Path], None]:
    def fill(d: Path) -> None:
        (d / "rootfs").mkdir()
        (d / "rootfs" / "hello").write_text(content)
        (d / "metadata.yaml").write_text("architecture: x86_64\ncreation_date: 0\n")
        (d / "templates").mkdir()

    return fill


def kill9_during_fill(paths: Paths, pool_name: str, fingerprint: str) -> int:
    """Run create_image_volume in a child that SIGKILLs itself inside fill(); return its pid."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from lxdlib.state import Paths
        from lxdlib.storage import load_pool
        pool = load_pool(Paths.at({str(paths.root)!r}), {pool_name!r})
        def fill(d: Path) -> None:
            (d / "rootfs").mkdir()
            (d / "rootfs" / "half").write_bytes(b"x" * 4096)
            os.kill(os.getpid(), signal.SIGKILL)
        pool.create_image_volume({fingerprint!r}, fill)
    """)
    repo = Path(lxdlib.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err.decode()
    return proc.pid


def dead_pid() -> int:
    """The pid of a process that has exited (for hand-made leftovers)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


_STEP = """
import sys, lxdlib
h = lxdlib.Host(sys.argv[1])
exec(sys.argv[2])
"""


def die_at(host: lxdlib.Host, point: str, code: str) -> None:
    """Run ``code`` (with ``h``, a ``Host`` of ``host``'s root) in a new process that kills
    itself at crash point ``point`` (``LXDLIB_CRASHPOINT``); fails if it did not get there."""
    env = {**os.environ, "LXDLIB_CRASHPOINT": point}
    r = subprocess.run([sys.executable, "-c", _STEP, str(host.paths.root), code], env=env,
                       capture_output=True, text=True, timeout=120, start_new_session=True)
    assert r.returncode == -signal.SIGKILL, f"{point} not reached: {r.returncode} {r.stderr}"


_PAUSE = """
import importlib, os, signal, sys, time, lxdlib
mod = importlib.import_module(sys.argv[3])
real, point, how = mod.crashpoint, sys.argv[4], sys.argv[5]
def crashpoint(name):
    if name == point:
        if how == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)  # the test resumes it with SIGCONT
        else:
            time.sleep(float(how))
    real(name)
mod.crashpoint = crashpoint
h = lxdlib.Host(sys.argv[1])
exec(sys.argv[2])
"""


def _stopped(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"
    return False


def run_with_pause(host: lxdlib.Host, module: str, point: str, code: str,
                   how: str = "stop") -> subprocess.Popen[str]:
    """Run ``code`` (with ``h``, a ``Host`` of ``host``'s root) in a new process that stops at
    crash point ``point`` of ``module`` (the name ``module`` calls, replaced in that process
    only): ``how="stop"`` stops it there by ``SIGSTOP`` (returned once it has stopped; the
    caller sends ``SIGCONT``), a number of seconds sleeps there instead (returned at once).
    Stdout and stderr are piped; the caller waits for it and kills it on failure."""
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE, str(host.paths.root), code, module,
                             point, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if how != "stop":
        return proc
    deadline = time.monotonic() + 60
    while not _stopped(proc.pid):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{point} not reached: {proc.returncode} {out} {err}")
        assert time.monotonic() < deadline, f"{point} not reached in 60 s"
        time.sleep(0.02)
    return proc
