"""``lxc export`` and ``lxc import``: an instance with its snapshots as one tarball, in LXD's
backup format, so backups travel between lxdlib and LXD.

Layout: ``backup/index.yaml`` (name, backend, pool, snapshot list, and the instance's and
snapshots' config in LXD's shape, plus lxdlib's own record for an exact round trip),
``backup/container/`` (the volume: ``rootfs/``, ``metadata.yaml``, ``templates/``) and
``backup/snapshots/<snap>/``; with ``optimized`` storage, btrfs send streams instead:
``backup/container.bin`` and ``backup/snapshots/<snap>.bin``, each sent against the previous
snapshot. Owners in the tarball are the container's own ids (a FUSE pool's shifted ids are mapped
back), so a backup does not depend on the host's idmap.

An archive to import is hostile input. Before anything changes, every member is checked: names
under ``backup/`` only, no ``..``, no absolute names, nothing below a symlink member, hard links
inside their own volume, no device nodes outside ``rootfs/dev`` (skipped anyway), a regular
``index.yaml`` of sane size naming valid instance and snapshot names; every config in it (the
instance's and each snapshot's, devices and volatile keys included) is checked as user input.
Extraction then runs GNU tar without the capability to make device nodes, volume by volume. A
btrfs stream is parsed and refused if it does more than such an unpack may (:mod:`.sendstream`:
device nodes, ``trusted.*`` xattrs, subvolumes outside the backup…) before it is received,
confined to a temporary directory; optimized zfs backups are refused (their streams set dataset
properties on the host). What arrives is checked again (a ``rootfs`` must be a real directory)
before it is used. The new instance's record is the commit point, as for a create.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import idmap, journal, record, sendstream, transfer
from .config import devices as devcfg
from .config import expand, names, schema
from .config.text import check_description
from .config.units import ZERO_TIME, format_api_time, parse_api_time, parse_size
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    CorruptArchive,
    ImageError,
    InvalidArgument,
    InvalidConfig,
    LxdlibError,
    NotFound,
    QuotaExceeded,
    ToolMissing,
    UnsafeImage,
    UnsafeStream,
    UnsupportedBackup,
)
from .fstree import walk_lstat
from .hostroom import Room, Unlimited, into_device, pump
from .imagestore import compression
from .imagestore.tarball import (
    check_host_files,
    empty_dir,
    normalise_architecture,
    tar_failure,
)
from .instance import (
    InstanceCore,
    choose_idmap,
    commit_instance,
    expand_with_root,
    fresh_mac,
    new_instance_dir,
    truthy,
)
from .logs import get_logger
from .patterns import Pattern
from .record import InstanceRecord, SnapshotRecord
from .state import create_private, dump_yaml, load_yaml, lock, temp_beside
from .storage.base import close_volume_dir
from .storage.dir import SNAPSHOTS
from .storage.loop import TMP, run, storage_errors, temp_name
from .values import Value, assign

if TYPE_CHECKING:
    from typing import IO, Any

    from .context import Context
    from .storage.base import PoolDriver

    #: what ``check_archived`` returns: profiles, config, local config, devices, snapshots
    CheckedRecord = tuple[list[str], dict[str, str], dict[str, str],
                          dict[str, dict[str, str]], list[SnapshotRecord]]

_log = get_logger("lxdlib.backup")

INDEX = "backup/index.yaml"
MAX_INDEX_SIZE = 4 * 1024 * 1024
# tar keeps owners, modes (setuid too), file capabilities; it cannot make device nodes.
TAR_CAPS = "-all,+chown,+dac_override,+dac_read_search,+fowner,+fsetid,+setfcap"
_SPACE_ERRORS = ("No space left on device", "Disk quota exceeded", "Wrote only")
_SED_SPECIAL = Pattern(r"([\\.\[\]*^$])")


# -- export ----------------------------------------------------------------------------------------

def _index(inst: InstanceCore, rec: InstanceRecord, snaps: Sequence[SnapshotRecord],
           pool: PoolDriver, optimized: bool) -> dict[str, Any]:
    """index.yaml: LXD's fields (so ``lxc import`` on LXD reads it) and lxdlib's record."""
    cfg, devs = inst.expanded(rec)

    def snapshot(s: SnapshotRecord) -> dict[str, Any]:
        scfg, sdevs = inst.ctx.expand(s.profiles, s.config, s.devices) \
            if all(inst.ctx.profiles.exists(p) for p in s.profiles) else (s.config, s.devices)
        return {"name": s.name, "architecture": rec.architecture, "config": dict(s.config),
                "devices": {k: dict(v) for k, v in s.devices.items()},
                "ephemeral": False, "profiles": list(s.profiles), "stateful": s.stateful,
                "description": s.description, "created_at": format_api_time(s.created_at),
                "expires_at": format_api_time(s.expires_at), "last_used_at": ZERO_TIME,
                "expanded_config": dict(scfg), "expanded_devices": dict(sdevs), "size": -1}

    own = rec.to_dict()
    own["snapshots"] = [s.to_dict() for s in snaps]
    return {
        "name": rec.name, "backend": pool.driver, "pool": pool.name, "optimized": optimized,
        "optimized_header": False, "type": "container",
        "snapshots": [s.name for s in snaps],
        "config": {
            "container": {
                "name": rec.name, "architecture": rec.architecture, "type": "container",
                "config": dict(rec.config), "devices": {k: dict(v) for k, v in
                                                        rec.devices.items()},
                "ephemeral": rec.ephemeral, "profiles": list(rec.profiles), "stateful": False,
                "description": rec.description, "created_at": format_api_time(rec.created_at),
                "last_used_at": format_api_time(rec.last_used_at), "expanded_config": cfg,
                "expanded_devices": devs, "status": inst.status, "location": "none",
                "project": "default"},
            "snapshots": [snapshot(s) for s in snaps],
            "pool": {"name": pool.name, "driver": pool.driver, "config": dict(pool.config),
                     "description": "", "status": "Created", "locations": ["none"]},
            "volume": {"name": rec.name, "type": "container", "content_type": "filesystem",
                       "config": {}, "description": "", "location": "none"},
        },
        "lxdlib": {"record": own},
    }


def _sed(text: str) -> str:
    return _SED_SPECIAL.sub(r"\\\1", text)


def _sed_repl(text: str) -> str:
    return text.replace("\\", "\\\\").replace("&", "\\&")


def owner_maps(work: Path, trees: Sequence[Path], base: int) -> list[str]:
    """``--owner-map``/``--group-map`` files that turn a FUSE pool's shifted owners back into
    the container's own ids."""
    uids: set[int] = set()
    gids: set[int] = set()
    for tree in trees:
        for _, st in walk_lstat(tree):  # any depth the container's root made
            uids.add(st.st_uid)
            gids.add(st.st_gid)
    out = []
    for kind, ids in (("owner", uids), ("group", gids)):
        path = work / f"{kind}.map"
        path.write_text("".join(f"+{i} +{i - base}\n" for i in sorted(ids) if i >= base))
        out.append(f"--{kind}-map={path}")
    return out


