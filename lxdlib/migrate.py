"""Copy and move instances between lxdlib roots (other hosts) through one duplex byte stream.

The two sides are two processes, usually on two hosts: one runs :func:`send_instance`, the other
:func:`receive_instance`, each reading what the other writes. What connects them is only an argv
that runs the other side's ``lxdlib`` (``lxdlib migrate-send``/``migrate-receive``, hidden
commands): ``[sys.executable, "-m", "lxdlib", "--root", R]`` on this machine, or ``ssh -T host
lxdlib --root R`` — its stdin and stdout are the channel. :func:`copy_between` starts the sides.

The channel carries frames (one type byte, a 4-byte length, the payload): ``J`` a JSON message,
``D`` a chunk of a volume's tar stream, ``E`` the end of that volume. A btrfs send stream goes
unframed right after its part's message (it ends itself with its ``end`` command, and the
receiver parses every command anyway): the sender splices it from ``btrfs send`` into the
channel without copying it through Python. The conversation:

1. sender → ``header``: protocol version, the instance's record (config, devices, profiles,
   snapshots), its pool's driver, ``refresh``/``move``/``start`` and, from btrfs, each snapshot's
   send identity (uuid and ctransid);
2. receiver → ``accept``: the volume format it wants — ``btrfs`` (send streams) when both pools
   are btrfs and store owners alike, else ``tar`` (files, owners in the container's own ids) —
   and, for a refresh over btrfs, the snapshots it already holds (same send identity): those are
   not sent again, and the rest is sent with ``btrfs send -p``, so only what changed crosses;
3. sender → one part per snapshot (oldest first), then the live volume, then ``done``;
4. receiver → ``committed`` once the instance exists (and runs, for ``--stateless`` moves).

zfs pools use the tar stream: a zfs stream cannot be checked before ``zfs recv`` applies it (it
may set dataset properties on the host), as for optimized backups.

Each side has one commit point. The receiver builds the instance as an import does: under the
new name's lock, with an intent record (``import``; ``refresh`` for a refresh, whose new volume
is built beside the old one and swapped in), invisible until its record is written after every
volume arrived and was checked; a dropped channel or a kill on either side leaves nothing that
the next call on that name does not remove. The sender holds the source's lock and changes
nothing on it, except for a move: the source is deleted only after the receiver's ``committed``.

Everything received is hostile input, checked as a backup import checks it: each btrfs command
is parsed (:mod:`lxdlib.sendstream`) before ``btrfs receive`` sees it, with the same rules (no
device nodes, no ``trusted.*`` xattrs, no volume root given away or opened, no parent or clone
outside this transfer); tar runs without ``CAP_MKNOD`` and never rewrites the volume's own
directory; every config passes a user's validation and liblxc's load check; names are checked;
owners land in the receiving instance's id map; a copy gets a fresh identity (uuid, MACs).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import errors, idmap, journal, record, sendstream, transfer
from .backup import (
    TAR_CAPS,
    check_archived,
    check_received,
    check_volume,
    ensure_dev,
    forget_origin,
    owner_maps,
    root_equivalent_grants,
)
from .config import names
from .config.units import parse_size
from .copy import (
    disk_base,
    finish_refresh,
    fresh_identity,
    frozen_for_copy,
    locked,
    refresh_volume,
    snapshot_copy,
    source_disk_base,
)
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    ImageError,
    InvalidArgument,
    LxdlibError,
    NotFound,
    ToolMissing,
    UnsafeStream,
    WrongState,
)
from .imagestore import compression
from .imagestore.tarball import empty_dir, normalise_architecture, tar_failure
from .instance import (
    InstanceCore,
    choose_idmap,
    commit_instance,
    expand_with_root,
    new_instance_dir,
    read_metadata,
    truthy,
)
from .logs import get_logger
from .record import InstanceRecord
from .state import lock
from .storage.base import PoolDriver, close_volume_dir
from .storage.dir import SNAPSHOTS
from .storage.loop import TMP, run, storage_errors, temp_name
from .values import Value, assign

if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from .context import Context

log = get_logger(__name__)

PROTOCOL = "lxdlib-migrate"
VERSION = 1
CHUNK = 1 << 20
MAX_MESSAGE = 16 * 1024 * 1024
#: Beside the instance's record: where each of its received btrfs snapshots came from (its own
#: subvolume uuid → the sender's send identity), so that a refresh can send against it.
ORIGINS = "migrate-origins.json"
_FRAME = struct.Struct(">cI")

# BTRFS_IOC_SET_RECEIVED_SUBVOL: what ``btrfs receive`` itself uses to mark what it made
_SET_RECEIVED = 0xC0C89425
_RECEIVED_ARGS = struct.Struct("=16sQQQI4xQI4xQ16Q")


class ChannelClosed(LxdlibError):
    """The other side went away (connection dropped, process killed) mid-conversation."""


# -- the channel ----------------------------------------------------------------------------------

class Channel:
    """Frames over a pair of byte streams (the other side's stdout and stdin)."""

    def __init__(self, inp: BinaryIO, out: BinaryIO) -> None:
        self.inp = inp
        self.out = out
        self.sent = 0  # bytes written, for measurements

    def _write(self, kind: bytes, payload: bytes | memoryview) -> None:
        try:
            self.out.write(_FRAME.pack(kind, len(payload)))
            if payload:
                self.out.write(payload)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise self._why(e) from None
        self.sent += _FRAME.size + len(payload)

    def _why(self, e: OSError) -> LxdlibError:
        """The other side stopped reading: the error it said before it went, if it did (it
        closes its end only when it exits, so what it wrote can be read to the end)."""
        closed = ChannelClosed(f"the other side closed the connection: {e}")
        try:
            while True:
                kind, size = self.frame()
                if kind == b"J":
                    msg = self.message(size)
                    if "error" in msg:
                        return _error_from(msg["error"])
                    continue
                while size:  # skipped in bounded reads, however large the frame says it is
                    size -= len(self._exact(min(size, CHUNK)))
        except Exception:
            return closed

    def send(self, message: dict[str, Any]) -> None:
        self._write(b"J", json.dumps(message).encode())
        self.flush()

    def data(self, chunk: bytes | memoryview) -> None:
        self._write(b"D", chunk)

    def end_part(self) -> None:
        self._write(b"E", b"")

    def raw(self, data: bytes | memoryview) -> None:
        """Bytes outside any frame: a btrfs stream, which ends itself (its ``end`` command)."""
        try:
            self.out.write(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise self._why(e) from None
        self.sent += len(data)

    def copy_from(self, fd: int) -> None:
        """Everything readable from the pipe ``fd`` as raw bytes, spliced in the kernel when
        the channel is a file descriptor (no copy through this process)."""
        self.flush()
        try:
            dst: int | None = self.out.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            dst = None
        while dst is not None:
            try:
                n = os.splice(fd, dst, CHUNK)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise self._why(e) from None
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                dst = None  # not spliceable: copied below
                break
            if n == 0:
                return
            self.sent += n
        while chunk := os.read(fd, CHUNK):
            self.raw(chunk)

    def flush(self) -> None:
        try:
            self.out.flush()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise self._why(e) from None

    def _exact(self, n: int) -> bytes:
        data = self.inp.read(n)
        if data is None or len(data) != n:
            raise ChannelClosed("the other side closed the connection")
        return data

    def frame(self) -> tuple[bytes, int]:
        kind, size = _FRAME.unpack(self._exact(_FRAME.size))
        return kind, size

    def message(self, size: int) -> dict[str, Any]:
        """The JSON object of a ``J`` frame of ``size`` bytes; ``UnsafeStream`` for one over
        ``MAX_MESSAGE`` (refused before it is read), not JSON, or no object: the other side
        is another host, and its bytes never raise anything but lxdlib's own errors."""
        if size > MAX_MESSAGE:
            raise UnsafeStream(f"migration stream: a message of {size} bytes (at most "
                               f"{MAX_MESSAGE})")
        try:
            msg = json.loads(self._exact(size))
        except (ValueError, RecursionError) as e:  # nesting too deep for the parser, too
            raise UnsafeStream(f"migration stream: a malformed message: {e}") from None
        if not isinstance(msg, dict):
            raise UnsafeStream("migration stream: a message must be an object")
        return msg

    def receive(self) -> dict[str, Any]:
        kind, size = self.frame()
        if kind != b"J":
            raise UnsafeStream(f"migration stream: expected a message, got frame {kind!r}")
        msg = self.message(size)
        if "error" in msg:
            raise _error_from(msg["error"])
        return msg

    def part(self) -> _Part:
        return _Part(self)


class _Part(io.RawIOBase):
    """One volume's data as a file: the ``D`` frames up to the next ``E``."""

    def __init__(self, channel: Channel) -> None:
        self.ch = channel
        self.left = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.done and self.left == 0:
            kind, size = self.ch.frame()
            if kind == b"E":
                self.done = True
            elif kind == b"D":
                self.left = size
            elif kind == b"J":  # the sender's error instead of the rest of the data
                msg = self.ch.message(size)
                if "error" not in msg:
                    raise UnsafeStream("migration stream: a message inside a volume's data")
                raise _error_from(msg["error"])
            else:
                raise UnsafeStream(f"migration stream: unexpected frame {kind!r}")
        if self.done:
            return 0
        view = memoryview(b)[:min(len(b), self.left)]
        n = self.ch.inp.readinto(view)  # type: ignore[attr-defined]
        if not n:
            raise ChannelClosed("the other side closed the connection mid-volume")
        self.left -= n
        return int(n)

    def chunks(self) -> Iterator[memoryview]:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = self.readinto(view)
            if n == 0:
                return
            yield view[:n]

    def drain(self) -> None:
        for _ in self.chunks():
            pass


_SIMPLE_ERRORS = {c.__name__: c for c in (
    LxdlibError, InvalidArgument, WrongState, UnsafeStream, ImageError, ToolMissing,
    errors.UnsafeImage, errors.DeviceNode, errors.UnsafeMemberName, errors.UnsafeLink,
    errors.CorruptArchive, errors.UnsupportedBackup, errors.StorageError,
    errors.QuotaExceeded, errors.Busy, errors.InUse, errors.LXCError, ChannelClosed)}
_TYPED_ERRORS = {c.__name__: c for c in (NotFound, AlreadyExists, errors.InvalidConfig,
                                          errors.InvalidName, errors.IdmapNotAllowed)}


def error_doc(e: BaseException) -> dict[str, str]:
    return {"type": type(e).__name__, "message": str(e)}


def _error_from(doc: Any) -> LxdlibError:
    """The other side's error as the same lxdlib type where it is one (else ``LxdlibError``)."""
    doc = doc if isinstance(doc, dict) else {}
    kind, msg = str(doc.get("type") or ""), str(doc.get("message") or "migration failed")
    simple = _SIMPLE_ERRORS.get(kind)
    if simple is not None:
        return simple(msg)
    typed = _TYPED_ERRORS.get(kind)
    if typed is not None:
        err: LxdlibError = typed.__new__(typed)
        Exception.__init__(err, msg)
        return err
    return LxdlibError(msg)


# -- btrfs send identities ------------------------------------------------------------------------

def _send_identity(path: Path) -> dict[str, Any]:
    """The uuid and ctransid ``btrfs send`` names ``path`` by (its received uuid if it has one)."""
    import btrfsutil
    info = btrfsutil.subvolume_info(path)
    got = info.received_uuid if any(info.received_uuid) else info.uuid
    return {"uuid": str(uuidlib.UUID(bytes=bytes(got))), "ctransid": int(info.ctransid)}


def _set_received(path: Path, ident: dict[str, Any]) -> None:
    """Mark the writable subvolume ``path`` as received from ``ident``, so that ``btrfs receive``
    finds it as the parent of a stream sent against that snapshot."""
    args = bytearray(_RECEIVED_ARGS.pack(uuidlib.UUID(str(ident["uuid"])).bytes,
                                         int(ident["ctransid"]), 0, 0, 0, 0, 0, 0, *[0] * 16))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with storage_errors(f"cannot mark {path.name!r} as received"):
            fcntl.ioctl(fd, _SET_RECEIVED, args)
    finally:
        os.close(fd)


def _received_origin(path: Path) -> dict[str, Any] | None:
    import btrfsutil
    info = btrfsutil.subvolume_info(path)
    if not any(info.received_uuid):
        return None
    return {"uuid": str(uuidlib.UUID(bytes=bytes(info.received_uuid))),
            "ctransid": int(info.stransid)}


def _local_uuid(path: Path) -> str:
    import btrfsutil
    return str(uuidlib.UUID(bytes=bytes(btrfsutil.subvolume_info(path).uuid)))


def _read_origins(ctx: Context, name: str) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((ctx.paths.instance_dir(name) / ORIGINS).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- sending --------------------------------------------------------------------------------------

class Outcome(Value, frozen=True):
    """What a transfer did: the new instance's name, whether it runs, bytes sent."""

    _fields = ("name", "started", "sent_bytes")
    __slots__ = _fields

    name: str
    started: bool
    sent_bytes: int

    def __init__(self, name: str, started: bool, sent_bytes: int) -> None:
        assign(self, "name", name)
        assign(self, "started", started)
        assign(self, "sent_bytes", sent_bytes)


def send_instance(ctx: Context, name: str, inp: BinaryIO, out: BinaryIO, *,
                  instance_only: bool = False, refresh: bool = False, move: bool = False,
                  stateless: bool = False) -> Outcome:
    """Send instance ``name`` to a receiver reading ``out`` and answering on ``inp``.

    A running instance needs ``stateless`` (live migration is not supported): a copy reads it at
    one point in time, a move stops it, and the receiver starts the new one. A move deletes the
    source only once the receiver has committed; on any failure before, the source is as it was
    (started again if the move stopped it) — except a connection lost after the last word,
    before the receiver's answer: it may run the instance by then, so this one stays stopped.
    """
    ch = Channel(inp, out)
    inst = InstanceCore(ctx, name)
    first = inst.record()  # NotFound before anything is said
    running = inst.state != "STOPPED"
    if running and not stateless:
        raise WrongState(f"The instance {name!r} is running: live migration is not supported, "
                         "use --stateless (a move stops it, sends it and starts it there)")
    if running and move and first.ephemeral:
        raise WrongState(f"The instance {name!r} is ephemeral: stopping it for the move would "
                         "delete it; copy it (--stateless) instead")
    stopping = move and running
    # A running instance moved is stopped for the send as by a restart, the send in its
    # middle: a kill -9 meanwhile leaves the intent that starts it again (the next call), a
    # failure starts it again at once, and once the far side has committed it is deleted
    # (nothing to start). Its start in an ``except`` here was lost to a kill.
    with inst.stopped_meanwhile(force=False, timeout=30) if stopping else locked(ctx, name):
        rec = inst.record()
        pool = inst._pool(rec)
        ack = _send_locked(ctx, ch, inst, rec, pool, instance_only=instance_only,
                           refresh=refresh, move=move, start=stopping,
                           running=running and not stopping)
        if move:
            inst._delete_locked(rec)
            ctx.events.emit("instance-moved", name, to=str(ack.get("name")))
    return Outcome(str(ack.get("name") or name), bool(ack.get("started")), ch.sent)


def _send_locked(ctx: Context, ch: Channel, inst: InstanceCore, rec: InstanceRecord,
                 pool: PoolDriver, *, instance_only: bool, refresh: bool, move: bool,
                 start: bool, running: bool) -> dict[str, Any]:
    snaps = [] if instance_only else list(rec.snapshots)
    sent = InstanceRecord.from_dict(rec.to_dict())
    sent.snapshots = snaps
    idents = {s.name: _send_identity(pool.volume_path(SNAPSHOTS, f"{inst.name}/{s.name}"))
              for s in snaps} if transfer.is_btrfs(pool) else {}
    base = source_disk_base(inst, rec, pool)
    ch.send({"proto": PROTOCOL, "version": VERSION, "name": inst.name, "record": sent.to_dict(),
             "snapshots": [s.name for s in snaps], "driver": pool.driver, "disk_base": base,
             "refresh": refresh, "move": move, "start": start, "identities": idents})
    accept = ch.receive()
    fmt = accept.get("format")
    reuse = set(accept.get("reuse") or [])
    # nested: a move of a running instance has the intent of its stop under way, whose
    # restart a kill -9 here must not lose
    with journal.nested(ctx.paths, inst.name, "temp-snapshot"):
        if fmt == "btrfs" and transfer.is_btrfs(pool):
            _send_btrfs(ch, pool, inst.name, [s.name for s in snaps], reuse)
        elif fmt == "tar":
            _send_tar(ctx, ch, pool, inst.name, [s.name for s in snaps], base, running)
        else:
            raise UnsafeStream(f"the receiver asked for an unknown volume format {fmt!r}")
        # the far side commits (and starts it) once it has this: a kill, or a connection
        # lost before its answer, leaves this one stopped, not started beside it
        dropped = journal.drop_restart(ctx.paths, inst.name) if start else None
        try:
            ch.send({"done": True})
            journal.crashpoint("migrate.done-sent")
            ack = ch.receive()
            if not ack.get("committed"):
                raise LxdlibError("the receiver did not confirm the copy")
        except ChannelClosed:  # no answer: the far side may have committed and started it
            raise
        except LxdlibError:
            # the far side's own word (its error, or no commit): it runs nothing of it, so
            # this one is started again as on any failure before
            journal.keep_restart(ctx.paths, inst.name, dropped)
            raise
    return ack


def _pump(ch: Channel, argv: Sequence[str], what: str) -> None:
    """Run a producer (``btrfs send``, ``tar -c``) and send its output as one part."""
    with tempfile.TemporaryFile() as err, subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            env=compression.tool_env()) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                ch.data(chunk)
        except BaseException:
            proc.kill()
            raise
        proc.stdout.close()
        code = proc.wait()
        # tar exits 1 when a file changed while it was read (logs of a frozen dir pool)
        if code != 0 and not (code == 1 and argv[0].endswith("tar")):
            err.seek(0)
            detail = err.read()[-2000:].decode(errors="replace").strip()
            ch.send({"error": {"type": "LxdlibError", "message": f"{what} failed: {detail}"}})
            raise LxdlibError(f"{what} failed: {detail}")
    ch.end_part()


def _pump_raw(ch: Channel, argv: Sequence[str], what: str) -> None:
    """Run ``btrfs send`` into the channel as it is (the stream delimits itself). A failure
    cuts the stream short, which the receiver refuses; the error is raised here."""
    with tempfile.TemporaryFile() as err, subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        try:
            ch.copy_from(proc.stdout.fileno())
        except BaseException:
            proc.kill()
            raise
        proc.stdout.close()
        if proc.wait() != 0:
            err.seek(0)
            raise LxdlibError(f"{what} failed: "
                              f"{err.read()[-2000:].decode(errors='replace').strip()}")
    ch.flush()


def _send_btrfs(ch: Channel, pool: PoolDriver, name: str, snaps: Sequence[str],
                reuse: set[str]) -> None:
    parent: Path | None = None
    for s in snaps:
        path = pool.volume_path(SNAPSHOTS, f"{name}/{s}")
        ch.send({"part": "snapshot", "name": s, "reuse": s in reuse})
        if s not in reuse:
            _pump_raw(ch, transfer.btrfs_send_argv(path, parent), f"btrfs send of {name}/{s}")
            journal.crashpoint("migrate.snapshot-sent")
        parent = path
    with transfer.btrfs_temp_snapshot(pool, name) as live:
        ch.send({"part": "live"})
        _pump_raw(ch, transfer.btrfs_send_argv(live, parent), f"btrfs send of {name}")


def _send_tar(ctx: Context, ch: Channel, pool: PoolDriver, name: str, snaps: Sequence[str],
              base: int, running: bool) -> None:
    tar = shutil.which("tar")
    if tar is None:
        raise ToolMissing("GNU tar is needed to send instances")
    xattrs = [] if transfer.is_zfs(pool) else ["--xattrs", "--xattrs-include=*"]

    def send_tree(path: Path, what: str) -> None:
        with tempfile.TemporaryDirectory() as work:
            maps = owner_maps(Path(work), [path], base) if base else []
            _pump(ch, [tar, "-c", "-f", "-", "--numeric-owner", "--sparse", *xattrs, *maps,
                       "-C", str(path), "."], what)

    for s in snaps:
        ch.send({"part": "snapshot", "name": s, "reuse": False})
        with transfer.readable_snapshot(pool, name, s) as path:
            send_tree(path, f"reading {name}/{s}")
    ch.send({"part": "live"})
    with transfer.readable_live(pool, name, running, lambda: frozen_for_copy(ctx, name)) as path:
        send_tree(path, f"reading {name}")


# -- receiving ------------------------------------------------------------------------------------

class _Plan(Value, frozen=True):
    """A checked header: what will be made, where, in which format."""

    _fields = ("target", "pool", "record", "snapshots", "fmt", "shift", "refresh", "move", "start",
               "identities", "reuse", "size")
    __slots__ = _fields

    target: str
    pool: PoolDriver
    record: InstanceRecord  # the new record, identity included (refresh: the target's)
    snapshots: tuple[str, ...]
    fmt: str
    shift: int
    refresh: bool
    move: bool
    start: bool
    identities: dict[str, dict[str, Any]]
    reuse: frozenset[str]
    size: int | None

    def __init__(self, target: str, pool: PoolDriver, record: InstanceRecord,
                 snapshots: tuple[str, ...], fmt: str, shift: int, refresh: bool, move: bool,
                 start: bool, identities: dict[str, dict[str, Any]], reuse: frozenset[str],
                 size: int | None) -> None:
        assign(self, "target", target)
        assign(self, "pool", pool)
        assign(self, "record", record)
        assign(self, "snapshots", snapshots)
        assign(self, "fmt", fmt)
        assign(self, "shift", shift)
        assign(self, "refresh", refresh)
        assign(self, "move", move)
        assign(self, "start", start)
        assign(self, "identities", identities)
        assign(self, "reuse", reuse)
        assign(self, "size", size)


def receive_instance(ctx: Context, inp: BinaryIO, out: BinaryIO, name: str | None = None, *,
                     pool: str | None = None, allow_root_equivalent: bool = False,
                     refresh: bool = False, move: bool = False) -> Outcome:
    """Receive an instance from a sender writing ``inp`` (answers go to ``out``) as ``name``
    (default: the sender's name). Every refusal is also told to the sender.

    A record (or a snapshot's) carrying a root-equivalent key or a device reaching host
    resources (``backup.root_equivalent_grants``: ``raw.lxc`` hooks run as host root at the
    next start, which the sender may ask for) is refused unless ``allow_root_equivalent``:
    the other host's root is not this one's.

    ``refresh`` and ``move`` are what this side was asked to do, not what the sender says:
    a header that asks for a refresh this side was not asked for (it would replace an
    existing instance here, snapshots and all), for a move's kept identity when this is a
    copy (or the reverse), or for a start outside a move is refused (``UnsafeStream``)
    before anything is made. The sender is the other host: its word is no leave to
    overwrite or start anything here."""
    ch = Channel(inp, out)
    try:
        return _receive(ctx, ch, name, pool, allow_root_equivalent, refresh=refresh, move=move)
    except BaseException as e:
        if not isinstance(e, ChannelClosed):
            with contextlib.suppress(Exception):
                ch.send({"error": error_doc(e)})
        raise


def _receive(ctx: Context, ch: Channel, name: str | None, pool: str | None,
             allow_root_equivalent: bool = False, *, refresh: bool = False,
             move: bool = False) -> Outcome:
    # the target's leftovers are settled under its lock below; no scan of every instance
    header = ch.receive()
    if header.get("proto") != PROTOCOL or header.get("version") != VERSION:
        raise UnsafeStream(f"not an lxdlib migration stream of version {VERSION}")
    target = name or str(header.get("name") or "")
    names.validate_instance_name(target)
    if not allow_root_equivalent:
        _refuse_root_equivalent(header)
    _refuse_unasked(header, refresh=refresh, move=move)
    paths = ctx.paths
    with lock(paths, "instance", target):
        from .instance import recover_leftover
        recover_leftover(ctx, target)
        plan = _plan(ctx, header, target, pool)
        if not plan.refresh and (record.exists(paths, target)
                                 or paths.instance_dir(target).exists()):
            raise AlreadyExists("instance", target)
        ch.send({"format": plan.fmt, "reuse": sorted(plan.reuse)})
        if plan.refresh:
            _receive_refresh(ctx, ch, plan)
        else:
            _receive_new(ctx, ch, plan)
    started = False
    if plan.start:
        InstanceCore(ctx, target).start()
        started = True
    ch.send({"committed": True, "name": target, "started": started})
    return Outcome(target, started, ch.sent)


def _refuse_unasked(header: dict[str, Any], *, refresh: bool, move: bool) -> None:
    """``UnsafeStream`` when the header asks for more than this side was asked to do (see
    :func:`receive_instance`): the flags are the sender's, the intent is this side's caller's."""
    asked = {"refresh": refresh, "move": move, "start": move}
    for flag in ("refresh", "move", "start"):
        said = header.get(flag, False)
        if not isinstance(said, bool):
            raise UnsafeStream(f"migration header: {flag!r} must be true or false")
        if said and not asked[flag]:
            what = {"refresh": "a refresh (replacing the instance here)",
                    "move": "a move (keeping the original's identity)",
                    "start": "the copy to be started"}[flag]
            raise UnsafeStream(f"migration header: the sender asks for {what}, which this "
                               "side was not asked to do")
    if move and not header.get("move"):
        raise UnsafeStream("migration header: this side was asked to receive a move, the "
                           "sender sends a copy")


def _refuse_root_equivalent(header: dict[str, Any]) -> None:
    """``InvalidConfig`` when the sender's record or one of its snapshots grants what only
    this host's root may (see :func:`receive_instance`); before anything is made."""
    try:
        rec = InstanceRecord.from_dict(dict(header["record"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"migration header: malformed: {e}") from None
    found = root_equivalent_grants(rec.config, rec.devices)
    for snap in rec.snapshots:
        found += [f"snapshot {snap.name!r}: {g}"
                  for g in root_equivalent_grants(snap.config, snap.devices)]
    if found:
        raise errors.InvalidConfig(found[0], "a root-equivalent setting from another host is "
                                   "refused (" + ", ".join(found) + "); host root here may "
                                   "accept it (lxdlib copy/move --allow-root-equivalent, "
                                   "receive_instance(allow_root_equivalent=True)), or push "
                                   "the instance from the host that holds it")


def _plan(ctx: Context, header: dict[str, Any], target: str, pool_name: str | None) -> _Plan:
    """Check everything the header says, as a backup import checks its index."""
    try:
        rec = InstanceRecord.from_dict(dict(header["record"]))
        snap_names = [str(s) for s in header.get("snapshots") or []]
        identities = {str(k): {"uuid": str(v["uuid"]), "ctransid": int(v["ctransid"])}
                      for k, v in dict(header.get("identities") or {}).items()}
        src_base = int(header.get("disk_base") or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"migration header: malformed: {e}") from None
    if rec.type != "container":
        raise ImageError(f"migration header: instances of type {rec.type!r} are not supported")
    if [s.name for s in rec.snapshots] != snap_names or len(set(snap_names)) != len(snap_names):
        raise ImageError("migration header: the snapshot list does not match the record")
    for s in snap_names:
        names.validate_snapshot_name(s)
    rec.architecture = normalise_architecture(rec.architecture)
    prof, checked, local_cfg, local_devs, snapshots = check_archived(ctx, rec)
    paths = ctx.paths
    refresh = bool(header.get("refresh")) and record.exists(paths, target)
    move = bool(header.get("move"))
    want_pool: str | None
    if refresh:
        dst = InstanceCore(ctx, target)
        dst_rec = dst.record()
        if dst.state != "STOPPED":
            raise WrongState(f"The instance {target!r} must be stopped to be refreshed")
        want_pool = pool_name or dst_rec.pool
    else:
        want_pool = pool_name or (rec.pool if rec.pool in ctx.pool_names() else None)
    try:
        exp_cfg, exp_devs, root = expand_with_root(ctx, prof, local_cfg, local_devs, want_pool)
        ctx.pool(root["pool"])
    except NotFound:
        if pool_name is not None or "default" not in ctx.pool_names():
            raise
        exp_cfg, exp_devs, root = expand_with_root(ctx, prof, local_cfg, local_devs, "default")
    dst_pool = ctx.pool(root["pool"])
    for dev in exp_devs.values():
        if dev.get("type") == "nic":
            ctx.nic_link(dev)
    size = parse_size(root["size"]) if root.get("size") else None
    if refresh:
        if dst_rec.pool != dst_pool.name:
            raise InvalidArgument(f"instance {target!r} is on pool {dst_rec.pool!r}: a refresh "
                                  "cannot move it")
        identity = {k: v for k, v in dst_rec.config.items() if k.startswith("volatile.")}
        cfg = {**local_cfg, **identity}
        if "volatile.base_image" in checked:
            cfg["volatile.base_image"] = checked["volatile.base_image"]
        new = InstanceRecord(
            name=target, architecture=rec.architecture, created_at=dst_rec.created_at,
            pool=dst_pool.name, profiles=prof, config=cfg, devices=local_devs,
            description=rec.description, ephemeral=dst_rec.ephemeral,
            last_used_at=dst_rec.last_used_at,
            snapshots=[snapshot_copy(s, identity) for s in snapshots])
    else:
        cfg = dict(checked)
        if move:  # the same instance elsewhere: its identity travels, its id map is local
            for key in [k for k in cfg if k.startswith(("volatile.idmap.",
                                                        "volatile.last_state."))
                        or k == "volatile.apply_template"]:
                del cfg[key]
            if not truthy(exp_cfg.get("security.privileged")):
                base, isize = choose_idmap(ctx, target, exp_cfg, ctx.facts().idmap)
                cfg["volatile.idmap.base"] = str(base)
                cfg["volatile.idmap.size"] = str(isize)
            identity = {k: v for k, v in cfg.items() if k.startswith("volatile.idmap.")}
            snaps = [s.evolve(config={**s.config, **identity}) for s in snapshots]
        else:
            fresh_identity(ctx, target, cfg, exp_cfg, exp_devs)
            identity = {k: v for k, v in cfg.items() if k.startswith("volatile.")}
            snaps = [snapshot_copy(s, identity) for s in snapshots]
        new = InstanceRecord(
            name=target, architecture=rec.architecture, created_at=rec.created_at if move
            else record.now(), pool=dst_pool.name, profiles=prof, config=cfg,
            devices=local_devs, description=rec.description, ephemeral=rec.ephemeral,
            last_used_at=rec.last_used_at if move else None, snapshots=snaps)
    here = disk_base(dst_pool, {**exp_cfg, **new.config})
    fmt = "btrfs" if (header.get("driver") == "btrfs" and transfer.is_btrfs(dst_pool)
                      and src_base == 0 and here == 0) else "tar"
    reuse: set[str] = set()
    if refresh and fmt == "btrfs":
        origins = _read_origins(ctx, target)
        for have in dst_rec.snapshots:
            path = dst_pool.volume_path(SNAPSHOTS, f"{target}/{have.name}")
            with contextlib.suppress(Exception):
                if origins.get(_local_uuid(path)) == identities.get(have.name):
                    reuse.add(have.name)
        reuse &= set(snap_names)
    return _Plan(target=target, pool=dst_pool, record=new, snapshots=tuple(snap_names),
                 fmt=fmt, shift=here, refresh=refresh, move=move,
                 start=bool(header.get("start")),
                 identities=identities, reuse=frozenset(reuse), size=size)


def _receive_new(ctx: Context, ch: Channel, plan: _Plan) -> None:
    paths = ctx.paths
    with new_instance_dir(ctx, plan.target, plan.pool):
        journal.begin(paths, plan.target, "import", pools=[plan.pool.name],
                      target_pool=plan.pool.name)
        journal.crashpoint("migrate.begun")
        origins = _receive_volumes(ctx, ch, plan, plan.target)
        rec = plan.record
        volume = plan.pool.volume_path("containers", plan.target)
        if not plan.move and read_metadata(volume).get("templates"):
            rec.config["volatile.apply_template"] = "copy"  # as a local copy does
        _save_origins(ctx, plan.target, origins)
        journal.crashpoint("migrate.received")
        commit_instance(ctx, rec)
    ctx.events.emit("instance-created", plan.target, origin="migration")


def _receive_refresh(ctx: Context, ch: Channel, plan: _Plan) -> None:
    paths = ctx.paths
    tmp = refresh_volume(plan.target)
    journal.begin(paths, plan.target, "refresh", stage="transfer", volume=tmp,
                  record=plan.record.to_dict())
    try:
        origins = _receive_volumes(ctx, ch, plan, tmp)
    except BaseException:
        journal.recover(ctx, plan.target)
        raise
    _save_origins(ctx, plan.target, origins)
    journal.begin(paths, plan.target, "refresh", stage="swap", volume=tmp,
                  record=plan.record.to_dict())
    finish_refresh(ctx, plan.target, journal.read(paths, plan.target) or {})
    journal.end(paths, plan.target)
    ctx.events.emit("instance-updated", plan.target, origin="migration")


def _save_origins(ctx: Context, name: str, origins: dict[str, dict[str, Any]]) -> None:
    path = ctx.paths.instance_dir(name) / ORIGINS
    if origins:
        path.write_text(json.dumps(origins))
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _next_part(ch: Channel, expect: str, snap: str | None = None) -> dict[str, Any]:
    msg = ch.receive()
    if msg.get("part") != expect or (snap is not None and msg.get("name") != snap):
        raise UnsafeStream(f"migration stream: expected the {expect} part "
                           f"{snap or ''}, got {msg.get('part')!r} {msg.get('name', '')!r}")
    return msg


def _receive_volumes(ctx: Context, ch: Channel, plan: _Plan, vol: str) -> dict[str, dict[str, Any]]:
    """Make ``containers/<vol>`` with its snapshots from the parts; the origins of btrfs
    snapshots (local uuid → send identity) are returned, their received uuids cleared."""
    if plan.fmt == "btrfs":
        origins = _receive_btrfs(ctx, ch, plan, vol)
    else:
        _receive_tar(ch, plan, vol)
        origins = {}
    done = ch.receive()
    if not done.get("done"):
        raise UnsafeStream("migration stream: data after the live volume")
    # a CRIU dump is never taken along: it belongs to the source's processes, and the next
    # start would hand whatever the stream put there to CRIU as host root
    state = plan.pool.volume_path("containers", vol) / journal.STATE_DIR
    if state.is_symlink() or state.is_file():
        state.unlink()
    else:
        shutil.rmtree(state, ignore_errors=True)
    if plan.size is not None:
        plan.pool.set_quota("containers", vol, plan.size)
    return origins


def _root_owners() -> range:
    alloc = idmap.host_allocation(register=False)
    return range(alloc.base, alloc.base + alloc.size)


def _receive_btrfs(ctx: Context, ch: Channel, plan: _Plan, vol: str) -> dict[str, dict[str, Any]]:
    import btrfsutil
    pool = plan.pool
    d: Any = pool
    recv = d.base / SNAPSHOTS / temp_name(TMP, f"recv-{vol}")
    with storage_errors("cannot prepare a btrfs receive"):
        recv.mkdir(mode=0o700)
    ours: dict[str, Path] = {}  # send identity uuid → the subvolume made here for it
    made: list[Path] = []
    owners = _root_owners()
    try:
        for s in plan.snapshots:
            msg = _next_part(ch, "snapshot", s)
            final = pool.volume_path(SNAPSHOTS, f"{vol}/{s}")
            with storage_errors(f"cannot prepare snapshot {vol}/{s}"):
                final.parent.mkdir(mode=0o700, exist_ok=True)
            if msg.get("reuse"):
                if s not in plan.reuse:
                    raise UnsafeStream(f"migration stream: snapshot {s} was not offered")
                ident = plan.identities[s]
                have = pool.volume_path(SNAPSHOTS, f"{plan.target}/{s}")
                with storage_errors(f"cannot reuse snapshot {plan.target}/{s}"):
                    btrfsutil.create_snapshot(have, final, read_only=False)
                    made.append(final)
                    _set_received(final, ident)
                    btrfsutil.set_subvolume_read_only(final, True)
                ours[str(ident["uuid"])] = final
                continue
            received, info = _receive_stream(ch, final.parent, ours, owners, f"snapshot {s}")
            made.append(received)
            check_received(received, info, ours, f"snapshot {s}")
            check_volume(received, f"snapshot {s}")
            transfer.place_received(received, final)
            made[-1] = final
            ours[info.uuid] = final
            journal.crashpoint("migrate.snapshot-received")
        _next_part(ch, "live")
        received, info = _receive_stream(ch, recv, ours, owners, "the instance volume")
        check_received(received, info, ours, "the instance volume")
        check_volume(received, "the instance volume")

        def make(tmp: Path) -> None:
            # the received subvolume itself becomes the volume: writable (which also drops its
            # received uuid) and moved, rather than snapshotted, which would first write back
            # everything just received
            with storage_errors(f"cannot create instance volume {vol!r}"):
                run(["btrfs", "property", "set", "-f", "-ts", str(received), "ro", "false"])
                os.rename(received, tmp)
            close_volume_dir(tmp, 0)  # the stream's mode for it is not to be trusted

        d._build(pool.volume_path("containers", vol), make, "instance volume", vol)
        origins: dict[str, dict[str, Any]] = {}
        for snap in made:
            origin = _received_origin(snap)
            if origin is not None:
                origins[_local_uuid(snap)] = origin
            forget_origin(snap)
        return origins
    except BaseException:
        for snap in made:  # the caller's cleanup removes them too; a received uuid must not stay
            with contextlib.suppress(Exception):
                btrfsutil.delete_subvolume(snap)
        raise
    finally:
        with contextlib.suppress(Exception):
            d._remove(recv)


class _FdWriter:
    """Writes straight to a pipe (each checked command once, no buffer to copy it into)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)


def _receive_stream(ch: Channel, into: Path, ours: dict[str, Path], owners: range,
                    what: str) -> tuple[Path, sendstream.StreamInfo]:
    """One btrfs stream from the channel into ``into``: each command is checked before
    ``btrfs receive`` gets it."""
    before = set(os.listdir(into))
    with tempfile.TemporaryFile() as err, subprocess.Popen(
            ["btrfs", "receive", "-q", "-e", "-C", str(into)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=err, bufsize=CHUNK) as proc:
        assert proc.stdin is not None

        def failed() -> errors.StorageError:
            _abort(proc)
            _remove_new(into, before)
            err.seek(0)
            return errors.StorageError(f"btrfs receive of {what} failed: "
                                       f"{err.read()[-2000:].decode(errors='replace').strip()}")

        try:
            info = sendstream.check(ch.inp, ours, owners, alone=False,
                                    forward=_FdWriter(proc.stdin.fileno()))  # type: ignore
            proc.stdin.close()
        except UnsafeStream as e:
            _abort(proc)
            _remove_new(into, before)
            raise UnsafeStream(f"{what}: {e}") from None
        except BrokenPipeError:  # btrfs receive gave up: its error says why
            raise failed() from None
        except BaseException:
            _abort(proc)
            _remove_new(into, before)
            raise
        if proc.wait() != 0:
            raise failed()
    new = sorted(set(os.listdir(into)) - before)
    if len(new) != 1:
        raise errors.StorageError(f"a btrfs stream made {len(new)} subvolumes, expected one")
    return into / new[0], info


def _abort(proc: subprocess.Popen[bytes]) -> None:
    """Kill a consumer and drop what is still buffered for it (closing its stdin later would
    try to write that and fail)."""
    proc.kill()
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    proc.wait()


def _remove_new(into: Path, before: set[str]) -> None:
    import btrfsutil
    with contextlib.suppress(Exception):
        for entry in set(os.listdir(into)) - before:
            btrfsutil.delete_subvolume(into / entry)


_TAR_EXCLUDES = ("./rootfs/dev/*", "rootfs/dev/*")


def _receive_tar(ch: Channel, plan: _Plan, vol: str) -> None:
    pool = plan.pool
    volume = pool.create_instance_volume(vol, None)
    for s in plan.snapshots:
        msg = _next_part(ch, "snapshot", s)
        if msg.get("reuse"):
            raise UnsafeStream(f"migration stream: snapshot {s} was not offered")
        empty_dir(volume)
        _extract(ch.part(), volume, f"snapshot {s}")
        check_volume(volume, f"snapshot {s}")
        ensure_dev(volume)
        transfer.shift_rootfs(volume, plan.shift)
        pool.create_snapshot(vol, s)
    _next_part(ch, "live")
    empty_dir(volume)
    _extract(ch.part(), volume, "the instance volume")
    check_volume(volume, "the instance volume")
    ensure_dev(volume)
    transfer.shift_rootfs(volume, plan.shift)


def _extract(part: _Part, dest: Path, what: str) -> None:
    """GNU tar without the capability to make device nodes (or set ``trusted.*``), never
    changing the volume's own directory (``--no-overwrite-dir``)."""
    setpriv, tar = shutil.which("setpriv"), shutil.which("tar")
    if setpriv is None or tar is None:
        raise ToolMissing("GNU tar and setpriv (util-linux) are needed to receive instances")
    argv = [setpriv, f"--bounding-set={TAR_CAPS}", "--", tar, "-x", "-f", "-", "--restrict",
            "--numeric-owner", "--same-owner", "--same-permissions", "--xattrs",
            "--xattrs-include=*", "--no-overwrite-dir", "--anchored", "--wildcards",
            *(f"--exclude={p}" for p in _TAR_EXCLUDES), "-C", str(dest)]
    with tempfile.TemporaryFile() as err, subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
            env=compression.tool_env()) as proc:
        assert proc.stdin is not None
        try:
            for chunk in part.chunks():
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:  # tar gave up: its error says why
            with contextlib.suppress(OSError):
                proc.stdin.close()
            part.drain()
        except BaseException:
            _abort(proc)
            raise
        code = proc.wait()
        if code != 0:
            err.seek(0)
            text = err.read()[-4000:].decode(errors="replace").replace(f"{tar}:", "tar:")
            raise tar_failure(text or f"tar exited with {code}", dest,
                              f"cannot receive {what}", full="cannot receive: out of space")
    close_volume_dir(dest, 0)


# -- starting both sides --------------------------------------------------------------------------

def local_argv(root: str | os.PathLike[str]) -> list[str]:
    """The argv that runs lxdlib on root ``root`` of this machine (the transport of tests)."""
    return [sys.executable, "-m", "lxdlib", "--root", os.fspath(root)]


def send_argv(side: Sequence[str], name: str, *, instance_only: bool = False,
              refresh: bool = False, move: bool = False, stateless: bool = False) -> list[str]:
    return [*side, "migrate-send", name, *(["--instance-only"] if instance_only else []),
            *(["--refresh"] if refresh else []), *(["--move"] if move else []),
            *(["--stateless"] if stateless else [])]


def receive_argv(side: Sequence[str], name: str, pool: str | None = None,
                 allow_root_equivalent: bool = False, *, refresh: bool = False,
                 move: bool = False) -> list[str]:
    """The receiving side's command: ``refresh``/``move`` tell it what it was asked to do,
    so that it refuses a sender that asks for more (``receive_instance``)."""
    return [*side, "migrate-receive", name, *(["--storage", pool] if pool else []),
            *(["--allow-root-equivalent"] if allow_root_equivalent else []),
            *(["--refresh"] if refresh else []), *(["--move"] if move else [])]


@contextlib.contextmanager
def _other_side(argv: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """The other side's process, its stdin and stdout our channel. At the end both pipes are
    closed (it sees the end of the conversation, or a write that fails) and it is waited for."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, bufsize=CHUNK)
        try:
            yield proc
        finally:
            for f in (proc.stdin, proc.stdout):
                with contextlib.suppress(Exception):
                    if f is not None:
                        f.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err.seek(0)
            text = err.read()[-4000:].decode(errors="replace").strip()
            if text:
                log.debug("the other side (%s) said: %s", " ".join(argv[:1]), text)


def copy_between(ctx: Context, src: Sequence[str] | None, dst: Sequence[str] | None, name: str,
                 new_name: str | None = None, *, move: bool = False, refresh: bool = False,
                 instance_only: bool = False, stateless: bool = False,
                 pool: str | None = None, allow_root_equivalent: bool = False) -> Outcome:
    """Copy (or ``move``) instance ``name`` from one root to another as ``new_name``.

    ``src``/``dst`` are argvs running the other side's lxdlib (:func:`local_argv`, an ssh
    command), or None for ``ctx``'s own root. Both None is a copy within this root.
    ``allow_root_equivalent`` lets the receiver take root-equivalent settings from another
    host (see :func:`receive_instance`). A push from ``ctx``'s own root needs no leave: its
    settings are this root's own, and whoever can start ``migrate-receive`` on the far side is
    root there already.
    """
    target = new_name or name
    if src is None and dst is None:
        from .copy import copy_instance, rename_instance
        if move:
            rename_instance(InstanceCore(ctx, name), target)
            return Outcome(target, False, 0)
        copy_instance(ctx, name, target, instance_only=instance_only, refresh=refresh)
        return Outcome(target, False, 0)
    if src is None:
        assert dst is not None
        with _other_side(receive_argv(dst, target, pool, allow_root_equivalent=True,
                                      refresh=refresh, move=move)) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            return send_instance(ctx, name, proc.stdout, proc.stdin,  # type: ignore[arg-type]
                                 instance_only=instance_only, refresh=refresh, move=move,
                                 stateless=stateless)
    if dst is None:
        with _other_side(send_argv(src, name, instance_only=instance_only, refresh=refresh,
                                   move=move, stateless=stateless)) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            out = receive_instance(ctx, proc.stdout, proc.stdin,  # type: ignore[arg-type]
                                   target, pool=pool,
                                   allow_root_equivalent=allow_root_equivalent,
                                   refresh=refresh, move=move)
        if move and proc.returncode != 0:
            raise LxdlibError(f"instance {target!r} arrived, but the source side failed to "
                              "delete the original")
        return out
    return _relay(send_argv(src, name, instance_only=instance_only, refresh=refresh, move=move,
                            stateless=stateless),
                  receive_argv(dst, target, pool, allow_root_equivalent, refresh=refresh,
                               move=move), target)


def _relay(send: Sequence[str], recv: Sequence[str], target: str) -> Outcome:
    """Both sides elsewhere: they talk to each other through two pipes."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    with tempfile.TemporaryFile() as serr, tempfile.TemporaryFile() as rerr:
        sender = subprocess.Popen(list(send), stdin=r1, stdout=w2, stderr=serr)
        receiver = subprocess.Popen(list(recv), stdin=r2, stdout=w1, stderr=rerr)
        for fd in (r1, w1, r2, w2):
            os.close(fd)
        rc_r, rc_s = receiver.wait(), sender.wait()
        if rc_r != 0 or rc_s != 0:
            serr.seek(0)
            rerr.seek(0)
            detail = (rerr.read()[-2000:] + serr.read()[-2000:]).decode(errors="replace")
            raise LxdlibError(f"the transfer failed: {detail.strip()}")
    return Outcome(target, False, 0)

