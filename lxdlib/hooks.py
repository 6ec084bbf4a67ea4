"""What liblxc runs at a container's start and stop: device work on the host, ephemeral cleanup.

Written into the liblxc config as ``lxc.hook.start-host`` / ``lxc.hook.post-stop`` only for
instances that need them (hooks cost a Python start each). Because liblxc runs them, they follow
every start and stop — ``lxdlib start``, ``lxc-start``, a reboot or poweroff from inside — with no
lxdlib process around. With ``lxc.hook.version = 1`` liblxc passes the facts in the environment
(``LXC_NAME``, ``LXC_HOOK_TYPE``, ``LXC_PID`` for start-host, ``LXC_TARGET`` for post-stop).

Hooks never take the instance lock: the process that started the container may hold it.
A failing start-host hook makes liblxc abort the start; the reason is in ``hooks.log``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .hooklog import HOOK_LOG, command, log_tail, spawn_watcher, write_log

__all__ = ["HOOK_LOG", "command", "log_tail", "main", "post_stop", "spawn_watcher", "start_host"]


def start_host(root: Path, name: str, pid: int) -> None:
    """The devices' start, under the locks of the custom volumes they mount: the hook of a
    reboot from inside takes them itself, as lxdlib's start does (``volumes.hook_locks``)."""
    from .host import Host
    from .instances import Instance
    from .volumes import hook_locks
    ctx = Host(root, create=False).ctx
    inst = Instance(ctx, name)
    dctx = inst.device_context(pid=pid)
    started: list[tuple[str, dict[str, str]]] = []
    from .devices import driver
    try:
        with hook_locks(ctx.paths, name, dctx.devices):
            for dname, dev in sorted(dctx.devices.items()):
                driver(dev["type"]).start(dctx, dname, dev)
                started.append((dname, dict(dev)))
    except BaseException:
        for dname, dev in reversed(started):
            try:
                driver(dev["type"]).stop(dctx, dname, dev)
            except Exception:
                write_log(root, name, f"start-host rollback of {dname}: {traceback.format_exc()}")
        raise


def post_stop(root: Path, name: str, target: str) -> None:
    from .devices import driver
    from .host import Host
    from .instances import Instance
    try:
        inst = Instance(Host(root, create=False).ctx, name)
        dctx = inst.device_context(pid=None)
    except Exception:
        return  # the instance (or its whole root) deleted meanwhile: nothing left to stop
    for dname, dev in sorted(dctx.devices.items()):
        try:
            driver(dev["type"]).stop(dctx, dname, dev)
        except Exception:
            write_log(root, name, f"post-stop of {dname}: {traceback.format_exc()}")
    if dctx.record.ephemeral and target != "reboot":
        # Deleting from inside liblxc's monitor would pull the floor from under it: a detached
        # reaper waits for STOPPED, then deletes under the instance lock.
        subprocess.run(["setsid", "--fork", sys.executable, "-m", "lxdlib.hooks", str(root),
                        "reap", name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, close_fds=True, check=False)


def reap(root: Path, name: str) -> None:
    """Delete an ephemeral instance once it has stopped (unless something restarted it).

    liblxc runs post-stop while the container is STOPPING; STOPPED follows. Seeing it running
    again means a restart (``restart``, a restore) won the race: nothing to do then. A root
    deleted meanwhile is not recreated.
    """
    from . import record, runtime
    from .errors import LxdlibError
    from .state import Paths
    paths = Paths.at(root)
    if not record.exists(paths, name):
        return
    c = runtime.open_container(paths.lxcpath, name)
    deadline = time.monotonic() + 60
    while True:
        state = c.state
        if state == "STOPPED":
            break
        if state in ("RUNNING", "STARTING", "FROZEN", "FREEZING", "THAWED") or \
                time.monotonic() > deadline:
            return
        time.sleep(0.05)
    if not paths.lxcpath.is_dir():
        return
    try:
        from .host import Host
        from .instances import Instance
        inst = Instance(Host(root, create=False).ctx, name)
        # the lock that first finishes what a killed process left: a restart killed after
        # its stop is started again here, not taken for a stop and deleted
        with inst._lock():
            if not inst.exists or not inst.ephemeral or inst.state != "STOPPED":
                return
            inst._delete_locked(inst.record())
    except LxdlibError as e:
        write_log(root, name, f"ephemeral delete: {e}")


def watch(root: Path, name: str, pid: int) -> None:
    """Stand in for the post-stop hook of a container started without one.

    liblxc reads its hooks once, at start: a device hot-plugged later that needs stop-time work
    gets this watcher instead. It waits (pidfd, no polling) for the init it was given to exit and
    then does what post-stop would have done.
    """
    import select
    pidfile = root / "containers" / name / "devices" / "stop-watcher.pid"
    pidfile.parent.mkdir(mode=0o700, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        fd = -1
    try:
        if fd >= 0:
            select.select([fd], [], [])
            os.close(fd)
        post_stop(root, name, "stop")
    finally:
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        sys.stderr.write("usage: python -m lxdlib.hooks <root> [reap <name>]\n")
        return 2
    root = Path(argv[0])
    if len(argv) == 3 and argv[1] == "reap":
        reap(root, argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "watch":
        watch(root, argv[2], int(argv[3]))
        return 0
    name = os.environ.get("LXC_NAME", "")
    hook = os.environ.get("LXC_HOOK_TYPE", "")
    try:
        if hook == "start-host":
            start_host(root, name, int(os.environ["LXC_PID"]))
        elif hook == "post-stop":
            post_stop(root, name, os.environ.get("LXC_TARGET", "stop"))
        else:
            write_log(root, name, f"unknown hook type {hook!r}")
            return 1
    except Exception as e:
        write_log(root, name, f"{hook} failed: {e}\n{traceback.format_exc()}")
        sys.stderr.write(f"lxdlib {hook} hook failed: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
