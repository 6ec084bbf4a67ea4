"""Image tarballs are hostile input: read their metadata without trusting them, unpack them safely.

Two jobs, each shaped by a constraint:

* ``read_metadata`` streams the archive through the decompressor and stops at the first
  ``metadata.yaml``: import must not pay for a full decompression pass, and the member must be a
  regular file (a symlink could make us read any host file, GHSA-j825-cg34-5fr5).
* ``unpack`` must run at GNU tar's speed, so nothing is pre-scanned in Python (and Python's
  ``tarfile`` filters both had bypasses and refuse the absolute symlinks every busybox image has).
  GNU tar already drops leading ``/``, refuses members containing ``..`` and defers symlinks that
  point outside until the end (so ``link/x`` cannot be written through them). We add: tar runs
  without ``CAP_MKNOD`` (no device node can be created anywhere; ``rootfs/dev/*`` is skipped as
  LXD does in user namespaces) or ``CAP_SYS_ADMIN`` (no ``trusted.*`` xattrs), with a scrubbed
  environment; then post-checks that the top-level entries are what they claim to be (the 2026
  rootfs/templates/metadata.yaml symlink CVEs).
"""

from __future__ import annotations

import contextlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from ..errors import (
    TYPE_CHECKING,
    CorruptArchive,
    DeviceNode,
    ImageError,
    InvalidArgument,
    LxdlibError,
    QuotaExceeded,
    ToolMissing,
    UnsafeImage,
    UnsafeLink,
    UnsafeMemberName,
)
from ..fstree import remove_any_depth
from ..logs import get_logger
from ..patterns import Pattern
from ..state import load_yaml
from ..values import Value, assign
from . import compression

if TYPE_CHECKING:
    from typing import IO, Any

log = get_logger(__name__)

#: Refuse metadata.yaml larger than this: it holds a few keys and a template list.
MAX_METADATA_SIZE = 4 * 1024 * 1024

#: Canonical architecture names (as ``uname -m`` prints them) and the other spellings accepted.
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "i686": ("i386", "i486", "i586", "386", "x86"),
    "x86_64": ("amd64", "x64", "x86-64"),
    "armv6l": ("armel",),
    "armv7l": ("armhf", "arm", "armv7"),
    "armv8l": (),
    "aarch64": ("arm64", "armv8", "arm64v8"),
    "ppc": ("powerpc",),
    "ppc64": ("powerpc64",),
    "ppc64le": ("ppc64el", "powerpc64le"),
    "s390x": (),
    "mips": ("mipsel", "mipsle"),
    "mips64": ("mips64el", "mips64le"),
    "riscv32": (),
    "riscv64": (),
    "loongarch64": ("loong64",),
}
_ARCH_LOOKUP = {alias: canon for canon, aliases in ARCHITECTURES.items()
                for alias in (canon, *aliases)}

TEMPLATE_TRIGGERS = ("create", "copy", "start", "rename")

# Members tar must not extract: device nodes live in /dev, which liblxc populates itself.
_ROOTFS_DEV_EXCLUDES = ("rootfs/dev/*", "./rootfs/dev/*")
_DEV_EXCLUDES = ("dev/*", "./dev/*")
# A split image's metadata tarball has no say in its rootfs (see ``unpack``).
_ROOTFS_EXCLUDES = ("rootfs", "./rootfs", "rootfs/*", "./rootfs/*")
# Capabilities tar keeps: enough to restore owners, modes (setuid too), file capabilities.
_TAR_CAPS = "-all,+chown,+dac_override,+dac_read_search,+fowner,+fsetid,+setfcap"
_SPACE_ERRORS = ("No space left on device", "Disk quota exceeded", "Wrote only")


def normalise_architecture(name: str) -> str:
    """The canonical name of an architecture (``amd64`` → ``x86_64``); ``ImageError`` if unknown."""
    canon = _ARCH_LOOKUP.get(name.strip().lower()) if isinstance(name, str) else None
    if canon is None:
        raise ImageError(f"Unknown architecture {name!r}")
    return canon


