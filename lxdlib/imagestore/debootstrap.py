"""Build a Debian system-container image with debootstrap.

``debootstrap`` gives a plain chroot; a container image needs more: metadata.yaml with the
properties ``image list`` shows, hostname/hosts templates so every instance gets its own name,
DHCP on ``eth0`` (systemd-networkd), an empty /etc/machine-id (systemd writes a fresh one on first
boot, so copies never share an id), no host files debootstrap copied in (hostname, hosts,
resolv.conf), no device nodes (liblxc populates /dev) and empty apt caches. The result is a
unified tarball (``metadata.yaml``, ``templates/``, ``rootfs/``) packed by GNU tar with numeric
owners, which ``ImageStore.import_file`` takes like any other image.

The work directory is always removed, also on failure or Ctrl-C; the output appears atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ImageError, InvalidArgument, ToolMissing
from ..logs import get_logger
from ..patterns import Pattern
from . import compression as comp

__all__ = ["COMPRESSIONS", "DEFAULT_INCLUDE", "build_debian_image"]

log = get_logger(__name__)

COMPRESSIONS = ("gzip", "xz", "zstd", "none")
#: Packages added to the variant: systemd as init (its networkd does DHCP), udev (networkd
#: waits for udev to initialise a link whenever /sys is writable, as it is in an unprivileged
#: container), ``ip`` for users.
DEFAULT_INCLUDE = ("systemd-sysv", "udev", "iproute2")

#: A Debian package name (policy 5.6.1), optionally with an architecture qualifier: nothing that
#: debootstrap could read as an option, a list separator or a second line.
_PACKAGE_RE = Pattern(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?")

#: ``progress(step)``: coarse, human-readable build steps.
Progress = Callable[[str], None]

_NETWORK = """\
# DHCP on the container's eth0 (written by lxdlib's debian image builder).
[Match]
Name=eth0

[Network]
DHCP=ipv4
"""

_HOSTS_TPL = """\
127.0.0.1\tlocalhost
127.0.1.1\t{{ container.name }}

# The following lines are desirable for IPv6 capable hosts
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""

# Units that cannot work in an unprivileged container and would only show up as failed or
# waste boot time. (Most others skip themselves through ConditionVirtualization/Capability.)
_MASK = (
    "systemd-journald-audit.socket",   # no audit netlink in a user namespace
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "systemd-networkd-wait-online.service",  # would hold boot up when no NIC is attached
)

_WHEN = ["create", "copy", "rename"]
_CACHE_MARK = ".complete"


def _step(progress: Progress | None, text: str) -> None:
    log.debug("debian image: %s", text)
    if progress is not None:
        progress(text)