def export_instance(inst: InstanceCore, path: str | os.PathLike[str] | None = None, *,
                    instance_only: bool = False, optimized: bool = False,
                    compression_algorithm: str = "gzip") -> Path:
    """Write ``inst`` (and its snapshots unless ``instance_only``) to ``path`` (default
    ``<name>.tar.gz`` etc.); a running instance is read at one point in time. The file appears
    complete or not at all."""
    if compression_algorithm == "none":
        compress = None
        ext = ".tar"
    else:
        compress = compression.compress_argv(compression_algorithm)
        ext = compression.extension(compression.kind_of_algorithm(compression_algorithm))
    out = Path(path) if path is not None else Path(f"{inst.name}{ext}")
    out = out.absolute()
    if out.is_dir():
        out = out / f"{inst.name}{ext}"
    if not out.parent.is_dir():
        raise NotFound("directory", str(out.parent))
    device = into_device(out)  # ``/dev/stdout``, a FIFO: written into, never renamed over
    ctx = inst.ctx
    paths = ctx.paths
    with inst._lock():
        rec = inst.record()
        pool = inst._pool(rec)
        if optimized and not transfer.is_btrfs(pool):
            raise InvalidArgument("optimized storage backups are made from btrfs pools only "
                                  f"(pool {pool.name!r} is {pool.driver})")
        snaps = [] if instance_only else list(rec.snapshots)
        running = inst.state != "STOPPED"
        tmp_out = out if device else temp_beside(out)
        work = paths.instance_dir(inst.name) / temp_name(TMP, "export")
        journal.begin(paths, inst.name, "temp-snapshot",
                      files=[] if device else [str(tmp_out)], dirs=[str(work)])
        try:
            (work / "backup" / "snapshots").mkdir(parents=True, mode=0o700)
            (work / "backup" / "index.yaml").write_text(
                dump_yaml(_index(inst, rec, snaps, pool, optimized)))
            with contextlib.ExitStack() as stack:
                if optimized:
                    members = _optimized_streams(stack, pool, inst.name, snaps, work)
                    pairs: list[tuple[Path, str]] = []
                else:
                    members = []
                    pairs = [(stack.enter_context(transfer.readable_snapshot(pool, inst.name,
                                                                             s.name)),
                              f"backup/snapshots/{s.name}") for s in snaps]
                    from .copy import frozen_for_copy
                    pairs.append((stack.enter_context(transfer.readable_live(
                        pool, inst.name, running, lambda: frozen_for_copy(ctx, inst.name))),
                        "backup/container"))
                base = 0 if truthy(inst.expanded(rec)[0].get("security.privileged")) or \
                    pool.supports_idmapped_mounts else int(rec.config.get(
                        "volatile.idmap.base", "0"))
                maps = owner_maps(work, [p for p, _ in pairs], base) if base else []
                _write_tar(tmp_out, work, members, pairs, maps, compress,
                           xattrs=not transfer.is_zfs(pool), device=device)
            if not device:
                os.replace(tmp_out, out)
        finally:
            if not device:
                with contextlib.suppress(FileNotFoundError):
                    tmp_out.unlink()
            shutil.rmtree(work, ignore_errors=True)
            journal.end(paths, inst.name)
    ctx.events.emit("instance-exported", inst.name, path=str(out))
    return out