class ImageMetadata(Value, frozen=True):
    """What an image's ``metadata.yaml`` says, checked and normalised."""

    _fields = ("architecture", "creation_date", "expiry_date", "properties", "templates")
    __slots__ = _fields

    architecture: str
    creation_date: datetime
    expiry_date: datetime | None
    properties: dict[str, str]
    templates: dict[str, dict[str, Any]]

    def __init__(self, architecture: str, creation_date: datetime,
                 expiry_date: datetime | None, properties: dict[str, str],
                 templates: dict[str, dict[str, Any]]) -> None:
        assign(self, "architecture", architecture)
        assign(self, "creation_date", creation_date)
        assign(self, "expiry_date", expiry_date)
        assign(self, "properties", properties)
        assign(self, "templates", templates)


def _epoch(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImageError(f"Invalid metadata.yaml: {key} must be a unix timestamp, not {value!r}")
    if value < 0:
        raise ImageError(f"Invalid metadata.yaml: {key} must not be negative")
    return int(value)


def _scalar(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ImageError(f"Invalid metadata.yaml: property {key!r} must be a string")


def _check_templates(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ImageError("Invalid metadata.yaml: templates must be a mapping")
    out: dict[str, dict[str, Any]] = {}
    for target, spec in raw.items():
        if not isinstance(target, str) or not target.startswith("/") or "\0" in target:
            raise ImageError(f"Invalid template target {target!r}: must be an absolute path")
        if not isinstance(spec, dict):
            raise ImageError(f"Invalid template for {target}: must be a mapping")
        name = spec.get("template")
        if (not isinstance(name, str) or not name or name.startswith("/") or "\0" in name
                or ".." in name.split("/")):
            raise ImageError(f"Invalid template file {name!r} for {target}")
        when = spec.get("when", [])
        if not isinstance(when, list) or any(w not in TEMPLATE_TRIGGERS for w in when):
            raise ImageError(f"Invalid template triggers {when!r} for {target}: use "
                             + ", ".join(TEMPLATE_TRIGGERS))
        props = spec.get("properties") or {}
        if not isinstance(props, dict):
            raise ImageError(f"Invalid template properties for {target}")
        out[target] = {
            "template": name,
            "when": list(when),
            "create_only": bool(spec.get("create_only", False)),
            "properties": {str(k): _scalar(v, str(k)) for k, v in props.items()},
        }
    return out


def parse_metadata(data: bytes) -> ImageMetadata:
    """Check the content of a ``metadata.yaml`` as LXD does (known architecture, non-zero date)."""
    import yaml  # here: only an image import reads a tarball's metadata.yaml
    try:
        doc = load_yaml(data)  # the safe loader, and no alias bombs
    except yaml.YAMLError as e:
        raise ImageError(f"Invalid metadata.yaml: {e}") from None
    if not isinstance(doc, dict):
        raise ImageError("Invalid metadata.yaml: not a mapping")
    arch = doc.get("architecture")
    if not arch:
        raise ImageError("Missing architecture")
    architecture = normalise_architecture(arch)
    created = doc.get("creation_date")
    if created is None or created == 0:
        raise ImageError("Missing creation date")
    creation = datetime.fromtimestamp(_epoch(created, "creation_date"), UTC)
    expiry_raw = doc.get("expiry_date") or 0
    expiry = (datetime.fromtimestamp(_epoch(expiry_raw, "expiry_date"), UTC)
              if expiry_raw else None)
    props = doc.get("properties") or {}
    if not isinstance(props, dict):
        raise ImageError("Invalid metadata.yaml: properties must be a mapping")
    properties = {str(k): _scalar(v, str(k)) for k, v in props.items() if v is not None}
    return ImageMetadata(architecture=architecture, creation_date=creation, expiry_date=expiry,
                         properties=properties, templates=_check_templates(doc.get("templates")))


def member_name(name: str) -> str:
    """A member name as tar would write it: leading ``/`` and ``./`` removed."""
    while True:
        stripped = name.lstrip("/")
        if stripped.startswith("./"):
            stripped = stripped[2:]
        if stripped == name:
            return name
        name = stripped


class _Decompressed:
    """The tar stream inside an image file, from a decompressor child reading the file on stdin
    (so its messages say "stdin", not our temp file name). ``close`` ends the child however far
    the stream was read and keeps the child's own error, if it failed by itself."""

    def __init__(self, path: Path) -> None:
        import subprocess
        argv = compression.decompress_argv(compression.detect(path))
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""
        if argv is None:
            self.stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in close()
            return
        with open(path, "rb") as src:
            self.proc = subprocess.Popen(argv, stdin=src, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=compression.tool_env())
        assert self.proc.stdout is not None
        self.stream = self.proc.stdout

    def close(self) -> None:
        import subprocess
        self.stream.close()  # a healthy decompressor now dies of SIGPIPE: nothing is buffered
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode > 0:
            self.error = err.decode(errors="replace").strip()


def read_metadata(path: str | os.PathLike[str]) -> ImageMetadata:
    """Stream the image (or split metadata tarball) at ``path`` until its ``metadata.yaml``."""
    import tarfile
    p = Path(path)
    kind = compression.detect(p)
    if kind not in compression.TAR_KINDS:
        raise ImageError(f"Unsupported image format: {kind} (expected a tarball)")
    data: bytes | None = None
    failure = ""
    source = _Decompressed(p)
    try:
        with tarfile.open(fileobj=source.stream, mode="r|") as tf:
            for member in tf:
                if member_name(member.name) != "metadata.yaml":
                    continue
                if not member.isreg():
                    raise ImageError('Cannot read non-regular file "metadata.yaml"')
                if member.size > MAX_METADATA_SIZE:
                    raise ImageError("metadata.yaml is too large")
                f = tf.extractfile(member)
                assert f is not None
                data = f.read()
                break
    except (tarfile.TarError, EOFError, OSError) as e:
        failure = str(e) or type(e).__name__
    finally:
        source.close()
    if data is None:
        failure = source.error or failure
        if failure:
            raise CorruptArchive(f"Invalid image tarball: {failure}")
        raise ImageError("Metadata tarball is missing metadata.yaml")
    return parse_metadata(data)


# -- unpack ---------------------------------------------------------------------------------------

def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _out_of_space(dest: Path) -> bool:
    """tar reports a short write without errno ("Wrote only 2048 of 10240 bytes"): judge by what
    is left on the destination filesystem, as LXD does. A filesystem without an inode count
    (btrfs reports ``f_files == 0``) never runs out of inodes."""
    try:
        st = os.statvfs(dest)
    except OSError:
        return False
    return st.f_bavail < 16 or (st.f_files > 0 and st.f_favail == 0)


_CORRUPT = ("Unexpected EOF in archive", "unexpected end of file", "does not look like a tar",
            "Skipping to next header", "invalid compressed data", "corrupt input",
            "Error is not recoverable", "premature end", "Truncated input")


def tar_failure(err: str, dest: Path, prefix: str,
                full: str = "Cannot unpack image, run out of disk space") -> LxdlibError:
    """The typed error for a failed GNU tar extraction into ``dest`` (its stderr ``err``):
    out of space, a ``..`` member, a refused hard link, a device node, a truncated or corrupt
    archive — each its own class, checked in that order — else a plain ``ImageError``.
    ``full`` is the message when the filesystem is full."""
    detail = f"{prefix}: " + _tail(err)
    if any(s in err for s in _SPACE_ERRORS):
        return QuotaExceeded(full)
    if "Member name contains '..'" in err:
        return UnsafeMemberName(detail)
    if "Cannot hard link to" in err:
        return UnsafeLink(detail)
    if "Cannot mknod" in err:
        return DeviceNode(f"{prefix}: device nodes outside /dev: " + _tail(err, 3))
    if any(s in err for s in _CORRUPT):
        return CorruptArchive(f"{prefix}: the archive is truncated or corrupt: " + _tail(err, 3))
    if _out_of_space(dest):
        return QuotaExceeded(full)
    return ImageError(detail)


def _run_tar(archive: Path, dest: Path, excludes: tuple[str, ...]) -> None:
    # ``shutil``, ``subprocess`` and ``tarfile`` are imported by the functions that unpack or
    # read an image: ~4 ms of the start of every command that names the image store (a local
    # ``launch`` reads only its records)
    import shutil
    import subprocess
    kind = compression.detect(archive)
    flags = compression.tar_flags(kind)
    setpriv = shutil.which("setpriv")
    tar = shutil.which("tar")
    if setpriv is None or tar is None:
        raise ToolMissing("GNU tar and setpriv (util-linux) are needed to unpack images")
    argv = [setpriv, f"--bounding-set={_TAR_CAPS}", "--", tar,
            "--restrict", "--force-local", "--numeric-owner", "--same-owner",
            "--same-permissions", "--xattrs-include=*", "--anchored", "--wildcards",
            *(f"--exclude={pattern}" for pattern in excludes),
            *flags, "-x", "-f", str(archive), "-C", str(dest)]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=compression.tool_env(), check=False)
    if proc.returncode == 0:
        return
    err = proc.stderr.decode(errors="replace").replace(f"{tar}:", "tar:")
    raise tar_failure(err or f"tar exited with {proc.returncode}", dest, "Unpack failed")


def _run_unsquashfs(archive: Path, dest: Path) -> None:
    """A split image's squashfs rootfs, with the same limits as tar: no device nodes (``dev/*``
    is excluded and CAP_MKNOD dropped), no trusted xattrs, a scrubbed environment.
    unsquashfs (>= 4.5.1) refuses names with ``/`` or ``..`` and writes through no symlink."""
    import shutil
    import subprocess
    setpriv = shutil.which("setpriv")
    unsquashfs = shutil.which("unsquashfs")
    if setpriv is None or unsquashfs is None:
        raise ToolMissing("unsquashfs (Debian's squashfs-tools) is needed to unpack an image "
                          "whose rootfs is a squashfs")
    argv = [setpriv, f"--bounding-set={_TAR_CAPS}", "--", unsquashfs, "-f", "-n", "-q",
            "-excludes", "-d", str(dest), str(archive), "dev/*"]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=compression.tool_env(), check=False)
    if proc.returncode == 0:
        return
    err = proc.stdout.decode(errors="replace")
    if any(s in err for s in _SPACE_ERRORS) or _out_of_space(dest):
        raise QuotaExceeded("Cannot unpack image, run out of disk space")
    if "failed to create character device" in err or "failed to create block device" in err:
        raise UnsafeImage("Image contains device nodes outside /dev: " + _tail(err, 3))
    raise ImageError("Unpack failed: " + (_tail(err) or f"unsquashfs exited with "
                                          f"{proc.returncode}"))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _real_dir(path: Path, what: str) -> bool:
    """True if ``path`` is a directory, False if absent; ``UnsafeImage`` for anything else."""
    st = _lstat(path)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeImage(f'Image "{what}" is not a directory (a symlink or a file)')
    return True


def check_host_files(volume: Path, what: str) -> None:
    """``metadata.yaml`` and the files of ``templates/`` are read by host root at every start,
    and the container must not reach them. A hard link shares an inode: an archive that links
    ``rootfs/etc/x`` to ``metadata.yaml`` (or to a template) gives the container's root the
    file host root reads — the templates it renders, with the instance's whole config, and
    YAML to parse. So none of them may have a second name (``UnsafeImage``)."""
    tdir = _lstat(volume / "templates")
    if tdir is not None and stat.S_ISDIR(tdir.st_mode):
        for top, _, files in os.walk(volume / "templates"):
            for entry in files:
                if os.lstat(os.path.join(top, entry)).st_nlink != 1:
                    raise UnsafeImage(f'{what}: template "{entry}" is hard-linked to another '
                                      "file (perhaps in the rootfs)")
    meta = _lstat(volume / "metadata.yaml")
    if meta is not None and stat.S_ISREG(meta.st_mode) and meta.st_nlink != 1:
        raise UnsafeImage(f"{what}: metadata.yaml is hard-linked to another file "
                          "(perhaps in the rootfs)")


def _post_check(dest: Path) -> None:
    meta = _lstat(dest / "metadata.yaml")
    if meta is None:
        raise ImageError("Metadata tarball is missing metadata.yaml")
    if not stat.S_ISREG(meta.st_mode):
        raise UnsafeImage('Cannot read non-regular file "metadata.yaml"')
    if _real_dir(dest / "templates", "templates"):
        for top, dirs, files in os.walk(dest / "templates"):
            for entry in (*dirs, *files):
                if os.path.islink(os.path.join(top, entry)):
                    raise UnsafeImage(f'Image template "{entry}" is a symlink')
    check_host_files(dest, "Image")
    rootfs = dest / "rootfs"
    if not _real_dir(rootfs, "rootfs"):
        raise ImageError("Image is missing a rootfs")
    with os.scandir(rootfs) as it:
        if next(it, None) is None:
            raise ImageError("Image is missing a rootfs")
    if _lstat(rootfs / "dev") is None:
        os.mkdir(rootfs / "dev", 0o755)


def empty_dir(path: Path) -> None:
    """Remove everything inside ``path`` without following any symlink found there, at any
    depth (see ``lxdlib.fstree``)."""
    entries: list[os.DirEntry[str]] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(path) as it:
        entries = list(it)

    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                remove_any_depth(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as e:
            log.warning("cannot remove %s while emptying %s: %s", entry.path, path, e)


def unpack(image: str | os.PathLike[str], dest: str | os.PathLike[str], *,
           rootfs: str | os.PathLike[str] | None = None) -> None:
    """Unpack an image into the existing empty directory ``dest``.

    ``image`` is a unified tarball (``metadata.yaml``, ``rootfs/``, ``templates/``) or, with
    ``rootfs``, the metadata tarball of a split image whose rootfs tarball is unpacked into
    ``dest/rootfs``. On any failure ``dest`` is emptied again and a typed error raised:
    ``UnsafeImage`` (hostile layout), ``QuotaExceeded`` (out of space) or ``ImageError``.
    """
    image_p, dest_p = Path(image), Path(dest)
    st = _lstat(dest_p)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"unpack destination {dest_p} is not a directory")
    with os.scandir(dest_p) as it:
        if next(it, None) is not None:
            raise InvalidArgument(f"unpack destination {dest_p} is not empty")
    log.debug("unpacking %s%s into %s", image_p,
              f" with rootfs {rootfs}" if rootfs is not None else "", dest_p)
    try:
        _run_tar(image_p, dest_p, _ROOTFS_DEV_EXCLUDES if rootfs is None else _ROOTFS_EXCLUDES)
        if rootfs is not None:
            # A split image's rootfs comes from its rootfs file alone. Whatever the metadata
            # tarball put under rootfs/ (a name the excludes missed) goes before the second
            # unpack: that one would follow a symlink left there (rootfs/x -> /etc makes a
            # member x/cron.d/job land in the host's /etc).
            root = dest_p / "rootfs"
            if _lstat(root) is not None:
                if _real_dir(root, "rootfs"):
                    remove_any_depth(root)
                else:
                    os.unlink(root)
            os.mkdir(root, 0o755)
            if compression.detect(rootfs) == "squashfs":
                _run_unsquashfs(Path(rootfs), root)
            else:
                _run_tar(Path(rootfs), root, _DEV_EXCLUDES)
        _post_check(dest_p)
    except BaseException as e:
        log.debug("unpacking %s failed (%s): emptying %s", image_p, e, dest_p)
        empty_dir(dest_p)
        raise
    finally:
        # A "./" member would otherwise hand the volume root's owner and mode to the image.
        try:
            os.chown(dest_p, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(dest_p, stat.S_IMODE(st.st_mode))
        except OSError as e:
            log.warning("cannot give %s its owner and mode back after unpacking: %s", dest_p, e)
    log.debug("unpacked %s into %s", image_p, dest_p)


_HEX64 = Pattern(r"[0-9a-f]{64}")


def is_fingerprint(value: str) -> bool:
    """A full image fingerprint: 64 lowercase hex digits (the only form used in paths)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None