def _run(argv: Sequence[str], what: str, timeout: float | None = None) -> str:
    """Run a tool; its stderr tail becomes the ``ImageError`` if it fails."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                           timeout=timeout, env=comp.tool_env())
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]} not found: install Debian's {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what} timed out") from None
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise ImageError(f"{what} failed (exit {r.returncode}): {tail}")
    log.debug("ran %s (%s)", " ".join(argv), what)
    return r.stdout


def _cache_key(release: str, variant: str, mirror: str, include: Sequence[str],
               arch: str) -> str:
    text = "\0".join([release, variant, mirror, arch, *sorted(include)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _debootstrap(rootfs: Path, release: str, variant: str, mirror: str,
                 include: Sequence[str], cache_dir: Path | None, arch: str,
                 progress: Progress | None) -> None:
    """Fill ``rootfs``: from the cache when an identical debootstrap finished there before."""
    cached = None
    if cache_dir is not None:
        cached = cache_dir / _cache_key(release, variant, mirror, include, arch)
        if (cached / _CACHE_MARK).exists():
            _step(progress, f"Copying cached debootstrap of {release}")
            _run(["cp", "-a", "--reflink=auto", str(cached / "rootfs"), str(rootfs)],
                 "copying the cached rootfs")
            return
    _step(progress, f"Running debootstrap ({release}, {variant}) from {mirror}")
    argv = ["debootstrap", f"--variant={variant}"]
    if include:
        argv.append("--include=" + ",".join(include))
    _run([*argv, release, str(rootfs), mirror], "debootstrap")
    if cached is not None:
        _step(progress, "Saving the debootstrap in the cache")
        cached.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cached / "rootfs", ignore_errors=True)
        _run(["cp", "-a", "--reflink=auto", str(rootfs), str(cached / "rootfs")],
             "caching the rootfs")
        (cached / _CACHE_MARK).touch()


def _empty_dir(d: Path) -> None:
    if not d.is_dir() or d.is_symlink():
        return
    for entry in d.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _customize(rootfs: Path) -> None:
    """Turn the chroot into a container rootfs (see the module docstring for why each step)."""
    etc = rootfs / "etc"
    # Host files debootstrap copied in; the templates write hostname/hosts per instance.
    (etc / "hostname").write_text("debian\n")
    (etc / "hosts").write_text(_HOSTS_TPL.replace("{{ container.name }}", "debian"))
    resolv = etc / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("")
    machine_id = etc / "machine-id"
    machine_id.unlink(missing_ok=True)
    machine_id.write_text("")
    machine_id.chmod(0o444)
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # DHCP on eth0 through systemd-networkd, enabled as `systemctl enable` would.
    netdir = etc / "systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "eth0.network").write_text(_NETWORK)
    _run(["chroot", str(rootfs), "systemctl", "enable", "systemd-networkd.service"],
         "enabling systemd-networkd")
    _run(["chroot", str(rootfs), "systemctl", "mask", *_MASK], "masking units")
    # liblxc mounts and fills /dev itself; the image keeps no device nodes.
    _empty_dir(rootfs / "dev")
    # apt caches and lists: big and stale by the time the image is used.
    _empty_dir(rootfs / "var/cache/apt/archives/partial")
    for f in (rootfs / "var/cache/apt").glob("*.bin"):
        f.unlink()
    for f in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        f.unlink()
    lists = rootfs / "var/lib/apt/lists"
    for f in lists.iterdir() if lists.is_dir() else ():
        if f.is_file() and f.name != "lock":
            f.unlink()
    (rootfs / "var/log/bootstrap.log").unlink(missing_ok=True)


def _metadata(release: str, variant: str, arch: str, now: int,
              packages: Sequence[str] = ()) -> dict[str, object]:
    date = time.strftime("%Y%m%d_%H:%M", time.gmtime(now))
    props: dict[str, str] = {
        "architecture": arch,
        "description": f"Debian {release} ({arch}) ({date})",
        "os": "debian",
        "release": release,
        "variant": variant,
        "serial": date,
    }
    if packages:
        # `image list`/`image info` show what was added on top of the plain system
        props["packages"] = " ".join(packages)
    return {
        "architecture": arch,
        "creation_date": now,
        "properties": props,
        "templates": {
            "/etc/hostname": {"when": _WHEN, "template": "hostname.tpl"},
            "/etc/hosts": {"when": _WHEN, "template": "hosts.tpl"},
        },
    }


def _pack(work: Path, out: Path, compression: str) -> None:
    """``tar -C work metadata.yaml templates rootfs | compressor > out`` (atomic rename)."""
    tar = shutil.which("tar")
    if tar is None:
        raise ToolMissing("GNU tar is needed to pack images")
    compress = None if compression == "none" else comp.compress_argv(compression)
    from ..state import create_private, temp_beside
    tmp = temp_beside(out)  # made here, not found there: ``out`` may be in a user's directory
    argv = [tar, "--numeric-owner", "--sort=name", "--format=posix", "--xattrs",
            "--xattrs-include=security.capability", "-cf", "-", "-C", str(work),
            "metadata.yaml", "templates", "rootfs"]
    env = comp.tool_env()
    try:
        with os.fdopen(create_private(tmp), "wb") as f:
            if compress is None:
                r = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, env=env, check=False)
                if r.returncode != 0:
                    raise ImageError(f"tar failed: {r.stderr.decode(errors='replace')[-500:]}")
            else:
                ptar = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env)
                assert ptar.stdout is not None
                pz = subprocess.Popen(compress, stdin=ptar.stdout, stdout=f,
                                      stderr=subprocess.PIPE, env=env)
                ptar.stdout.close()
                _, zerr = pz.communicate()
                terr = ptar.stderr.read() if ptar.stderr else b""
                ptar.wait()
                if ptar.returncode != 0 or pz.returncode != 0:
                    msg = (terr or zerr).decode(errors="replace")[-500:]
                    raise ImageError(f"packing the image failed: {msg}")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("packed %s into %s (%s)", work, out, compression)


def _remove(work: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted under ``work`` (/proc, /sys in the
    chroot), deepest first, then delete it: rmtree must never walk into a live /proc or /sys."""
    prefix = str(work) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for mp in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        r = subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
        if r.returncode != 0:
            log.warning("cannot unmount %s left by debootstrap: %s", mp,
                        r.stderr.decode(errors="replace").strip())
        else:
            log.debug("unmounted %s left by debootstrap", mp)
    try:
        shutil.rmtree(work)
    except OSError as e:
        log.warning("cannot remove the work directory %s: %s", work, e)



