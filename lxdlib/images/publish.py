"""``publish``: turn an instance (or one of its snapshots) into a unified image.

The tarball is ``metadata.yaml`` (the volume's own, its properties replaced when new ones are
given, or a generated one), then ``rootfs/``, then ``templates/``, written by GNU tar (posix
format with xattrs, sorted, without atime/ctime, so the same content gives the same bytes),
piped through the compressor and hashed in the same pass while it is written into the store:
the fingerprint is the sha256 of the compressed bytes, known the moment the last byte lands.

Ownership is stored as the container sees it. On pools with idmapped mounts (btrfs, dir) the
on-disk ids already are the container's; on FUSE pools (zfs-fuse) an unprivileged instance's
files are shifted on disk by its idmap base, so tar maps each shifted id back
(``--owner-map``/``--group-map``). The compression setting is checked against LXD's list of
algorithms and only level/thread options: ``"zstd -d -f /etc/x -o …"`` is refused before anything
runs (LXD's CVE-2026-28384 / CVE-2026-48755).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import yaml

from .. import transfer
from ..config.schema import is_compression_algorithm
from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    ImageError,
    InvalidArgument,
    NotFound,
    ToolMissing,
    WrongState,
)
from ..fstree import walk_lstat
from ..hostroom import Room, write_all
from ..imagestore import compression as comp
from ..imagestore.store import ImageRecord, validate_alias_name
from ..instance import InstanceCore, get_instance
from ..journal import crashpoint

__all__ = ["build_metadata", "compressor", "publish", "write_tarball"]

if TYPE_CHECKING:
    from typing import IO, Any

    from ..context import Context
    from ..storage.base import PoolDriver

Progress = Callable[[int, int], None]

_CHUNK = 1 << 20
_TAR_OPTIONS = ("--numeric-owner", "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                "--xattrs", "--xattrs-include=*", "--sort=name",
                # holes stay holes: the container's root makes a file of 8 EiB with one
                # truncate, and read in full it held publish (and the instance, stopped) for
                # ever and filled the image store (outside every pool's quota) with zeros
                "--sparse")


def compressor(algorithm: str) -> list[str] | None:
    """The argv compressing stdin to stdout for an ``images.compression_algorithm`` value
    (``None`` for ``none``). ``InvalidArgument`` for anything LXD would not run."""
    if not isinstance(algorithm, str):
        raise InvalidArgument(f"invalid compression algorithm {algorithm!r}")
    is_compression_algorithm(algorithm)
    fields = algorithm.split()
    if fields[0] == "none":
        return None
    if fields[0] == "squashfs":
        raise InvalidArgument("squashfs images cannot be published by lxdlib: use a tar "
                              "compressor (gzip, xz, zstd…) or none")
    return [*comp.compress_argv(fields[0]), *fields[1:]]


def _resolve_source(ctx: Context, source: Any) -> tuple[InstanceCore, str | None]:
    snap: str | None = None
    if isinstance(source, tuple) and len(source) == 2:
        inst, snap = source
        if isinstance(inst, str):
            inst = get_instance(ctx, inst)
    elif isinstance(source, InstanceCore):
        inst = source
    elif isinstance(source, str):
        name, sep, snap_name = source.partition("/")
        if sep and not snap_name:
            raise InvalidArgument(f"invalid publish source {source!r}")
        inst = get_instance(ctx, name)
        snap = snap_name or None
    else:
        raise InvalidArgument("publish takes an Instance, 'name', 'name/snapshot' or "
                              f"(instance, snapshot), not {type(source).__name__}")
    if snap is not None and inst.record().snapshot(snap) is None:
        raise NotFound("snapshot", f"{inst.name}/{snap}")
    return inst, snap


def _read_volume_metadata(volume: Path) -> tuple[dict[str, Any] | None, float]:
    path = volume / "metadata.yaml"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, 0.0
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror} (a symlink is refused)") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path} is not a regular file")
        try:
            data = yaml.safe_load(f.read())
        except yaml.YAMLError as e:
            raise ImageError(f"invalid {path}: {e}") from None
    return (data if isinstance(data, dict) else {}), st.st_mtime


def build_metadata(existing: Mapping[str, Any] | None, architecture: str,
                   properties: Mapping[str, str] | None,
                   expires_at: datetime | None, now: datetime) -> dict[str, Any]:
    """LXD's rule: the volume's metadata with ``properties`` replaced when given (and
    ``expiry_date`` when asked), or a new one with the instance's architecture and now."""
    if existing is not None:
        meta = dict(existing)
        if properties is not None:
            meta["properties"] = dict(properties)
        # as LXD's publish, which takes the instance's own architecture: a metadata edit may
        # have left these empty (the image's metadata.yaml refuses them)
        meta["architecture"] = meta.get("architecture") or architecture
        meta["creation_date"] = meta.get("creation_date") or int(now.timestamp())
    else:
        meta = {"architecture": architecture, "creation_date": int(now.timestamp()),
                "properties": dict(properties or {})}
    if expires_at is not None:
        meta["expiry_date"] = int(expires_at.timestamp())
    return meta


