"""Logging: the host-side effects lxdlib has under the ``lxdlib`` logger, at the levels a user
filters by (DEBUG per effect, INFO per pool or bridge lifecycle, WARNING where a failure is
swallowed), without the library installing handlers or formatting messages nobody reads."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lxdlib
from lxdlib import confined
from lxdlib.network import dhcphosts, dnsmasq, tc
from lxdlib.state import Paths
from lxdlib.storage import create_pool, delete_pool, load_pool
from lxdlib.storage.dir import DirPool
from lxdlib.storage.zfs import _logged

LIB = Path(lxdlib.__file__).parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def records(caplog: pytest.LogCaptureFixture, prefix: str) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records
            if r.name == prefix or r.name.startswith(prefix + ".")]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths.at(tmp_path / "root")
    p.ensure()
    return p


def test_dir_pool_lifecycle_logs(paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    """Creating and deleting a pool is INFO; the volumes made and removed in it are DEBUG, each
    naming the pool and the volume."""
    caplog.set_level(logging.DEBUG, logger="lxdlib")
    pool = create_pool(paths, "logpool", "dir", {})
    pool.create_custom_volume("vol1")
    pool.delete_custom_volume("vol1")
    delete_pool(paths, "logpool")
    got = records(caplog, "lxdlib.storage")
    assert ("lxdlib.storage.pools", logging.INFO,
            "storage pool logpool created (driver dir, config {'source': ''})") in got
    assert ("lxdlib.storage.pools", logging.INFO, "storage pool logpool deleted") in got
    debug = [m for n, lvl, m in got if n == "lxdlib.storage.dir" and lvl == logging.DEBUG]
    base = paths.pools / "logpool"
    assert f"dir pool logpool: created custom volume vol1 at {base / 'custom' / 'vol1'}" in debug
    assert f"dir pool logpool: removed {base / 'custom' / 'vol1'}" in debug


def test_nothing_logged_above_debug_for_routine_work(paths: Paths,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A volume made in an existing pool says nothing at INFO: the default WARNING (or a
    user's INFO) stays quiet for everyday work."""
    create_pool(paths, "quiet", "dir", {})
    caplog.clear()
    caplog.set_level(logging.INFO, logger="lxdlib")
    pool = load_pool(paths, "quiet")
    pool.create_custom_volume("v")
    pool.delete_custom_volume("v")
    assert records(caplog, "lxdlib") == []
    delete_pool(paths, "quiet")


class StuckDirPool(DirPool):
    """A dir pool whose removals fail, as on a filesystem that went read-only."""

    def _remove(self, path: Path) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))


