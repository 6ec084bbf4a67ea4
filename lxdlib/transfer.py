"""Instance volumes with their snapshots, from one pool (or name) to another.

The cheapest faithful way is chosen per pair of pools:

- within one ``dir``/``btrfs`` pool: the pool's own clones (btrfs snapshots: copy-on-write, the
  cost does not grow with the volume);
- ``btrfs`` to ``btrfs``: ``btrfs send | btrfs receive``, each snapshot sent against the previous
  one, so shared data crosses once;
- ``zfs`` to ``zfs`` (same pool too, so that no copy depends on its source): ``zfs send -i`` chains;
- anything else, or when the files' owners must change (a FUSE pool stores ownership shifted on
  disk): a file copy per snapshot, each one snapshotted on arrival, shifted first.

A running source is read at one point in time: btrfs and zfs through a temporary snapshot, ``dir``
frozen while it is read. Everything made here is either under a temporary name (removed by the
pool's ``cleanup_leftovers`` once this process is dead) or under the destination's final name,
which the caller's intent record (:mod:`lxdlib.journal`) removes after a crash.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import idmap
from .errors import TYPE_CHECKING, StorageError
from .storage.base import PoolDriver, close_volume_dir
from .storage.dir import CUSTOM_SNAPSHOTS, SNAPSHOTS, DirPool
from .storage.loop import TMP, rename_noreplace, run, storage_errors, temp_name

if TYPE_CHECKING:
    from typing import Any

Freeze = Callable[[], contextlib.AbstractContextManager[None]]
#: Whether the source instance runs: a value, or a question asked only by the copy methods whose
#: result depends on it (a clone within a btrfs pool does not; asking liblxc costs an open).
Running = bool | Callable[[], bool]


def _asked(running: Running) -> bool:
    return running() if callable(running) else running


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def is_btrfs(pool: PoolDriver) -> bool:
    return pool.driver == "btrfs"


def is_zfs(pool: PoolDriver) -> bool:
    return pool.driver == "zfs"


# -- reading volumes -------------------------------------------------------------------------------

@contextlib.contextmanager
def readable_snapshot(pool: PoolDriver, name: str, snap: str,
                      kind: str = SNAPSHOTS) -> Iterator[Path]:
    """A directory holding the files of snapshot ``snap`` of ``name`` — an instance's, or with
    ``kind=CUSTOM_SNAPSHOTS`` a custom volume's (zfs-fuse has no ``.zfs``: a temporary
    clone)."""
    if not is_zfs(pool):
        yield pool.volume_path(kind, f"{name}/{snap}")
        return
    z: Any = pool
    # a custom volume's top directory is searchable (0711) and the clone's mount point is in
    # every user's /proc/self/mountinfo: it goes under custom/ (0700), not containers/ (0711)
    # whose volumes close their own top directory (0100)
    parent = "custom" if kind == CUSTOM_SNAPSHOTS else "containers"
    with _zfs_clone(z, z.dataset(kind, f"{name}/{snap}"), parent) as path:
        yield path


@contextlib.contextmanager
def _zfs_clone(z: Any, snapshot: str, parent: str = "containers") -> Iterator[Path]:
    """``snapshot`` cloned and mounted as a temporary volume of ``parent`` (its kind:
    ``containers``, or ``custom`` for a custom volume's, whose top directory is not closed);
    destroyed after."""
    leaf = temp_name(TMP, "read")
    ds = f"{z.root}/{parent}/{leaf}"
    z._zfs("clone", snapshot, ds)
    try:
        z._mount_ds(ds)
        yield z.mountpoint / parent / leaf
    finally:
        z._discard(ds)


@contextlib.contextmanager
def readable_live(pool: PoolDriver, name: str, running: bool,
                  freeze: Freeze = _nothing) -> Iterator[Path]:
    """The live volume's files at one point in time, also while the instance runs."""
    live = pool.volume_path("containers", name)
    if not running:
        yield live
        return
    if is_btrfs(pool):
        with btrfs_temp_snapshot(pool, name) as path:
            yield path
    elif is_zfs(pool):
        z: Any = pool
        with zfs_temp_snapshot(z, name) as snap, _zfs_clone(z, snap) as path:
            yield path
    else:
        with freeze():
            yield live


@contextlib.contextmanager
def btrfs_temp_snapshot(pool: PoolDriver, name: str) -> Iterator[Path]:
    """A read-only snapshot of the live volume under a temporary name (btrfs send needs one)."""
    import btrfsutil
    parent = pool.volume_path(SNAPSHOTS, f"{name}/x").parent
    with storage_errors(f"cannot snapshot {name}"):
        parent.mkdir(mode=0o700, exist_ok=True)
        path = parent / temp_name(TMP, "copy")
        btrfsutil.create_snapshot(pool.volume_path("containers", name), path, read_only=True)
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            btrfsutil.delete_subvolume(path)


@contextlib.contextmanager
def zfs_temp_snapshot(z: Any, name: str) -> Iterator[str]:
    snap = f"{z.dataset('containers', name)}@{temp_name(TMP, 'copy')[1:]}"
    z._zfs("snapshot", snap)
    try:
        yield snap
    finally:
        with contextlib.suppress(StorageError):
            z._zfs_busy_retry("destroy", snap)


def fill(src: Path, dst: Path) -> None:
    """Make the existing directory ``dst`` hold exactly what ``src`` holds (owners, modes,
    xattrs, hard links kept; reflinked where the filesystem can)."""
    from .imagestore.tarball import empty_dir  # here: tarfile is no part of a copy's import
    empty_dir(dst)
    run(["cp", "-a", "--reflink=auto", "--no-target-directory", f"{src}", f"{dst}"])


def shift_rootfs(volume: Path, delta: int) -> None:
    if delta:
        with storage_errors(f"cannot shift the owners under {volume}"):
            idmap.shift_tree(volume / "rootfs", delta)


# -- streams ---------------------------------------------------------------------------------------

def pipe(producer: Sequence[str], consumer: Sequence[str], what: str) -> None:
    """``producer | consumer``; a failure of either raises ``StorageError`` with both stderrs
    (collected in files: a chatty producer must never block on a full stderr pipe).

    ``subprocess`` and ``tempfile`` are imported by the streams alone: ~4 ms of the start of
    a ``copy`` command, whose copy within one pool is a clone, which runs no program."""
    import subprocess
    import tempfile
    with tempfile.TemporaryFile() as perr, tempfile.TemporaryFile() as cerr:
        with subprocess.Popen(list(producer), stdout=subprocess.PIPE, stderr=perr,
                              stdin=subprocess.DEVNULL) as prod:
            assert prod.stdout is not None
            cons = subprocess.run(list(consumer), stdin=prod.stdout, stdout=subprocess.DEVNULL,
                                  stderr=cerr, check=False)
            prod.stdout.close()
            prod.wait()
        if prod.returncode != 0 or cons.returncode != 0:
            perr.seek(0)
            cerr.seek(0)
            detail = (perr.read()[-2000:] + cerr.read()[-2000:]).decode(errors="replace")
            raise StorageError(f"{what} failed: {detail.strip()}")


def run_to_file(argv: Sequence[str], out: Path) -> None:
    """Run a stream producer (``btrfs send``) into the new file ``out``."""
    import subprocess  # here: see ``pipe``
    with open(out, "xb") as f:
        proc = subprocess.run(list(argv), stdout=f, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise StorageError(f"{' '.join(argv)} failed: "
                           f"{proc.stderr.decode(errors='replace').strip()}")


def btrfs_send_argv(snapshot: Path, parent: Path | None = None) -> list[str]:
    return ["btrfs", "send", "-q", *(["-p", str(parent)] if parent else []), str(snapshot)]


def zfs_send_argv(snapshot: str, previous: str | None = None) -> list[str]:
    return ["zfs", "send", *(["-i", "@" + previous.split("@", 1)[1]] if previous else []),
            snapshot]


# -- copying volumes -------------------------------------------------------------------------------

def copy_volume(src_pool: PoolDriver, src: str, dst_pool: PoolDriver, dst: str, *,
                snapshots: Sequence[str] = (), from_snapshot: str | None = None,
                shift: int = 0, running: Running = False, freeze: Freeze = _nothing) -> None:
    """Make ``containers/<dst>`` on ``dst_pool`` with ``snapshots`` (oldest first, same names)
    from ``src`` on ``src_pool`` — its live volume, or ``from_snapshot`` (then no snapshots).

    ``shift`` is added to every owner under the copies' ``rootfs``. On failure nothing of the
    destination remains.
    """
    same = src_pool.name == dst_pool.name
    try:
        if shift == 0 and same and isinstance(src_pool, DirPool):
            _clone_within(src_pool, src, dst, snapshots, from_snapshot, running, freeze)
        elif shift == 0 and is_zfs(src_pool) and is_zfs(dst_pool):
            _zfs_chain(src_pool, src, dst_pool, dst, snapshots, from_snapshot)
        elif shift == 0 and is_btrfs(src_pool) and is_btrfs(dst_pool):
            _btrfs_chain(src_pool, src, dst_pool, dst, snapshots, from_snapshot)
        else:
            _by_files(src_pool, src, dst_pool, dst, snapshots, from_snapshot, shift, running,
                      freeze)
    except BaseException:
        with contextlib.suppress(Exception):
            dst_pool.delete_instance_volume(dst)
        raise


def _clone_within(pool: DirPool, src: str, dst: str, snapshots: Sequence[str],
                  from_snapshot: str | None, running: Running, freeze: Freeze) -> None:
    for snap in snapshots:
        source = pool.volume_path(SNAPSHOTS, f"{src}/{snap}")
        final = pool.volume_path(SNAPSHOTS, f"{dst}/{snap}")
        with storage_errors(f"cannot copy snapshot {src}/{snap}"):
            final.parent.mkdir(mode=0o700, exist_ok=True)

        def make(tmp: Path, source: Path = source) -> None:
            with storage_errors(f"cannot copy snapshot {source}"):
                pool._clone(source, tmp, read_only=True)

        pool._build(final, make, "snapshot", f"{dst}/{snap}")
    if from_snapshot is not None:
        pool.copy_instance_volume(src, dst, snapshot=from_snapshot)
        return
    with freeze() if pool.snapshot_needs_freeze and _asked(running) else _nothing():
        pool.copy_instance_volume(src, dst)


def _zfs_chain(src_pool: PoolDriver, src: str, dst_pool: PoolDriver, dst: str,
               snapshots: Sequence[str], from_snapshot: str | None) -> None:
    """Received straight under the final name (zfs-fuse renames are slow and a dataset cut
    short there is removed by the caller's intent record, as for every copy)."""
    zs: Any = src_pool
    zd: Any = dst_pool
    final = zd.dataset("containers", dst)
    previous: str | None = None
    try:
        for snap in snapshots:
            current = zs.dataset(SNAPSHOTS, f"{src}/{snap}")
            pipe(zfs_send_argv(current, previous), ["zfs", "receive", "-u", final],
                 f"zfs send {current} | zfs receive")
            previous = current
        with contextlib.ExitStack() as stack:
            if from_snapshot is not None:
                live = zs.dataset(SNAPSHOTS, f"{src}/{from_snapshot}")
            else:
                live = stack.enter_context(zfs_temp_snapshot(zs, src))
            pipe(zfs_send_argv(live, previous), ["zfs", "receive", "-u", final],
                 f"zfs send {live} | zfs receive")
            zd._zfs_busy_retry("destroy", f"{final}@{live.split('@', 1)[1]}")
        zd._mount_ds(final)
    except BaseException:
        zd._discard(final)
        raise


def _btrfs_chain(src_pool: PoolDriver, src: str, dst_pool: PoolDriver, dst: str,
                 snapshots: Sequence[str], from_snapshot: str | None) -> None:
    """Snapshots are received straight into their final directory (a read-only subvolume
    cannot move to another directory); the live volume is a writable clone of its received
    copy. A receive cut short leaves only names the caller's intent record removes."""
    import btrfsutil
    d: Any = dst_pool
    recv = d.base / SNAPSHOTS / temp_name(TMP, f"recv-{dst}")
    with storage_errors("cannot prepare a btrfs receive"):
        recv.mkdir(mode=0o700)
    try:
        parent: Path | None = None
        for snap in snapshots:
            source = src_pool.volume_path(SNAPSHOTS, f"{src}/{snap}")
            final = dst_pool.volume_path(SNAPSHOTS, f"{dst}/{snap}")
            with storage_errors(f"cannot prepare snapshot {dst}/{snap}"):
                final.parent.mkdir(mode=0o700, exist_ok=True)
            place_received(receive_btrfs(btrfs_send_argv(source, parent), final.parent), final)
            parent = source
        with contextlib.ExitStack() as stack:
            if from_snapshot is not None:
                live = src_pool.volume_path(SNAPSHOTS, f"{src}/{from_snapshot}")
            else:
                live = stack.enter_context(btrfs_temp_snapshot(src_pool, src))
            received = receive_btrfs(btrfs_send_argv(live, parent), recv)

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create instance volume {dst!r}"):
                btrfsutil.create_snapshot(received, tmp, read_only=False)
            close_volume_dir(tmp, 0)  # its owner is set at the copy's commit

        d._build(dst_pool.volume_path("containers", dst), make, "instance volume", dst)
    finally:
        with contextlib.suppress(Exception):
            d._remove(recv)


def place_received(received: Path, final: Path) -> None:
    """Give a received subvolume its final name (a rename within its own directory)."""
    if received != final:
        with storage_errors(f"cannot place snapshot {final.name!r}"):
            rename_noreplace(received, final)


def receive_btrfs(send: Sequence[str] | None, into: Path, stream: Path | None = None) -> Path:
    """Receive one btrfs stream (from ``send`` or the file ``stream``) into the empty-ish
    directory ``into``, confined to it; return the one subvolume it made."""
    before = set(os.listdir(into))
    argv = ["btrfs", "receive", "-q", "-e", "-C"]
    if stream is not None:
        run([*argv, "-f", str(stream), str(into)])
    else:
        assert send is not None
        pipe(send, [*argv, str(into)], f"{' '.join(send)} | btrfs receive")
    made = sorted(set(os.listdir(into)) - before)
    if len(made) != 1:
        raise StorageError(f"a btrfs stream made {len(made)} subvolumes, expected one")
    return into / made[0]


def _by_files(src_pool: PoolDriver, src: str, dst_pool: PoolDriver, dst: str,
              snapshots: Sequence[str], from_snapshot: str | None, shift: int, running: Running,
              freeze: Freeze) -> None:
    volume = dst_pool.create_instance_volume(dst, None)
    for snap in snapshots:
        with readable_snapshot(src_pool, src, snap) as path:
            fill(path, volume)
        shift_rootfs(volume, shift)
        dst_pool.create_snapshot(dst, snap)
    if from_snapshot is not None:
        with readable_snapshot(src_pool, src, from_snapshot) as path:
            fill(path, volume)
    else:
        with readable_live(src_pool, src, _asked(running), freeze) as path:
            fill(path, volume)
    shift_rootfs(volume, shift)