def _shift_maps(rootfs: Path, base: int, size: int, workdir: Path) -> list[str]:
    """tar options mapping each on-disk id in [base, base+size) back to id-base."""
    uids: set[int] = set()
    gids: set[int] = set()
    for _, st in walk_lstat(rootfs):  # any depth the container's root made
        uids.add(st.st_uid)
        gids.add(st.st_gid)
    opts = []
    for flag, ids in (("--owner-map", uids), ("--group-map", gids)):
        lines = [f"+{i} +{i - base}\n" for i in sorted(ids) if base <= i < base + size]
        if lines:
            path = workdir / flag.strip("-")
            path.write_text("".join(lines))
            opts.append(f"{flag}={path}")
    return opts


def _pump(out: IO[bytes], fd: int, hasher: Any, progress: Progress | None,
          where: Path) -> int:
    """Copy the tarball into the image store's file, hashing it. Its size is the instance's
    tree's, so it is counted against a ``hostroom.Room``: ``DiskFull`` before root's reserve
    of the store's filesystem is touched."""
    done = 0
    room = Room()
    while chunk := out.read(_CHUNK):
        hasher.update(chunk)
        write_all(fd, memoryview(chunk), room, where)  # a quota's refusal too: DiskFull
        done += len(chunk)
        if progress is not None:
            progress(done, 0)
    return done


def write_tarball(volume: Path, metadata: bytes, metadata_mtime: float, dest: Path,
                  compress: list[str] | None, shift: tuple[int, int] | None = None,
                  progress: Progress | None = None) -> str:
    """Write the unified tarball of ``volume`` (compressed) to ``dest``; its sha256."""
    tar = shutil.which("tar")
    if tar is None:
        raise ToolMissing("GNU tar is needed to publish an image")
    rootfs = volume / "rootfs"
    if rootfs.is_symlink() or not rootfs.is_dir():
        raise ImageError(f"{rootfs} is not a directory: nothing to publish")
    templates = volume / "templates"
    # beside ``dest`` (the store's temp files), named for this process: a killed publish's
    # is removed with them (one in /tmp was left for good)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f"{os.getpid()}-publish-") as tmp:
        work = Path(tmp)
        (work / "metadata.yaml").write_bytes(metadata)
        os.chmod(work / "metadata.yaml", 0o644)
        os.utime(work / "metadata.yaml", (metadata_mtime, metadata_mtime))
        maps = _shift_maps(rootfs, *shift, work) if shift else []
        members = ["-C", str(volume), "rootfs"]
        if templates.is_dir() and not templates.is_symlink():
            members.append("templates")
        argv = [tar, *_TAR_OPTIONS, *maps, "-cf", "-",
                "-C", str(work), "metadata.yaml", *members]
        env = comp.tool_env()
        hasher = hashlib.sha256()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        procs: list[subprocess.Popen[bytes]] = []
        errors: dict[int, bytes] = {}
        try:
            tar_p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
            procs.append(tar_p)
            assert tar_p.stdout is not None
            out = tar_p.stdout
            if compress is not None:
                comp_p = subprocess.Popen(compress, stdin=tar_p.stdout, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=env)
                procs.append(comp_p)
                tar_p.stdout.close()  # the compressor owns it now
                assert comp_p.stdout is not None
                out = comp_p.stdout
            readers = []
            for p in procs:
                assert p.stderr is not None
                t = threading.Thread(target=lambda p=p: errors.__setitem__(
                    p.pid, p.stderr.read() if p.stderr else b""), daemon=True)
                t.start()
                readers.append(t)
            _pump(out, fd, hasher, progress, dest.parent)
            out.close()
            for p in procs:
                p.wait()
            for t in readers:
                t.join()
            os.fsync(fd)
        except BaseException:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
            raise
        finally:
            os.close(fd)
        # the compressor's own complaint first: tar then only died of a broken pipe
        for p, program in reversed(list(zip(procs, (argv[0], *(compress or [])[:1]),
                                            strict=False))):
            if p.returncode != 0:
                msg = errors.get(p.pid, b"").decode(errors="replace").strip()
                raise ImageError(f"Publish failed: {Path(program).name} exited with "
                                 f"{p.returncode}: {msg[-2000:]}")
    return hasher.hexdigest()