def test_swallowed_cleanup_failure_is_a_warning(paths: Paths,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A failed fill whose temporary volume cannot be removed still raises the fill's error
    (the behaviour is unchanged), and the debris left behind is reported as a WARNING."""
    caplog.set_level(logging.DEBUG, logger="lxdlib")
    create_pool(paths, "stuck", "dir", {})
    pool = StuckDirPool(paths, "stuck", {"source": ""})

    def fill(path: Path) -> None:
        raise RuntimeError("unpack failed")

    with pytest.raises(RuntimeError, match="unpack failed"):
        pool.create_image_volume("f" * 64, fill)
    warnings = [m for n, lvl, m in records(caplog, "lxdlib.storage") if lvl == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "dir pool stuck: cannot remove temporary volume" in warnings[0]
    assert "Operation not permitted" in warnings[0]
    delete_pool(paths, "stuck")  # the pool's directory goes whole, debris included



def test_dnsmasq_host_records_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lxdlib")
    store = dhcphosts.HostStore(tmp_path)
    store.put(dhcphosts.StaticHost("c1/eth0", "00:16:3e:00:00:01", "10.0.0.5", "c1"))
    store.put(dhcphosts.StaticHost("c1/eth1", "00:16:3e:00:00:02", None, "c1"))
    store.forget("c1")
    got = [m for n, lvl, m in records(caplog, "lxdlib.network") if lvl == logging.DEBUG]
    path = tmp_path / dnsmasq.HOSTS_DIR / "c1"
    assert got == [f"dnsmasq hosts file {path} written: c1/eth0",
                   f"dnsmasq hosts file {path} written: c1/eth0, c1/eth1",
                   f"dnsmasq hosts file {path} removed"]


def test_confined_write_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lxdlib.confined")
    confined.write_in_root(tmp_path, "/etc/hostname", b"c1\n")
    got = [m for _, _, m in records(caplog, "lxdlib.confined")]
    assert f"made directory /etc in {tmp_path}" in got
    assert any(m.startswith(f"wrote /etc/hostname in {tmp_path} (3 bytes") for m in got), got


def test_zfs_commands_that_change_something_are_logged(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.DEBUG, logger="lxdlib.storage.zfs")
    _logged(["zfs", "list", "-H", "p/containers"])
    _logged(["zfs", "get", "-H", "mounted", "p"])
    _logged(["zfs", "destroy", "-r", "p/containers/c1"])
    _logged(["zpool", "export", "p"])
    assert [m for _, _, m in records(caplog, "lxdlib.storage.zfs")] == [
        "ran zfs destroy -r p/containers/c1", "ran zpool export p"]


def test_tc_handles_printed_as_tc_does() -> None:
    assert tc._handle(tc.ROOT) == "1:0"
    assert tc._handle(tc.CLASS) == "1:10"
    assert tc._handle(tc.INGRESS) == "ffff:0"


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(LIB)], "lxdlib.")
                  if not m.name.endswith("__main__"))


def test_library_configures_no_handlers() -> None:
    """Importing any part of lxdlib leaves logging alone: handlers and levels are the
    application's choice (the forwarder, a program of its own, sets its up in ``main``)."""
    for name in _modules():
        importlib.import_module(name)
    for name, logger in logging.root.manager.loggerDict.items():
        if (name == "lxdlib" or name.startswith("lxdlib.")) and isinstance(logger,
                                                                             logging.Logger):
            assert logger.handlers == [], name
            assert logger.level == logging.NOTSET, name



def _eager_log_calls(path: Path) -> list[int]:
    """Lines of ``log.debug(f"...")``, ``log.info("..." % x)`` or ``.format`` calls: formatted
    even when the level is off."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS and node.args):
            continue
        target = node.func.value
        if not (isinstance(target, ast.Name) and "log" in target.id.lower()):
            continue
        first = node.args[0]
        eager = isinstance(first, ast.JoinedStr) or (
            isinstance(first, ast.BinOp) and isinstance(first.op, ast.Mod)) or (
            isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute)
            and first.func.attr == "format")
        if eager:
            found.append(node.lineno)
    return found


def test_log_messages_are_formatted_lazily() -> None:
    eager = [f"{path.relative_to(LIB.parent)}:{line}" for path in sorted(LIB.rglob("*.py"))
             for line in _eager_log_calls(path)]
    assert eager == []


def test_eager_call_detector_can_fail(tmp_path: Path) -> None:
    """The check above sees an f-string, a ``%`` and a ``.format`` message, and nothing else."""
    probe = tmp_path / "probe.py"
    probe.write_text('log.debug(f"x {1}")\nlog.info("%s", 1)\nlog.warning("a %s" % 1)\n'
                     '_log.error("{}".format(1))\nprint(f"{1}")\n')
    assert _eager_log_calls(probe) == [1, 3, 4]


def test_forwarder_run_as_a_program_logs_under_lxdlib(tmp_path: Path) -> None:
    """``python -m lxdlib.forwarder`` runs the module as ``__main__``; its records still go
    through the handler ``log_to_stderr`` put on ``lxdlib`` (formatted with time and pid),
    not past it. A forwarder whose instance's init is gone fails its setup and says why."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    status_r, status_w = os.pipe()
    with (tmp_path / "err").open("wb") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "lxdlib.forwarder", "--root", str(tmp_path),
             "--instance", "hlk-logs", "--device", "p1", "--init-pid", str(gone.pid),
             "--listen", "tcp:127.0.0.1:1", "--connect", "tcp:127.0.0.1:1",
             "--pidfile", str(tmp_path / "proxy.p1.pid"), "--status-fd", str(status_w)],
            stderr=err, pass_fds=(status_w,), timeout=30, check=False)
    os.close(status_w)
    with os.fdopen(status_r, "rb") as status:
        said = status.read()  # EOF once the forwarder (the starter's grandchild) exited
    assert proc.returncode == 0
    assert said.startswith(b"error The instance's init"), said
    lines = (tmp_path / "err").read_text().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \[\d+\] error: The instance's init "
                        rf"\(pid {gone.pid}\) is gone", lines[0]), lines
