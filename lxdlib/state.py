"""Records on disk: where each thing lives under a root, atomic writes, and cross-process locks.

There is no daemon and no database: a record written atomically (tmp + fsync + rename +
directory fsync) is the commit point of every operation. Anything on disk without a record is a
leftover of an interrupted operation and is removed by the next call that meets it.

liblxc only locks inside one API call, so lxdlib takes its own lock per object (and one
host-wide lock for invariants that span objects, such as name uniqueness or idmap allocation):
a byte of one file per kind, locked with ``F_OFD_SETLK`` (``lock``). Such locks belong to the
open file description, so they also serialise threads of one process.

lxdlib's own records are JSON (``write_record``), read with the standard library; their file
names still end in ``.yaml``, and every YAML reader reads them, since JSON is YAML. Records an
older version wrote as YAML are still read (``parse_record``), and become JSON when next saved.
PyYAML is imported only for those, and for what is LXD's YAML (``dump_yaml``, ``load_yaml``):
importing it took ~14 ms at every start of every command.
"""

from __future__ import annotations

# ``threading``'s own core, which is all this module uses of it (a lock, the thread's id, a
# thread-local): ``threading`` itself costs a command ~0.5 ms to import, and ``exec`` or
# ``config set`` start no thread. ``_thread._local`` is what ``threading.local`` names.
import _thread
import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import TYPE_CHECKING, Busy, DiskFull, InvalidArgument, LxdlibError
from .patterns import Pattern
from .rootdir import root_path
from .values import Value, assign

if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

#: The root's directories, each joined once when a ``Paths`` is made.
_UNDER = {"lxcpath": "containers", "profiles": "profiles", "images": "images",
          "pools": "storage-pools", "networks": "networks", "disks": "disks", "locks": "locks",
          "run": "run", "metadata_memos": "run/image-metadata",
          "volume_records": "storage-volumes"}


class Paths(Value, frozen=True):
    """Every path lxdlib uses under one root; two roots never see each other.

    The root's directories are joined once, when the ``Paths`` is made: every operation asks for
    several of them, and a ``Path`` join costs microseconds (a copy asked for ~40). Equal,
    hashed and shown by ``root`` alone. (A ``Value``, not an attrs class: every command makes
    one, see ``lxdlib.values``.)"""

    __slots__ = ("root", *_UNDER)
    _fields = ("root",)

    root: Path
    #: liblxc's lxcpath: ``<lxcpath>/<name>/config`` and lxdlib's record beside it.
    lxcpath: Path
    profiles: Path
    images: Path
    pools: Path
    networks: Path
    #: Loop files backing the default pools.
    disks: Path
    locks: Path
    #: Runtime files: pid files, sockets, dnsmasq leases.
    run: Path
    #: Images' metadata.yaml as parsed, one file per text (``load_yaml_kept``); host root's.
    metadata_memos: Path
    #: Custom volumes' records, a directory per pool.
    volume_records: Path

    def __init__(self, root: Path) -> None:
        assign(self, "root", root)
        for attr, leaf in _UNDER.items():
            assign(self, attr, root / leaf)

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None = None) -> Paths:
        return cls(root_path(root))

    def instance_dir(self, name: str) -> Path:
        return self.lxcpath / name

    def instance_record(self, name: str) -> Path:
        return self.lxcpath / name / "instance.yaml"

    @property
    def server_config(self) -> Path:
        return self.root / "server.yaml"

    def dir_modes(self) -> dict[Path, int]:
        """The mode of each directory ``ensure`` makes: searchable (0711, never listable) only
        where someone other than host root must pass — an unprivileged container's root on
        its way to its rootfs (the root, ``storage-pools/``), the unprivileged dnsmasq
        (``run/``), liblxc (the lxcpath); everything else is host root's alone (0700)."""
        return {self.root: 0o711, self.lxcpath: 0o711, self.pools: 0o711, self.run: 0o711,
                self.profiles: 0o700, self.images: 0o700, self.networks: 0o700,
                self.disks: 0o700, self.locks: 0o700, self.volume_records: 0o700}

    def ensure(self) -> None:
        """Make the root's directories and (re)apply their modes, so a root made by an older
        version is closed too."""
        for d, mode in self.dir_modes().items():
            d.mkdir(mode=mode, parents=True, exist_ok=True)
            if stat.S_IMODE(os.lstat(d).st_mode) != mode:
                os.chmod(d, mode)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """``shutil.rmtree(path, ignore_errors=True)``. shutil is imported here, when a tree is
    first removed: it loads bz2 and lzma, ~1.5 ms of the start of every command that would
    import it at its top (exec, config and info remove no tree)."""
    if not os.path.lexists(path):  # the common case (a state directory no verb made)
        return
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def temp_beside(final: str | os.PathLike[str]) -> Path:
    """A name, beside ``final``, for the file a result is written into before it is renamed
    over ``final`` (an export, an image): ``.<name>.<random>.tmp<pid>``. Random, because
    ``final``'s directory is the caller's choice and may be one a host user can write: a
    name known in advance could be planted there (see ``create_private``). The ``.tmp<pid>``
    end is what the command line's progress looks for."""
    import secrets  # here: loads OpenSSL, for exports and image builds only
    p = Path(final)
    return p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp{os.getpid()}")