def _optimized_streams(stack: contextlib.ExitStack, pool: PoolDriver, name: str,
                       snaps: Sequence[SnapshotRecord], work: Path) -> list[str]:
    """btrfs send streams, each against the previous snapshot (LXD's optimized layout)."""
    members = []
    parent: Path | None = None
    for s in snaps:
        snap = pool.volume_path(SNAPSHOTS, f"{name}/{s.name}")
        transfer.run_to_file(transfer.btrfs_send_argv(snap, parent),
                             work / "backup" / "snapshots" / f"{s.name}.bin")
        members.append(f"backup/snapshots/{s.name}.bin")
        parent = snap
    live = stack.enter_context(transfer.btrfs_temp_snapshot(pool, name))
    transfer.run_to_file(transfer.btrfs_send_argv(live, parent), work / "backup" /
                         "container.bin")
    members.append("backup/container.bin")
    return members


def _write_tar(out: Path, work: Path, members: Sequence[str], pairs: Sequence[tuple[Path, str]],
               maps: Sequence[str], compress: Sequence[str] | None, xattrs: bool,
               device: bool = False) -> None:
    tar = shutil.which("tar")
    if tar is None:
        raise ToolMissing("GNU tar is needed to export instances")
    transforms = [f"--transform=s\x01^{_sed(str(p).lstrip('/'))}\x01{_sed_repl(prefix)}\x01S"
                  for p, prefix in sorted(pairs, key=lambda x: -len(str(x[0])))]
    argv = [tar, "-c", "-f", "-", "--numeric-owner", "--sparse",
            *(["--xattrs", "--xattrs-include=*"] if xattrs else []), *maps, *transforms,
            "-C", str(work), "backup/index.yaml", *members]
    for p, _ in pairs:
        argv += ["-C", "/", str(p).lstrip("/")]
    env = compression.tool_env()
    # stderr into files: tar warns once per file on some filesystems, and a full pipe would
    # stop it for good
    # ``out`` is a fresh name in a directory that may be a host user's: made here, 0600.
    # The archive passes through this process, counted against a ``hostroom.Room``: its size
    # is the container's to choose, and tar writing straight into the file, as root, wrote
    # into the filesystem's root reserve before it failed
    # A device or a FIFO (``device``) is opened and written into, taking no room on a disk.
    made = (os.open(out, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC) if device
            else create_private(out))
    with os.fdopen(made, "wb") as f, tempfile.TemporaryFile() as terr, \
            tempfile.TemporaryFile() as zerr:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            tp = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=terr,
                                  stdin=subprocess.DEVNULL, env=env)
            procs.append(tp)
            assert tp.stdout is not None
            src = tp.stdout
            if compress is not None:
                zp = subprocess.Popen(list(compress), stdin=tp.stdout, stdout=subprocess.PIPE,
                                      stderr=zerr, env=env)
                procs.append(zp)
                tp.stdout.close()  # the compressor's now: tar sees it go if it dies
                assert zp.stdout is not None
                src = zp.stdout
            pump(src.fileno(), f.fileno(), Unlimited() if device else Room(), out.parent)
            src.close()
            for proc in procs:
                proc.wait()
        except BaseException:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # our own children, by pid
                proc.wait()
            raise
        code = tp.returncode
        zcode = procs[1].returncode if compress is not None else 0
        f.flush()
        if not device:  # a device or a pipe has nothing to sync (EINVAL)
            os.fsync(f.fileno())
        # tar exits 1 when a file changed while read (sockets, logs of a frozen dir pool)
        if code not in (0, 1) or zcode != 0:
            terr.seek(0)
            zerr.seek(0)
            detail = (terr.read()[-3000:] + zerr.read()[-1000:]).decode(errors="replace")
            if any(s in detail for s in _SPACE_ERRORS):
                raise QuotaExceeded(f"cannot write the backup {out}: out of space")
            raise LxdlibError(f"cannot write the backup: {detail.strip()}")


# -- reading an archive ----------------------------------------------------------------------------

class BackupIndex(Value, frozen=True):
    """What an archive holds, checked: its index and which volumes it carries."""

    _fields = ("name", "pool", "backend", "optimized", "snapshots", "record")
    __slots__ = _fields

    name: str
    pool: str
    backend: str
    optimized: bool
    snapshots: tuple[str, ...]
    record: InstanceRecord

    def __init__(self, name: str, pool: str, backend: str, optimized: bool,
                 snapshots: tuple[str, ...], record: InstanceRecord) -> None:
        assign(self, "name", name)
        assign(self, "pool", pool)
        assign(self, "backend", backend)
        assign(self, "optimized", optimized)
        assign(self, "snapshots", snapshots)
        assign(self, "record", record)


def _member(name: str) -> str:
    """The member name as tar would use it; refuse anything that could land outside."""
    if "\0" in name or name.startswith("/"):
        raise UnsafeImage(f"backup member {name!r}: absolute or NUL in its name")
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    parts = name.split("/")
    if any(p == ".." for p in parts):
        raise UnsafeImage(f"backup member {name!r} contains '..'")
    return "/".join(p for p in parts if p not in ("", "."))