def _volume(inst: InstanceCore, snap: str | None, pool: PoolDriver
            ) -> contextlib.AbstractContextManager[Path]:
    """The volume to read. A snapshot that the pool cannot show as a directory (zfs-fuse has
    no ``.zfs``) is read from a temporary clone named for this process, which the pool's next
    clean-up removes if a kill -9 leaves it (a clone under an ordinary name outlived the kill
    until ``lxdlib recover``)."""
    if snap is None:
        return contextlib.nullcontext(pool.volume_path("containers", inst.name))
    return transfer.readable_snapshot(pool, inst.name, snap)


def publish(ctx: Context, source: Any, *, aliases: Iterable[str] = (),
            compression: str | None = None, properties: Mapping[str, str] | None = None,
            force: bool = False, reuse: bool = False, public: bool = False,
            expires_at: datetime | None = None, progress: Progress | None = None
            ) -> ImageRecord:
    """Publish an instance or a snapshot (``"c1"``, ``"c1/snap0"``, an ``Instance`` or
    ``(instance, "snap0")``) as a unified image; see the module docstring for the format.

    Raises ``WrongState`` for a running instance without ``force`` (with ``force`` it is
    stopped, published and started again), ``AlreadyExists`` when the same image (same
    fingerprint) is already stored ("The image already exists") or an alias is taken without
    ``reuse`` — in every failure nothing is added to the store.
    """
    store = ctx.images
    names = [aliases] if isinstance(aliases, str) else list(aliases)
    for name in names:
        validate_alias_name(name)
    if len(set(names)) != len(names):
        raise InvalidArgument("the same alias is given twice")
    if properties is not None:
        bad = [k for k, v in properties.items() if not isinstance(k, str) or
               not isinstance(v, str)]
        if bad:
            raise InvalidArgument(f"image properties must be strings: {bad}")
    algorithm = compression if compression is not None else \
        (ctx.config.get("images.compression_algorithm") or "gzip")
    compress = compressor(algorithm)
    kind = comp.kind_of_algorithm(algorithm.split()[0])
    table = store.aliases() if names else {}  # no alias: an unreadable table is no bar
    if not reuse:
        for name in names:
            if name in table:
                raise AlreadyExists("image alias", name)
    inst, snap = _resolve_source(ctx, source)
    running = snap is None and inst.state != "STOPPED"
    if running and not force:
        raise WrongState("The instance is currently running. Use --force to have it "
                         "stopped and restarted")
    # stopped and started again under one lock and one intent, as a restart: a kill -9
    # meanwhile leaves it to be started by the next call, and an ephemeral instance is not
    # deleted by the stop (LXD's client clears the flag around it)
    with inst.stopped_meanwhile() if running else contextlib.nullcontext():
        rec = _publish_locked(ctx, inst, snap, compress, kind, properties, expires_at,
                              names if not reuse else [], public, progress)
    if reuse and names:
        from .cache import set_aliases
        set_aliases(ctx, names, rec.fingerprint)
        rec = store.get(rec.fingerprint)
    ctx.events.emit("image-published", rec.fingerprint)
    return rec


def _publish_locked(ctx: Context, inst: InstanceCore, snap: str | None, compress: list[str] | None,
                    kind: str, properties: Mapping[str, str] | None,
                    expires_at: datetime | None, aliases: list[str], public: bool,
                    progress: Progress | None) -> ImageRecord:
    store = ctx.images
    with inst._lock():
        if snap is None and inst.state != "STOPPED":
            raise WrongState(f"The instance {inst.name!r} was started while publishing")
        rec = inst.record()
        pool = inst._pool(rec)
        cfg, _ = inst.expanded(rec)
        shift = None
        privileged = cfg.get("security.privileged", "").lower() in ("true", "1", "yes", "on")
        if not privileged and not pool.supports_idmapped_mounts:
            base = int(rec.config.get("volatile.idmap.base", "0"))
            size = int(rec.config.get("volatile.idmap.size", "65536"))
            if base:
                shift = (base, size)
        with _volume(inst, snap, pool) as volume:
            existing, mtime = _read_volume_metadata(volume)
            now = datetime.now(UTC)
            meta = build_metadata(existing, rec.architecture, properties, expires_at, now)
            data = yaml.safe_dump(meta, sort_keys=True).encode()
            if existing is None:
                mtime = float(meta["creation_date"])
            [temp] = store.temp_paths(1)
            try:
                fp = write_tarball(volume, data, mtime or time.time(), temp, compress, shift,
                                   progress)
                crashpoint("publish.written")
                if store.exists(fp):
                    raise _already(fp)
                try:
                    return store.adopt([temp], fp, filename=f"{fp}{comp.extension(kind)}",
                                       aliases=aliases, public=public)
                except AlreadyExists as e:
                    if e.kind == "image":
                        raise _already(fp) from None
                    raise
            finally:
                temp.unlink(missing_ok=True)


def _already(fp: str) -> AlreadyExists:
    err = AlreadyExists("image", fp)
    err.args = (f"The image already exists: {fp}",)
    return err