def create_private(path: str | os.PathLike[str]) -> int:
    """Create ``path`` (a ``temp_beside`` name) for writing: only if nothing is there yet —
    never a file or a link someone else put there, whose target root would otherwise
    truncate and fill, or whose owner would read what root wrote — and readable by its owner
    only from the first byte."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(Path(path)) from None
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a crash leaves the old content or the new, never half.

    ``durable=False`` skips the fsyncs: other processes still see old or new (rename is atomic),
    but a power loss may bring back the old content. For hints such as the last power state.
    """
    p = Path(path)
    # one temp file per thread: two threads of one process writing the same path (outside a
    # lock) must not write into, or rename away, each other's half-written file
    tmp = p.with_name(f".{p.name}.{_thread.get_native_id()}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(p) from None
        raise
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and DiskFull.is_full(e):
            raise DiskFull(p) from None  # the old content is still in place
        raise
    os.close(fd)
    os.replace(tmp, p)
    if durable:
        fsync_dir(p.parent)


# -- renames ---------------------------------------------------------------------------------------

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def libc() -> Any:
    """The process's own symbols, libc's among them, for the calls Python's ``os`` lacks
    (``renameat2``, ``kcmp``, ``setns`` before 3.12). ``find_library("c")`` would run ldconfig,
    ~5 ms; ctypes is imported at the first call, which most commands never make."""
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _renameat2(src: str | os.PathLike[str], dst: str | os.PathLike[str], flags: int) -> None:
    # ctypes here, not at the top: the commands that only read records need none of it
    import ctypes
    rc = libc().renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename that fails with ``FileExistsError`` instead of replacing an (empty) ``dst``."""
    try:
        _renameat2(src, dst, _RENAME_NOREPLACE)
    except OSError as e:
        if e.errno != errno.EINVAL:  # the filesystem has no RENAME_NOREPLACE
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "File exists", os.fspath(dst)) from None
        os.rename(src, dst)


def rename_exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two paths in one step; False where the filesystem cannot (the caller falls back)."""
    try:
        _renameat2(a, b, _RENAME_EXCHANGE)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise
    return True


#: True while the ``lxdlib`` command runs its one verb, in a process that exits right after:
#: work that pays off only in a long-lived process is skipped then (``exchange_if_loaded``;
#: ``runtime`` leaves the pidfd liblxc's attach leaks for the exit to close).
SHORT_LIVED = False


def exchange_if_loaded(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """``rename_exchange`` for a caller whose fallback (renaming ``a`` over ``b``) is as safe,
    only slower: ``swap_write`` and the journal's later stages. A short-lived command that has
    not loaded ctypes falls back at once: ctypes (for libc's ``renameat2``) costs a new process
    ~2.5 ms to load, and the exchange saves ~0.4 ms a write."""
    if SHORT_LIVED and "ctypes" not in sys.modules:
        return False
    return rename_exchange(a, b)


#: The file beside ``<name>`` that ``swap_write`` writes into: the previous content, once swapped.
SPARE_SUFFIX = ".spare"


def spare_path(path: str | os.PathLike[str]) -> str:
    head, _, tail = os.fspath(path).rpartition("/")
    return f"{head}/.{tail}{SPARE_SUFFIX}"


def _unnamed_file(head: str, path: str | os.PathLike[str], data: bytes, mode: int,
                  durable: bool) -> int | None:
    """An unnamed file (``O_TMPFILE``) in directory ``head`` holding ``data`` whole (fsync'd
    when ``durable``): its descriptor, or None where the filesystem has none."""
    try:
        fd = os.open(head, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, mode)
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(Path(path)) from None
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:  # the umask took bits
            os.fchmod(fd, mode)
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        if durable:  # whole on disk before any commit can carry its name
            os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        if isinstance(e, OSError) and DiskFull.is_full(e):
            raise DiskFull(Path(path)) from None
        raise
    return fd


def _link_unnamed(fd: int, path: str | os.PathLike[str]) -> bool:
    """Give the unnamed file ``fd`` its name (and close it): False where ``path`` was made
    meanwhile, or there is no /proc."""
    # linkat(AT_SYMLINK_FOLLOW) of the descriptor's /proc name; ``src_dir_fd`` makes
    # ``os.link`` call linkat (its plain ``link`` would link the /proc symlink itself)
    try:
        os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd, follow_symlinks=True)
    except (FileExistsError, FileNotFoundError):
        return False
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(Path(path)) from None
        raise
    finally:
        os.close(fd)
    return True


def write_new(path: str | os.PathLike[str], data: bytes, mode: int = 0o600,
              durable: bool = True) -> bool:
    """Make ``path``, which must not exist yet, with ``data``: an unnamed file (``O_TMPFILE``)
    written (and fsync'd) whole, then linked under its name. Other processes and a kill -9
    see no file or the whole one, as with a rename, and no temporary name is ever left behind
    (where a spare or a temporary file stays after a kill between its write and its rename).

    Durable, the file is fsync'd before it is linked, and its directory after: two journal
    commits, as a rename's. Linking first and fsyncing once after would save one (~0.04 ms
    here) but open a window: a journal commit by anyone between the link and the fsync, then
    a power loss, would leave the name on an empty file (ext4 allocates the data's blocks
    only at writeback, and its inode's size on disk follows them). False where the
    filesystem has no ``O_TMPFILE``, or ``path`` exists: the caller writes another way."""
    head = os.path.dirname(os.fspath(path)) or "."
    fd = _unnamed_file(head, path, data, mode, durable)
    if fd is None or not _link_unnamed(fd, path):
        return False
    if durable:
        fsync_dir(head)
    return True


class PreparedWrite:
    """A file's next content written (and fsync'd) before it takes the file's name, which
    ``commit`` gives it: the write and its fsync can then run while something else does —
    above all the storage call that makes what the file will name (a volume, a snapshot),
    which must exist before the name does (``lxdlib.background``). ``swap_write``'s ways,
    in two steps; the caller holds the lock every writer of the file holds.

    A file not there yet is prepared as an unnamed file (``O_TMPFILE``), linked at the
    commit; an existing one through its spare file (written and fsync'd here, exchanged with
    the file at the commit). Nothing prepared is seen by anyone before the commit, and a kill
    leaves nothing (the unnamed file) or a spare, which holds no content by definition.
    ``discard`` drops what was prepared. Where neither way is open (no ``O_TMPFILE``, a spare
    that is no plain file) the commit does the whole write."""

    __slots__ = ("_durable", "_fd", "_mode", "_spare_size", "data", "path")

    def __init__(self, path: str | os.PathLike[str], data: bytes, mode: int = 0o600,
                 durable: bool = True) -> None:
        self.path = os.fspath(path)
        self.data, self._mode, self._durable = data, mode, durable
        self._fd: int | None = None
        self._spare_size: int | None = None
        if not os.path.lexists(path):
            self._fd = _unnamed_file(os.path.dirname(self.path) or ".", path, data, mode,
                                     durable)
            if self._fd is not None:
                return
        self._spare_size = _write_spare(self.path, data, mode, durable)

    def commit(self) -> None:
        """Give the prepared content its name (durable: its directory fsync'd too)."""
        path = self.path
        fd, self._fd = self._fd, None
        spare_size, self._spare_size = self._spare_size, None
        if fd is not None:
            if _link_unnamed(fd, path):
                if self._durable:
                    fsync_dir(os.path.dirname(path) or ".")
                return
            # made meanwhile: through the spare, as an existing file
            spare_size = _write_spare(path, self.data, self._mode, self._durable)
        if spare_size is None:  # not a plain file there (a symlink…)
            atomic_write(path, self.data, self._mode, self._durable)
            return
        _swap_spare_in(path, spare_size, self._durable)

    def discard(self) -> None:
        """Drop what was prepared: the file keeps its content (a spare stays a spare)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._spare_size = None


def _write_spare(path: str, data: bytes, mode: int, durable: bool) -> int | None:
    """``data`` written whole into ``path``'s spare file (fsync'd when ``durable``): the
    spare's previous size, or None where the spare is no plain file (the caller writes
    another way)."""
    spare = spare_path(path)
    try:
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(Path(path)) from None
        return None  # not a plain file there (a symlink…)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        if st.st_size > len(data):
            os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(Path(path)) from None  # the old content is still in place
        if isinstance(e, IsADirectoryError):
            return None
        raise
    finally:
        os.close(fd)
    return st.st_size


def _swap_spare_in(path: str, spare_size: int, durable: bool) -> None:
    spare = spare_path(path)
    swapped = False
    # an empty spare was made just now, and where ``path`` is not there either (the first
    # write of a new instance's file) an ``lstat`` spares the exchange that would only fail
    if spare_size or os.path.lexists(path):
        # gone meanwhile (FileNotFoundError): the spare becomes ``path``
        with contextlib.suppress(FileNotFoundError):
            swapped = exchange_if_loaded(spare, path)
    if not swapped:
        os.replace(spare, path)
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def swap_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600,
               durable: bool = True) -> None:
    """``atomic_write`` for a file whose writers all hold one lock (an instance's record and
    liblxc config, under the instance lock): the new content is written into a spare file kept
    beside ``path`` (``.<name>.spare``), which then trades places with ``path`` in one
    ``renameat2(RENAME_EXCHANGE)`` — so the spare then holds the previous content, ready for
    the next write.

    Readers see the old content or the new, never half (as with ``atomic_write``), and a crash
    mid-write leaves only the spare half-written, rewritten whole by the next call. What it
    saves is the new inode per write and the freeing of the old one: on a busy ext4 those two
    cost more than the write and its fsyncs (measured: 0.86 ms against 0.48 ms durable, 0.30
    ms against 0.02 ms not). Two unlocked writers would write into one spare, hence the lock.
    The first write of a file (a new instance's record and liblxc config) needs no spare:
    ``write_new`` makes it whole under its name.
    """
    PreparedWrite(path, data, mode, durable).commit()


# -- records: JSON written, JSON or (older) YAML read ----------------------------------------

class RecordSyntaxError(ValueError):
    """A record file that is neither JSON nor YAML (truncated, hand-edited…); ``reason`` says
    what each parser found. A ``ValueError``, not an ``LxdlibError``: the caller knows which
    object the file belongs to and says so (``CorruptRecord``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RecordNotAFile(RecordSyntaxError, LxdlibError):
    """A record's path holds no regular file: a symlink (refused: it could point at any host
    file) or a directory. Both kinds of error: a caller that turns ``RecordSyntaxError`` into
    ``CorruptRecord`` names the object it belongs to, one that catches ``LxdlibError`` for a
    refused symlink still does; neither sees a bare ``OSError`` (a traceback)."""


#: Characters a YAML 1.1 reader (PyYAML) refuses or takes for a line break inside a quoted
#: string, and JSON's writer leaves as they are: written as JSON's ``\uXXXX`` escapes, which
#: YAML reads too. They occur only inside strings (JSON's own syntax is ASCII). Characters
#: beyond U+FFFF stay as they are: escaped they would be surrogate pairs, which YAML readers
#: take for two lone surrogates.
_YAML_UNSAFE = Pattern("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def _escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _layout(data: dict[Any, Any], newline: str) -> str:
    """A mapping with one entry per line, and a mapping in it the same way one level deeper
    (an instance's config keys, the remotes of ``remotes.yaml``, which shell completion reads
    line by line); the values below are written by the C encoder on one line each (``json``'s
    ``indent`` switches to its Python encoder, ~5 times slower: ~150 calls a record)."""
    inner = newline + "  "
    return "{" + inner + ("," + inner).join(
        f"{_ENCODE(str(k))}: " + (_layout(v, inner) if isinstance(v, dict) and v and
                                  newline == "\n" else _ENCODE(v))
        for k, v in data.items()) + newline + "}"


def encode_record(data: Any) -> bytes:
    """``data`` as lxdlib writes its records: JSON with the entries of the top two levels one
    per line (``_layout``), keys in their order, UTF-8, which any YAML reader reads as the same
    data too.

    Only JSON's types are written (mappings with string keys, lists, strings, integers,
    booleans, None): anything else, such as a datetime, raises ``TypeError`` rather than being
    turned into a string that reads back as something else — the records' ``to_dict`` give
    their times as ISO 8601 strings. A lone surrogate (a byte that is not UTF-8, as Python
    reads one from a command line) cannot be encoded: ``InvalidArgument``, the bad input it
    is. The validators refuse it before anything is made; this is the last stop for a value
    no validator looked at, so that it is a clean error rather than a traceback."""
    text = _layout(data, "\n") if isinstance(data, dict) and data else _ENCODE(data)
    if not text.isascii() or "\x7f" in text:  # most records are ASCII without DEL: no regex
        text = _YAML_UNSAFE.sub(_escape, text)
        try:
            return text.encode()
        except UnicodeEncodeError as e:
            raise InvalidArgument(f"{e.object[e.start:e.end]!r} is not text (a byte that is "
                                  "not UTF-8?): nothing was written") from None
    return text.encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse_record(raw: bytes | str) -> Any:
    """A record's content: JSON, or YAML as versions before JSON records wrote (and as
    someone may write by hand). PyYAML is imported only when the text is not JSON.

    Raises ``RecordSyntaxError`` naming both parsers' complaints when neither reads it."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bytes that are not UTF-8
        json_error = f"not JSON ({_one_line(str(e))})"
    yaml, loader, _ = _yaml()
    try:
        _check_depth(yaml, loader, raw)
        return yaml.load(raw, Loader=loader)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:
        # a syntax error, or a YAML value the safe constructor refuses (a bad timestamp…)
        raise RecordSyntaxError(f"{json_error}, and not YAML either "
                                f"({_one_line(str(e))})") from None


def write_record(path: str | os.PathLike[str], data: Any, durable: bool = True) -> None:
    """Write one of lxdlib's own records (``encode_record``) atomically."""
    atomic_write(path, encode_record(data), durable=durable)


# -- LXD's YAML: backup.yaml, image metadata (from outside: the safe loader) -----------------

def _yaml() -> tuple[Any, Any, Any]:
    """PyYAML, its safe loader and its safe dumper (libyaml's C ones where built: ~10x faster),
    imported at the first call (see the module's docstring)."""
    import yaml
    return (yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader),
            getattr(yaml, "CSafeDumper", yaml.SafeDumper))


def dump_yaml(data: Any) -> str:
    """``data`` as YAML in block style, keys in their order (LXD's formats: backup.yaml)."""
    yaml, _, dumper = _yaml()
    return str(yaml.dump(data, Dumper=dumper, default_flow_style=False, sort_keys=False,
                         allow_unicode=True))


#: How many nodes aliases may add to a YAML document from elsewhere. Each alias is a
#: reference to its anchor's node, so nine lines of ten aliases each name 10**9 strings: what
#: reads the value then (``str``, the JSON of ``load_yaml_kept``) walks every one of them.
MAX_ALIAS_NODES = 10_000


#: How deep collections may nest in YAML from elsewhere. libyaml's composer recurses in C, with
#: no check: ~35,000 nested ``[`` (70 KB of a metadata.yaml) overflowed the C stack, and the
#: process died by SIGSEGV instead of refusing the document. Python's own walkers stop at
#: 1,000 too.
MAX_YAML_DEPTH = 1_000


def _check_depth(yaml: Any, loader_class: Any, text: str | bytes) -> None:
    """Refuse ``text`` if its collections nest deeper than ``MAX_YAML_DEPTH``, found from the
    parser's events (libyaml's parser keeps its own stack; only composing recurses). Each
    level takes a byte at least, so a shorter text is not scanned."""
    if len(text) <= MAX_YAML_DEPTH:
        return
    depth = 0
    for event in yaml.parse(text, Loader=loader_class):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"the YAML document nests deeper than {MAX_YAML_DEPTH} "
                                     "levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_yaml(text: str | bytes) -> Any:
    """YAML with the safe loader: what may come from elsewhere (a backup's index, an image's
    metadata.yaml) is parsed here. A document whose aliases expand it by more than
    ``MAX_ALIAS_NODES`` nodes (or that contains itself) is refused with a ``yaml.YAMLError``,
    as Go's YAML refuses "excessive aliasing": 500 bytes of anchors made each later reader
    of the value, a start among them, take gigabytes and minutes."""
    yaml, loader_class, _ = _yaml()
    _check_depth(yaml, loader_class, text)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(yaml, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_aliases(yaml: Any, top: Any) -> None:
    """Refuse ``top`` (a composed YAML node) if its expanded size — every alias counted as a
    copy of its anchor's node — exceeds its own node count by ``MAX_ALIAS_NODES``, or if a
    node contains itself. Each node is visited once: the sizes of shared nodes are kept."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()
    stack: list[tuple[Any, bool]] = [(top, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = ([c for pair in node.value for c in pair]
                    if isinstance(node, yaml.MappingNode) else list(node.value))
        if done:
            busy.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            continue
        if key in sizes:
            continue
        if key in busy:
            raise yaml.YAMLError("the YAML document contains itself (a recursive alias)")
        busy.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    if sizes[id(top)] - len(sizes) > MAX_ALIAS_NODES:
        raise yaml.YAMLError(f"the YAML document's aliases expand it by more than "
                             f"{MAX_ALIAS_NODES} nodes")


def _open_record(path: str | os.PathLike[str], *, checked: bool = True) -> int:
    """Open a record for reading; a symlinked record is refused (it could point at any host
    file), and so is anything else that is no regular file (a FIFO put in its place would
    hang every listing that reads it, a device would be read for ever): opened without
    waiting, then ``fstat``. ``checked=False``: the caller stats the file itself and
    calls ``_refuse_unless_regular``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RecordNotAFile(f"refusing to read {path}: it is a symlink") from None
        raise
    if checked:
        try:
            _refuse_unless_regular(path, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
    return fd


def _refuse_unless_regular(path: object, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise _not_a_file(path)
    if not stat.S_ISREG(st.st_mode):
        raise RecordNotAFile(f"{path} is not a regular file, not a record file")


def _not_a_file(path: object) -> RecordNotAFile:
    return RecordNotAFile(f"{path} is a directory, not a record file")


def read_record(path: str | os.PathLike[str]) -> Any:
    """Read a record (``parse_record``); a symlinked record is refused (it could point at any
    host file)."""
    try:
        return parse_record(read_fd(_open_record(path)))
    except IsADirectoryError:
        raise _not_a_file(path) from None


def read_fd(fd: int) -> bytes:
    """All of a small file open as ``fd``, which is closed: plain ``read`` calls (a buffered
    file object adds an ``ioctl``, two ``lseek`` and an ``fstat`` to each of the several
    small files a verb reads)."""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: A file changed this recently is not known by its identity and times alone: two writes within
#: one tick of the filesystem's clock could leave the same (``ParsedCache``, and the profiles'
#: composition cache of ``context``).
RECENT_NS = 1_000_000_000


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What tells a file unchanged without reading it: device, inode, size, mtime and ctime
    (every write of lxdlib's gives new times: a new file renamed in, or a spare swapped in)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(st: os.stat_result, recent_ns: int | None = None) -> bool:
    """Whether a file's identity can be trusted: it has not changed within ``recent_ns``
    (default ``RECENT_NS``, read at each call)."""
    window = RECENT_NS if recent_ns is None else recent_ns
    return time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > window


def load_yaml_kept(raw: bytes, memos: str | os.PathLike[str]) -> Any:
    """``load_yaml`` of ``raw`` (YAML from elsewhere: an image's metadata.yaml, which every
    create, start and copy reads for its templates), parsed once per text: the value is kept
    as JSON in a file of the directory ``memos`` (lxdlib's own), beside the exact text it was
    parsed from, and taken from there while the text is the same — so a later command imports
    no PyYAML (~8 ms of a command) and parses nothing (~0.5 ms of a copy).

    The key is the text itself, not a file's identity and times (a file rewritten within one
    tick of the filesystem's clock keeps its times; a snapshot or copy keeps them too). The
    file is named by the text's CRC-32 and length, a name only: its content is used only when
    its text is the same, so a collision is a miss, never a wrong value. Every instance made
    from one image has the same text, hence one memo. A value JSON does not carry exactly (a
    YAML timestamp, binary, a number as a key), and a text that is not UTF-8, are not kept."""
    import zlib
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return load_yaml(raw)
    seen = _KEPT.get(raw)  # this process parsed it already: its JSON, parsed afresh
    if seen is not None:
        return json.loads(seen)
    path = os.path.join(memos, f"{zlib.crc32(raw):08x}-{len(raw)}.json")
    try:
        kept = json.loads(read_fd(_open_record(path)))
        if isinstance(kept, dict) and kept.get("source") == text and "value" in kept:
            _keep(raw, kept["value"])
            return kept["value"]
    except (OSError, ValueError, LxdlibError):  # none yet, a symlink, cut short: parse
        pass
    value = load_yaml(raw)
    try:
        data = encode_record({"source": text, "value": value})
        if json.loads(data)["value"] == value:  # exactly what the safe loader gave
            _keep(raw, value)
            try:
                atomic_write(path, data, durable=False)  # only ever a shortcut
            except FileNotFoundError:  # the directory's first memo
                os.makedirs(memos, mode=0o700, exist_ok=True)
                atomic_write(path, data, durable=False)
    except (TypeError, ValueError, RecursionError, OSError):  # not JSON's, or not writable
        pass
    return value


#: ``load_yaml_kept``'s texts as this process parsed them (the value as JSON: each caller gets
#: a value of its own): a long-lived process (a notebook, a tool) reads no memo file again.
_KEPT: dict[bytes, bytes] = {}


def forget_kept() -> None:
    """Forget the texts this process parsed (the next ``load_yaml_kept`` reads the memos)."""
    _KEPT.clear()


def _keep(raw: bytes, value: Any) -> None:
    if len(_KEPT) >= 256:
        _KEPT.clear()
    _KEPT[raw] = json.dumps(value).encode()


class ParsedCache:
    """Records parsed once per process, reused while the file is unchanged.

    Parsing is what a listing of many instances spends its time on (~0.1 ms a record with
    libyaml, ~0.01 ms as JSON), and between two listings almost no record changes. Each entry
    is keyed by the file's identity and change times — device, inode, size, mtime and ctime,
    read with ``fstat`` on the descriptor that is then read, so key and content belong
    together. Every write gives the file new times (a new file renamed into place,
    ``atomic_write``, or the spare rewritten and swapped in, ``swap_write``). A file changed
    within the last second is not trusted by its identity: two writes inside one tick of the
    filesystem's clock could otherwise leave equal keys (an inode freed and reused at once, or
    swapped back).

    Such a recent file is read again, and its parse reused only if its bytes are the ones
    parsed (or written: ``remember``) before. A verb whose record was just saved — by the
    previous verb, or by this one's own intent — therefore reads it without parsing it.

    Nothing is shared between processes and nothing is written: each process keeps its own.
    The parsed values are shared between callers, who must copy before changing them.
    """

    RECENT_NS = RECENT_NS

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        # path -> (identity, when trusted; the bytes, while not; the parsed value)
        self._entries: dict[str, tuple[tuple[int, ...] | None, bytes | None, Any]] = {}
        self._mutex = _thread.allocate_lock()

    def read(self, path: str | os.PathLike[str]) -> Any:
        """The parsed content of ``path`` (as ``read_record``, from memory when unchanged)."""
        key = os.fspath(path)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is not None:
            # one lstat tells an unchanged file (a symlink put in its place has another inode,
            # and is refused below as ever)
            st = os.lstat(key)
            if hit[0] == file_identity(st):
                return hit[2]
        fd = _open_record(path, checked=False)
        try:
            st = os.fstat(fd)
            _refuse_unless_regular(path, st)
            ident = file_identity(st)
            hit = self._entries.get(key)
            if hit is not None and hit[0] == ident:
                return hit[2]
            chunks = []
            while chunk := os.read(fd, max(st.st_size + 1, 4096)):
                chunks.append(chunk)
        except IsADirectoryError:
            raise _not_a_file(path) from None
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        if hit is not None and hit[1] is not None and hit[1] == raw:
            value = hit[2]  # the bytes parsed (or written) before: their parse stands
        else:
            value = parse_record(raw)
        trusted = settled(st, self.RECENT_NS)
        self._put(key, (ident, None, value) if trusted else (None, raw, value))
        return value

    def remember(self, path: str | os.PathLike[str], raw: bytes, value: Any) -> None:
        """``path`` was just written with ``raw``, whose parse is ``value`` (which the caller
        no longer changes): the next ``read`` that finds these bytes there takes ``value``."""
        self._put(os.fspath(path), (None, raw, value))

    def _put(self, key: str, entry: tuple[tuple[int, ...] | None, bytes | None, Any]) -> None:
        with self._mutex:
            self._entries.pop(key, None)  # re-inserted last: the oldest go first
            self._entries[key] = entry
            while len(self._entries) > self._limit:
                del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        with self._mutex:
            self._entries.clear()


def remove_stale_tmp(directory: Path) -> None:
    """Remove ``.<name>[.<thread>].tmp<pid>`` files left by an atomic write whose process
    died."""
    for entry in directory.glob(".*.tmp*"):
        pid = entry.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


# Locks this thread holds, by lock file: a nested ``lock`` of the same object in the same thread
# (a read-modify-write that calls a method which locks again) re-enters instead of waiting on
# itself until the timeout. Kept per process id: a child forked while a lock is held inherits
# this memory, but it must take the lock itself, not believe it already holds it.
_held = _thread._local()


def _held_counts() -> dict[str, int]:
    counts: dict[str, int] | None = getattr(_held, "counts", None)
    if counts is None or getattr(_held, "pid", None) != os.getpid():
        counts = _held.counts = {}
        _held.pid = os.getpid()
    return counts


def _lock_path(paths: Paths, kind: str) -> str:
    return f"{paths.locks}/{kind}.lock"


def _lock_key(paths: Paths, kind: str, name: str) -> str:
    return f"{paths.locks}/{kind}/{name}"


def lock_offset(name: str) -> int:
    """The byte of its kind's lock file that stands for object ``name``: 62 bits of its
    BLAKE2b digest (two names share one byte with odds of 2^-62; they would only wait for each
    other). ``_blake2`` is the digest's own built-in module: ``hashlib`` loads OpenSSL, several
    milliseconds of every command's start."""
    from _blake2 import blake2b
    digest = blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def _flock_arg(kind: int, start: int, length: int) -> bytes:
    """``struct flock`` as Linux's ``F_OFD_*`` commands take it on a 64-bit machine: type,
    whence, padding, start, length, pid (0), padding (``struct`` would cost an import)."""
    order = sys.byteorder
    return (kind.to_bytes(2, order) + os.SEEK_SET.to_bytes(2, order) + bytes(4)
            + start.to_bytes(8, order, signed=True) + length.to_bytes(8, order, signed=True)
            + bytes(8))


def lock_holder(paths: Paths, kind: str) -> bool:
    """Whether any process holds a lock of ``kind`` (for tests' invariant checks)."""
    try:
        fd = os.open(_lock_path(paths, kind), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        out = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_arg(fcntl.F_WRLCK, 0, 0))
    finally:
        os.close(fd)
    return int.from_bytes(out[:2], sys.byteorder) != fcntl.F_UNLCK


def held(paths: Paths, kind: str, name: str) -> bool:
    """Whether this thread already holds the lock of ``kind``/``name``."""
    return _held_counts().get(_lock_key(paths, kind, name), 0) > 0


def on_behalf(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` made to run on another thread for this one, which waits for it before it takes
    or leaves a lock (``background.beside``): there it holds the locks this thread holds, so
    that a lock of those it takes again is re-entered, as it would be here, instead of waited
    for until the timeout (this thread's own lock), and ``held`` answers as here."""
    counts, pid = _held_counts(), os.getpid()

    def run() -> T:
        _held.counts, _held.pid = counts, pid
        try:
            return fn()
        finally:
            del _held.counts, _held.pid
    return run


@contextlib.contextmanager
def lock(paths: Paths, kind: str, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Hold the exclusive lock on one object (``kind``/``name``) across processes and threads.

    One file per kind (``locks/<kind>.lock``) and one byte of it per object
    (``lock_offset``), locked with an open file description lock (``F_OFD_SETLK``): no file is
    made for a new name (a create or copy paid an inode for its lock, ~0.1 ms on ext4, and the
    files piled up, one per name ever used). The lock belongs to the open file description, so
    every acquisition opens its own and two threads of one process exclude each other as two
    processes do; closing it releases the lock, and a killed process's locks go with it.
    Re-entrant within one thread: whoever reads a record under the lock can call a method that
    locks the same object again to write it.
    """
    key = _lock_key(paths, kind, name)
    counts = _held_counts()
    if counts.get(key, 0) > 0:
        if timeout <= 0:
            # a probe ("is anyone working on it?") answers yes: this thread is
            raise Busy(f"{kind} {name!r} is busy: this thread holds its lock")
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    path = _lock_path(paths, kind)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # a root's first lock: its directory is made once, not per call
        paths.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        arg = _flock_arg(fcntl.F_WRLCK, lock_offset(name), 1)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, arg)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise Busy(f"{kind} {name!r} is busy: another process holds its lock") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        counts[key] = 1
        try:
            yield
        finally:
            counts.pop(key, None)
    finally:
        os.close(fd)  # closing releases the lock


def unlink_record(path: str | os.PathLike[str]) -> None:
    """Remove a record file, or what was put in its place by hand: a symlink or an empty
    directory (a delete of an object whose record is no file). ``RecordNotAFile`` for a
    directory that holds something: that is the user's to look at. ``FileNotFoundError``
    for none."""
    try:
        os.unlink(path)
    except IsADirectoryError:
        try:
            os.rmdir(path)
        except OSError:
            raise RecordNotAFile(f"{path} is a directory that is not empty, not a record "
                                 "file: remove it") from None


def put_back(paths: Paths, kind: str, name: str, record: Path, away: Path) -> bool:
    """Undo a withdrawal a killed delete or rename left: ``away`` (the record it renamed out of
    sight while it waited for the instance changes under way) renamed back to ``record``.

    Only when no live process holds lock ``kind``/``name``, which the delete holds from the
    withdrawal to its end: a probe, never a wait, so a caller holding an instance's lock may
    ask. True if a withdrawn record was there (put back or still owned by a live delete)."""
    if not os.path.lexists(away):
        return False
    try:
        with lock(paths, kind, name, timeout=0):
            if os.path.lexists(away) and not os.path.lexists(record):
                os.rename(away, record)
    except Busy:  # the delete is under way and decides
        pass
    return True