class _Stream:
    """The tar stream of an archive, decompressed by a child process where needed."""

    def __init__(self, path: Path, shown: Path) -> None:
        kind = compression.detect(path)
        if kind not in compression.TAR_KINDS:
            raise ImageError(f"{shown} is not a (compressed) tarball")
        argv = compression.decompress_argv(kind)
        self.proc: subprocess.Popen[bytes] | None = None
        if argv is None:
            self.stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in close()
            return
        with open(path, "rb") as src:
            self.proc = subprocess.Popen(argv, stdin=src, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, env=compression.tool_env())
        assert self.proc.stdout is not None
        self.stream = self.proc.stdout

    def close(self) -> None:
        self.stream.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _part(name: str, member: tarfile.TarInfo | None = None) -> str:
    """Which volume a member belongs to: ``container``, ``snapshots/<s>``, a stream's own
    name (``backup/container.bin``, ``backup/snapshots/<s>.bin``), or ``""`` for the
    ``backup/snapshots`` directory itself."""
    parts = name.split("/")
    if name == "backup/container.bin" or (len(parts) == 3 and parts[1] == "snapshots"
                                          and parts[2].endswith(".bin")
                                          and (member is None or member.isreg())):
        return name
    if parts[1:2] == ["container"]:
        return "container"
    if parts[1:2] == ["snapshots"]:
        return f"snapshots/{parts[2]}" if len(parts) >= 3 else ""
    raise UnsafeImage(f"unexpected backup member {name!r}")


def _check_member(m: tarfile.TarInfo, name: str, part: str, links: set[str]) -> None:
    parts = name.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise UnsafeImage(f"backup member {name!r} lies below a symlink")
    if part.startswith("snapshots/"):
        names.validate_snapshot_name(part.split("/", 1)[1])
    elif part.endswith(".bin") and part != "backup/container.bin":
        names.validate_snapshot_name(parts[2][:-4])
    top_of_volume = name in ("backup/container", "backup/snapshots") or (
        part.startswith("snapshots/") and len(parts) == 3)
    if top_of_volume and not m.isdir():
        raise UnsafeImage(f"backup member {name!r} must be a directory")
    depth = 3 if part == "container" else 4
    if part and not part.endswith(".bin") and len(parts) == depth:
        if parts[-1] in ("rootfs", "templates") and not m.isdir():
            raise UnsafeImage(f"backup member {name!r} must be a directory")
        if parts[-1] == "metadata.yaml" and not m.isreg():
            raise UnsafeImage(f"backup member {name!r} must be a regular file")
    if part.endswith(".bin") and not m.isreg():
        raise UnsafeImage(f"backup member {name!r} is not a regular file")
    if m.islnk():
        target = _member(m.linkname)
        if not target.startswith("backup/") or _part(target) != part:
            raise UnsafeImage(f"hard link {name!r} points outside its volume")
        tparts = target.split("/")
        if any("/".join(tparts[:i]) in links for i in range(1, len(tparts) + 1)):
            raise UnsafeImage(f"hard link {name!r} points through a symlink")
    elif (m.ischr() or m.isblk()) and "/rootfs/dev/" not in name:
        raise UnsafeImage(f"backup member {name!r} is a device node")
    elif not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo() or m.ischr()
              or m.isblk()):
        raise UnsafeImage(f"backup member {name!r} has an unknown type")


def scan(path: str | os.PathLike[str], *, shown: Path | None = None) -> BackupIndex:
    """Check every member of the archive at ``path`` and read its index; nothing is written.
    ``shown``: the name errors give it (the file the user named, when ``path`` is the
    descriptor an import holds it by)."""
    p = Path(path)
    shown = shown or p
    if not p.is_file():
        raise NotFound("backup file", str(shown))
    index: bytes | None = None
    links: set[str] = set()
    seen: set[str] = set()
    source = _Stream(p, shown)
    try:
        with tarfile.open(fileobj=source.stream, mode="r|") as tf:
            for m in tf:
                name = _member(m.name)
                if name in ("", "backup"):
                    continue
                if not name.startswith("backup/"):
                    raise UnsafeImage(f"backup member {name!r} is outside backup/")
                if name == INDEX:
                    if not m.isreg():
                        raise UnsafeImage("backup/index.yaml is not a regular file")
                    if m.size > MAX_INDEX_SIZE:
                        raise UnsafeImage("backup/index.yaml is too large")
                    if index is not None:
                        raise UnsafeImage("the backup holds backup/index.yaml twice")
                    f = tf.extractfile(m)
                    assert f is not None
                    index = f.read()
                    continue
                part = _part(name, m)
                _check_member(m, name, part, links)
                if m.issym():
                    links.add(name)
                if part:
                    seen.add(part)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptArchive(f"cannot read the backup {shown}: {e}") from None
    finally:
        source.close()
    if index is None:
        raise ImageError("the backup has no backup/index.yaml")
    return _parse_index(index, seen)


