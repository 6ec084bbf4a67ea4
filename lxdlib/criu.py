"""Stateful snapshots, stops and starts: the running processes saved and brought back by CRIU.

python3-lxc has no binding for liblxc's ``migrate``; liblxc's own ``lxc-checkpoint`` tool drives
CRIU for us (``-D dir`` dumps, ``-s`` stops after the dump, ``-r`` restores and starts). The dump
lives in ``<volume>/state`` beside ``rootfs/``, out of the guest's view: a stateful snapshot carries
it inside the snapshot, a stateful stop leaves it for the next ``start``.

CRIU often cannot dump a container (kernel features, vDSO layouts, nested namespaces); every failure
becomes an ``LXCError`` whose message names CRIU and whose tail is CRIU's own log, and the
partial dump is removed, so nothing half-made remains.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import runtime
from .errors import TYPE_CHECKING, LXCError, ToolMissing
from .state import remove_tree

if TYPE_CHECKING:
    # imported where a tool runs: every verb imports this module (through the instance code),
    # few run CRIU (start-up time)
    import subprocess

COMPLETE = ".complete"
_TIMEOUT = 600.0


def require() -> None:
    """CRIU and liblxc's ``lxc-checkpoint`` must be installed."""
    import shutil  # here: it loads bz2 and lzma, which most commands never use
    if shutil.which("criu") is None:
        raise ToolMissing("stateful operations need CRIU, which is not installed "
                          "(Debian package criu)")
    if shutil.which("lxc-checkpoint") is None:
        raise ToolMissing("stateful operations need lxc-checkpoint (Debian package lxc)")


@functools.cache
def check() -> str | None:
    """``None`` when ``criu check`` passes on this host, else what it printed (why not)."""
    import shutil
    if shutil.which("criu") is None:
        return "criu is not installed"
    import subprocess
    try:
        proc = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"criu check could not run: {e}"
    if proc.returncode == 0:
        return None
    return (proc.stdout + proc.stderr).strip() or f"criu check exited with {proc.returncode}"


def _log_tail(directory: Path, names: tuple[str, ...], lines: int = 12) -> str:
    for name in names:
        try:
            text = (directory / name).read_text(errors="replace")
        except OSError:
            continue
        keep = [ln for ln in text.splitlines() if "Error" in ln or "error" in ln] or \
            text.splitlines()
        return "\n".join(keep[-lines:])
    return ""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    import subprocess
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {_TIMEOUT:.0f}s")


def dump(lxcpath: Path, name: str, directory: Path, *, stop: bool) -> None:
    """Dump the running container's processes into the new directory ``directory``.

    On failure the directory is removed and ``LXCError`` says that CRIU failed, with its log.
    """
    require()
    directory.mkdir(mode=0o700)
    argv = ["lxc-checkpoint", "-n", name, "-P", str(lxcpath), "-D", str(directory),
            "-v", "-o", str(directory / "lxc-checkpoint.log")]
    if stop:
        argv.append("-s")
    proc = _run(argv)
    if proc.returncode != 0 or not any(directory.glob("*.img")):
        tail = _log_tail(directory, ("dump.log", "lxc-checkpoint.log")) or proc.stderr.strip()
        remove_tree(directory)
        hint = check()
        if hint:
            tail += f"\n--- criu check ---\n{hint}"
        raise LXCError(f"CRIU could not checkpoint instance {name!r} (stateful "
                       "operations need CRIU to dump its processes)", tail.strip())
    (directory / COMPLETE).touch()


def restore(lxcpath: Path, name: str, directory: Path) -> None:
    """Start the container from a dump made by :func:`dump`."""
    require()
    proc = _run(["lxc-checkpoint", "-r", "-n", name, "-P", str(lxcpath),
                 "-D", str(directory), "-v", "-o", str(directory / "lxc-restore.log")])
    if proc.returncode != 0 or not runtime.wait_state(runtime.open_container(lxcpath, name),
                                                      {"RUNNING"}, 30):
        tail = _log_tail(directory, ("restore.log", "lxc-restore.log")) or proc.stderr.strip()
        raise LXCError(f"CRIU could not restore instance {name!r}", tail.strip())