def build_debian_image(out: str | os.PathLike[str], *, release: str = "bookworm",
                       variant: str = "minbase", mirror: str = "http://deb.debian.org/debian",
                       include: Sequence[str] = DEFAULT_INCLUDE, compression: str = "xz",
                       progress: Progress | None = None,
                       cache_dir: str | os.PathLike[str] | None = None,
                       packages: Sequence[str] = ()) -> Path:
    """Debootstrap ``release`` and write it to ``out`` as a unified image; return ``out``.

    ``packages`` are installed on top of ``include`` (with their dependencies, not their
    recommendations) by the same debootstrap run: the host downloads them, so the image carries
    software such as ``docker.io`` and instances never need a network to install it. The
    downloaded .debs live in the work directory and go with it.

    ``compression`` is gzip, xz, zstd or none. ``cache_dir`` (internal: tests and repeated
    builds) keeps the plain debootstrap output per (release, variant, mirror, include, arch) and
    reuses it instead of downloading again. Needs root (debootstrap, chroot, ownership).
    """
    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"compression must be one of {', '.join(COMPRESSIONS)}")
    for name, value in (("release", release), ("variant", variant)):
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise InvalidArgument(f"invalid {name} {value!r}")
    if not mirror.startswith(("http://", "https://", "file:/")):
        raise InvalidArgument(f"invalid mirror {mirror!r} (http://, https:// or file:/)")
    for what, names in (("package list", include), ("packages", packages)):
        if isinstance(names, str) or any(not isinstance(p, str) or not _PACKAGE_RE.fullmatch(p)
                                         for p in names):
            raise InvalidArgument(f"invalid {what} {list(names)!r}: Debian package names "
                                  "are lower-case letters, digits and + - .")
    include = list(dict.fromkeys([*include, *packages]))
    if shutil.which("debootstrap") is None:
        raise ToolMissing("debootstrap not found: install Debian's debootstrap")
    if os.geteuid() != 0:
        raise ImageError("building a debian image needs root (debootstrap, chroot)")
    out_p = Path(out)
    arch = os.uname().machine
    work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=out_p.parent))
    try:
        rootfs = work / "rootfs"
        _debootstrap(rootfs, release, variant, mirror, include,
                     Path(cache_dir) if cache_dir is not None else None, arch, progress)
        _step(progress, "Configuring the rootfs for containers")
        _customize(rootfs)
        meta = _metadata(release, variant, arch, int(time.time()), packages)
        import yaml  # here: only building an image writes (LXD's) metadata.yaml
        (work / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=True))
        templates = work / "templates"
        templates.mkdir()
        (templates / "hostname.tpl").write_text("{{ container.name }}\n")
        (templates / "hosts.tpl").write_text(_HOSTS_TPL)
        _step(progress, f"Packing the image ({compression})")
        _pack(work, out_p, compression)
    finally:
        _remove(work)
    _step(progress, "Done")
    return out_p