def _parse_index(data: bytes, seen: set[str]) -> BackupIndex:
    try:
        doc = load_yaml(data)
    except Exception as e:
        raise ImageError(f"backup/index.yaml is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ImageError("backup/index.yaml must be a mapping")
    name = doc.get("name")
    if not isinstance(name, str):
        raise ImageError("backup/index.yaml names no instance")
    names.validate_instance_name(name)
    if doc.get("type", "container") != "container":
        raise ImageError(f"backups of type {doc.get('type')!r} are not supported")
    snaps = doc.get("snapshots") or []
    if not isinstance(snaps, list) or not all(isinstance(s, str) for s in snaps):
        raise ImageError("backup/index.yaml: snapshots must be a list of names")
    for s in snaps:
        names.validate_snapshot_name(s)
    if len(set(snaps)) != len(snaps):
        raise ImageError("backup/index.yaml lists a snapshot twice")
    optimized = bool(doc.get("optimized"))
    if optimized:
        want = {"backup/container.bin"} | {f"backup/snapshots/{s}.bin" for s in snaps}
    else:
        want = {"container"} | {f"snapshots/{s}" for s in snaps}
    have = set(seen)
    if want - have:
        raise ImageError("the backup lacks " + ", ".join(sorted(want - have)))
    if have - want:
        raise UnsafeImage("the backup holds volumes its index does not list: "
                          + ", ".join(sorted(have - want)))
    rec = _record_from_index(doc, name, snaps)
    return BackupIndex(name=name, pool=str(doc.get("pool") or ""),
                       backend=str(doc.get("backend") or ""), optimized=optimized,
                       snapshots=tuple(snaps), record=rec)


def _time(value: Any) -> dt.datetime | None:
    try:
        return parse_api_time(value)
    except ValueError:
        raise ImageError(f"backup/index.yaml: bad time {value!r}") from None


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImageError(f"backup/index.yaml: {what} must be a mapping")
    return {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in value.items()}


def _devices(value: Any) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImageError("backup/index.yaml: devices must be a mapping")
    return {str(k): _strings(v, f"device {k}") for k, v in value.items()}


def _record_from_index(doc: dict[str, Any], name: str, snaps: list[str]) -> InstanceRecord:
    """lxdlib's own record when the backup is lxdlib's, else LXD's instance shape."""
    own = (doc.get("lxdlib") or {}).get("record") if isinstance(doc.get("lxdlib"), dict) \
        else None
    try:
        if isinstance(own, dict):
            rec = InstanceRecord.from_dict(own)
        else:
            cfg = (doc.get("config") or {}) if isinstance(doc.get("config"), dict) else {}
            inst = cfg.get("container") or cfg.get("instance") or {}
            if not isinstance(inst, dict):
                raise ImageError("backup/index.yaml: config.container must be a mapping")
            rec = InstanceRecord(
                name=name, architecture=str(inst.get("architecture") or "x86_64"),
                created_at=_time(inst.get("created_at")) or record.now(),
                pool=str(doc.get("pool") or ""), profiles=[str(p) for p in
                                                            inst.get("profiles") or []],
                config=_strings(inst.get("config"), "config"),
                devices=_devices(inst.get("devices")),
                description=str(inst.get("description") or ""),
                ephemeral=bool(inst.get("ephemeral")),
                last_used_at=_time(inst.get("last_used_at")))
            by_name = {str(s.get("name", "")).split("/")[-1]: s
                       for s in cfg.get("snapshots") or [] if isinstance(s, dict)}
            for s in snaps:
                d = by_name.get(s, {})
                rec.snapshots.append(SnapshotRecord(
                    name=s, created_at=_time(d.get("created_at")) or record.now(),
                    expires_at=_time(d.get("expires_at")), stateful=bool(d.get("stateful")),
                    description=str(d.get("description") or ""),
                    config=_strings(d.get("config"), "snapshot config"),
                    devices=_devices(d.get("devices")),
                    profiles=[str(p) for p in d.get("profiles") or rec.profiles]))
    except LxdlibError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"backup/index.yaml: malformed instance config: {e}") from None
    if [s.name for s in rec.snapshots] != snaps:
        by = {x.name: x for x in rec.snapshots}
        rec.snapshots = [by.get(n) or SnapshotRecord(name=n, created_at=record.now(),
                                                     config=dict(rec.config),
                                                     devices=dict(rec.devices),
                                                     profiles=list(rec.profiles))
                         for n in snaps]
    for x in rec.snapshots:
        names.validate_snapshot_name(x.name)
    return rec


# -- import ----------------------------------------------------------------------------------------

def _choose_pool(ctx: Context, idx: BackupIndex, pool: str | None) -> str:
    if pool is not None:
        ctx.pool(pool)  # NotFound
        return pool
    have = ctx.pool_names()
    if idx.pool in have:
        return idx.pool
    try:
        _, devs = ctx.expand(idx.record.profiles, {}, {})
        root = expand.root_disk(devs)[1].get("pool", "")
    except LxdlibError:
        root = ""
    if root in have:
        return root
    if "default" in have:
        return "default"
    raise NotFound("storage pool", idx.pool or "default",
                   "the backup's pool does not exist here and there is no default pool")


def import_backup(ctx: Context, path: str | os.PathLike[str], name: str | None = None, *,
                  pool: str | None = None, allow_root_equivalent: bool = False) -> InstanceCore:
    """``lxc import <file> [<name>]``: a new instance from a backup made by ``export`` (here
    or by LXD). Everything is checked first; on any refusal nothing has changed.

    An archive is hostile input, whoever hands it over: a record (or a snapshot's) carrying
    a root-equivalent key or a device reaching host resources (``root_equivalent_grants``:
    a ``raw.lxc`` hook runs as host root at the first start, a ``disk`` on ``/etc`` shows the
    host's files) is refused unless ``allow_root_equivalent`` — host root's decision, as it
    is for an instance from another host (``migrate.receive_instance``)."""
    # the target's leftovers are settled under its lock below; no scan of every instance
    given = Path(path).absolute()
    if not given.is_file():
        raise NotFound("backup file", str(given))
    # Read through one descriptor from the check to the last unpack: the file may be in a
    # directory a host user can write, who could otherwise put another archive under its name
    # once this one passed the checks. ``/dev/fd/<n>`` opens that same file again, here and
    # in the ``tar`` children that are given the descriptor.
    fd = os.open(given, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _import_pinned(ctx, Path(f"/dev/fd/{fd}"), given, name, pool,
                              allow_root_equivalent)
    finally:
        os.close(fd)


def _import_pinned(ctx: Context, archive: Path, given: Path, name: str | None,
                   pool: str | None, allow_root_equivalent: bool) -> InstanceCore:
    idx = scan(archive, shown=given)
    if not allow_root_equivalent:
        refuse_root_equivalent(idx.record, "a backup", "lxdlib import --allow-root-equivalent, "
                               "import_backup(allow_root_equivalent=True)")
    if idx.optimized and idx.backend != "btrfs":
        # a zfs stream carries dataset properties (mountpoint, setuid, devices…) that would be
        # set on the host; only btrfs streams are checked (sendstream) and received
        raise UnsupportedBackup(f"optimized {idx.backend or 'unknown'} backups cannot be "
                                "imported (only optimized btrfs backups are); export it again "
                                "without --optimized-storage")
    target = name or idx.name
    names.validate_instance_name(target)
    rec = idx.record
    prof, checked, local_cfg, local_devs, snapshots = check_archived(ctx, rec)
    pool_name = _choose_pool(ctx, idx, pool)
    exp_cfg, exp_devs, root = expand_with_root(ctx, prof, local_cfg, local_devs, pool_name)
    pool_name = root["pool"]
    dst_pool = ctx.pool(pool_name)
    if idx.optimized and not transfer.is_btrfs(dst_pool):
        raise InvalidArgument(f"an optimized {idx.backend} backup can only be imported into a "
                              f"btrfs pool (pool {pool_name!r} is {dst_pool.driver})")
    size = parse_size(root["size"]) if root.get("size") else None
    volatile = {k: v for k, v in checked.items() if k.startswith("volatile.")
                and not k.startswith(("volatile.idmap.", "volatile.last_state."))
                and k != "volatile.apply_template"}
    paths = ctx.paths
    # a second instance from the backup of one that still exists (``import b.tar new``) gets
    # its own MACs: the original's would clash with it on the network. A restore (the
    # original's name free again) keeps them, and with them its DHCP lease.
    fresh = target != idx.name and record.exists(paths, idx.name)
    if fresh:
        volatile = _fresh_volatile(ctx, volatile, exp_devs)
    with lock(paths, "instance", target):
        from .instance import recover_leftover
        recover_leftover(ctx, target)
        if record.exists(paths, target) or paths.instance_dir(target).exists():
            raise AlreadyExists("instance", target)
        with new_instance_dir(ctx, target, dst_pool) as inst_dir:
            journal.begin(paths, target, "import", pools=[pool_name], target_pool=pool_name)
            if not truthy(exp_cfg.get("security.privileged")):
                base, isize = choose_idmap(ctx, target, exp_cfg, ctx.facts().idmap)
                volatile["volatile.idmap.base"] = str(base)
                volatile["volatile.idmap.size"] = str(isize)
            shift = 0 if truthy(exp_cfg.get("security.privileged")) or \
                dst_pool.supports_idmapped_mounts else int(volatile["volatile.idmap.base"])
            if idx.optimized:
                _receive_optimized(archive, idx, dst_pool, target, inst_dir)
            else:
                _extract_volumes(archive, idx, dst_pool, target, shift)
            if size is not None:
                dst_pool.set_quota("containers", target, size)
            new = InstanceRecord(
                name=target, architecture=rec.architecture, created_at=rec.created_at,
                pool=pool_name, profiles=prof, config={**local_cfg, **volatile},
                devices=local_devs, description=rec.description, ephemeral=rec.ephemeral,
                last_used_at=rec.last_used_at,
                snapshots=[s.evolve(config={
                    **({k: v for k, v in s.config.items() if not _identity_key(k)} if fresh
                       else s.config),
                    **{k: v for k, v in volatile.items()
                       if k.startswith("volatile.idmap.") or (fresh and _identity_key(k))}})
                    for s in snapshots])
            inst = commit_instance(ctx, new)
    ctx.events.emit("instance-created", target, origin=str(given))
    return inst


_MAC = Pattern(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def _identity_key(key: str) -> bool:
    """The volatile keys that would clash with the original's on the network: its MACs."""
    return key.startswith("volatile.") and key.endswith(".hwaddr")


def _fresh_volatile(ctx: Context, volatile: dict[str, str],
                    devices: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The archive's volatile keys for a second instance beside the original: a new MAC for
    each nic that had one (free on the nic's network, ``fresh_mac``); the rest (its uuid, as
    LXD keeps it on import) as they are."""
    return {k: fresh_mac(ctx, devices.get(k[len("volatile."):-len(".hwaddr")], {}))
            if _identity_key(k) else v for k, v in volatile.items()}


def archive_config(config: dict[str, str]) -> dict[str, str]:
    """A config from the archive, checked as a user's: its own keys by the schema; volatile
    keys kept only when the schema knows them (else another LXD's internal state: dropped) and
    their values pass it (no line breaks; a MAC where liblxc is given one)."""
    out = schema.validate_instance_config(
        {k: v for k, v in config.items() if not k.startswith("volatile.")})
    for key, value in config.items():
        if not key.startswith("volatile."):
            continue
        try:
            schema.spec_for(key)
        except InvalidConfig:
            continue
        out.update(schema.validate_instance_config({key: value}))
        if key.endswith(".hwaddr") and value and not _MAC.fullmatch(value):
            raise InvalidConfig(key, "Invalid MAC address, must be 6 bytes of hex separated "
                                "by colons", value)
    return out


def check_archived(ctx: Context, rec: InstanceRecord) -> CheckedRecord:
    """An instance record that came from elsewhere — a backup's index, a migration stream's
    header — checked as a user's input before anything is made from it: its profiles exist,
    its description, config (``archive_config``), devices and snapshots (``archive_snapshot``)
    are valid. The one place both imports check what they are given.

    Returns, in this order: the profiles; every config key that passed, volatile ones
    included; that config without its volatile keys (what the new instance is given as its
    own); the devices; the snapshots."""
    profiles = ctx.check_profiles(rec.profiles)
    try:  # shown by list, info and templates: a known name, as LXD requires
        normalise_architecture(rec.architecture)
    except ImageError:
        raise InvalidConfig("architecture", "unknown architecture", rec.architecture) from None
    check_description(rec.description, "the instance")
    checked = archive_config(rec.config)
    return (profiles, checked,
            {k: v for k, v in checked.items() if not k.startswith("volatile.")},
            {n: devcfg.validate_device(n, d) for n, d in rec.devices.items()},
            [archive_snapshot(ctx, s) for s in rec.snapshots])


#: Config keys whose mere presence hands a container more than an unprivileged one has
#: (docs/security.md, "Root-equivalent keys and device options").
_ROOT_KEYS = ("raw.lxc", "raw.idmap", "raw.seccomp", "security.idmap.base",
              "security.syscalls.allow", "linux.kernel_modules")


def root_equivalent_grants(config: Mapping[str, str],
                           devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What in ``config`` and ``devices`` is a root-equivalent grant or reaches a host
    resource: host root's decision, so never to be taken from another host's stream."""
    found = [k for k in _ROOT_KEYS if config.get(k, "").strip()]
    if truthy(config.get("security.privileged")):
        found.append("security.privileged")
    if config.get("security.syscalls.deny_default", "").strip().lower() in (
            "false", "0", "no", "off"):
        found.append("security.syscalls.deny_default")
    for name, dev in devices.items():
        kind = dev.get("type", "")
        if kind in ("unix-char", "unix-block", "proxy") or \
                (kind == "disk" and dev.get("source", "").startswith("/")) or \
                (kind == "nic" and dev.get("nictype") == "physical"):
            found.append(f"device {name!r} ({kind})")
    return found


def refuse_root_equivalent(rec: InstanceRecord, source: str, allow: str) -> None:
    """``InvalidConfig`` naming every root-equivalent grant (``root_equivalent_grants``) of
    ``rec`` and its snapshots: ``source`` says where the record came from, ``allow`` how host
    root accepts it."""
    found = root_equivalent_grants(rec.config, rec.devices)
    for snap in rec.snapshots:
        found += [f"snapshot {snap.name!r}: {g}"
                  for g in root_equivalent_grants(snap.config, snap.devices)]
    if found:
        raise InvalidConfig(found[0], f"a root-equivalent setting from {source} is refused ("
                            + ", ".join(found) + f"); host root here may accept it ({allow}), "
                            "or set it after the import")


def archive_snapshot(ctx: Context, snap: SnapshotRecord) -> SnapshotRecord:
    """A snapshot's record from the archive, checked as ``restore`` will use it: profiles that
    exist, config and devices valid on their own and together (one root disk, one disk per
    path…). The new instance's id map replaces the snapshot's."""
    what = f"snapshot {snap.name!r} of the backup"
    try:
        profiles = ctx.check_profiles(snap.profiles)
    except NotFound as e:
        raise NotFound(e.kind, e.name, f"{what} uses it") from None
    try:
        check_description(snap.description, what)
        config = archive_config({k: v for k, v in snap.config.items()
                                  if not k.startswith("volatile.idmap.")})
        devices = {n: devcfg.validate_device(n, d) for n, d in snap.devices.items()}
        _, exp_devs = ctx.expand(profiles, config, devices)
        devcfg.validate_devices(exp_devs)
        expand.root_disk(exp_devs)
    except InvalidConfig as e:
        raise InvalidConfig(f"{what}: {e.key}", e.reason, e.value) from None
    return snap.evolve(profiles=profiles, config=config, devices=devices)


def _tar_extract(archive: Path, dest: Path, member: str, strip: int) -> None:
    """Extract one volume of the archive into ``dest`` (GNU tar, no device nodes possible)."""
    setpriv, tar = shutil.which("setpriv"), shutil.which("tar")
    if setpriv is None or tar is None:
        raise ToolMissing("GNU tar and setpriv (util-linux) are needed to import backups")
    kind = compression.detect(archive)
    argv = [setpriv, f"--bounding-set={TAR_CAPS}", "--", tar, "-x", "-f", str(archive),
            *compression.tar_flags(kind), "--restrict", "--force-local", "--numeric-owner",
            "--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*",
            "--anchored", "--wildcards", "--exclude=backup/container/rootfs/dev/*",
            "--exclude=backup/snapshots/*/rootfs/dev/*",
            f"--strip-components={strip}", "-C", str(dest), "--no-wildcards", member]
    # an archive held open by the import (``/dev/fd/<n>``) is read through that descriptor
    pinned = str(archive).startswith("/dev/fd/")
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=compression.tool_env(), check=False,
                          pass_fds=(int(archive.name),) if pinned else ())
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise tar_failure(err or f"tar exited with {proc.returncode}", dest,
                          f"cannot extract {member} from the backup",
                          full="cannot import the backup: out of space")


def check_volume(path: Path, what: str) -> None:
    """What arrived must look like a volume: ``rootfs`` a real directory, no symlinked
    metadata or templates (they would be read or written by the host), and none of them
    hard-linked (``check_host_files``: the container would write what the host reads)."""
    st = _lstat(path / "rootfs")
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise UnsafeImage(f"{what}: rootfs is missing or not a directory")
    for entry in ("metadata.yaml", "templates"):
        st = _lstat(path / entry)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise UnsafeImage(f"{what}: {entry} is a symlink")
    check_host_files(path, what)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _extract_volumes(archive: Path, idx: BackupIndex, pool: PoolDriver, target: str,
                     shift: int) -> None:
    volume = pool.create_instance_volume(target, None)
    for s in idx.snapshots:
        empty_dir(volume)
        _tar_extract(archive, volume, f"backup/snapshots/{s}", 3)
        close_volume_dir(volume, 0)  # tar may have applied the archive's mode to it
        check_volume(volume, f"snapshot {s}")
        ensure_dev(volume)
        transfer.shift_rootfs(volume, shift)
        pool.create_snapshot(target, s)
    empty_dir(volume)
    _tar_extract(archive, volume, "backup/container", 2)
    close_volume_dir(volume, 0)
    check_volume(volume, "the instance volume")
    ensure_dev(volume)
    transfer.shift_rootfs(volume, shift)


def ensure_dev(volume: Path) -> None:
    dev = volume / "rootfs" / "dev"
    if _lstat(dev) is None:
        os.mkdir(dev, 0o755)


def _receive_optimized(archive: Path, idx: BackupIndex, pool: PoolDriver, target: str,
                       inst_dir: Path) -> None:
    """btrfs streams: each checked (:mod:`lxdlib.sendstream`) before it is received, then
    received one by one, confined to a temporary directory of the pool."""
    import btrfsutil
    d: Any = pool
    staging = inst_dir / temp_name(TMP, "streams")
    staging.mkdir(mode=0o700)
    recv = d.base / SNAPSHOTS / temp_name(TMP, f"recv-{target}")
    with storage_errors("cannot prepare a btrfs receive"):
        recv.mkdir(mode=0o700)
    ours: dict[str, Path] = {}  # the sender's uuid of each stream -> what it made here
    try:
        for s in idx.snapshots:
            _tar_extract(archive, staging, f"backup/snapshots/{s}.bin", 2)
            info = _check_stream(staging / f"{s}.bin", ours, f"snapshot {s}")
            final = pool.volume_path(SNAPSHOTS, f"{target}/{s}")
            with storage_errors(f"cannot prepare snapshot {target}/{s}"):
                final.parent.mkdir(mode=0o700, exist_ok=True)
            received = transfer.receive_btrfs(None, final.parent, staging / f"{s}.bin")
            os.unlink(staging / f"{s}.bin")
            check_received(received, info, ours, f"snapshot {s}")
            check_volume(received, f"snapshot {s}")
            transfer.place_received(received, final)
            ours[info.uuid] = final
        _tar_extract(archive, staging, "backup/container.bin", 1)
        info = _check_stream(staging / "container.bin", ours, "the instance volume")
        received = transfer.receive_btrfs(None, recv, staging / "container.bin")
        check_received(received, info, ours, "the instance volume")
        check_volume(received, "the instance volume")

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create instance volume {target!r}"):
                btrfsutil.create_snapshot(received, tmp, read_only=False)
            close_volume_dir(tmp, 0)  # the stream's mode for it is not to be trusted

        d._build(pool.volume_path("containers", target), make, "instance volume", target)
        for snap in ours.values():
            forget_origin(snap)
    finally:
        with contextlib.suppress(Exception):
            d._remove(recv)
        shutil.rmtree(staging, ignore_errors=True)


def forget_origin(snapshot: Path) -> None:
    """Clear a received snapshot's received uuid (``ro false`` with force does it), so that a
    later import of the same backup finds only its own snapshots as parents."""
    import btrfsutil
    _log.debug("clearing the received uuid of %s", snapshot)
    with storage_errors(f"cannot settle the received snapshot {snapshot.name!r}"):
        run(["btrfs", "property", "set", "-f", "-ts", str(snapshot), "ro", "false"])
        btrfsutil.set_subvolume_read_only(snapshot, True)


def _check_stream(path: Path, ours: dict[str, Path], what: str) -> sendstream.StreamInfo:
    """Refuse a stream that would do more than an unprivileged unpack (before receiving)."""
    try:
        alloc = idmap.host_allocation(register=False)
        with open(path, "rb") as f:
            return sendstream.check(f, ours, range(alloc.base, alloc.base + alloc.size))
    except UnsafeStream as e:
        raise UnsafeStream(f"{what}: {e}") from None


def check_received(received: Path, info: sendstream.StreamInfo, ours: dict[str, Path],
                    what: str) -> None:
    """``btrfs receive`` finds a stream's parent by uuid anywhere on the pool: make sure the
    snapshot it made starts from the subvolume this backup made, not from another one that
    claims the same origin."""
    import btrfsutil
    if info.parent is None:
        return
    got = btrfsutil.subvolume_info(received).parent_uuid
    want = btrfsutil.subvolume_info(ours[info.parent]).uuid
    if got != want:
        raise UnsafeStream(f"{what}: the btrfs stream started from a subvolume outside the "
                           "backup")
