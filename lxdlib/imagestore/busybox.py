"""Build a small, self-contained unified image from the host's static busybox.

The image lets lxdlib (and its tests) launch real containers with no network access to an image
server. It is deterministic: the same busybox binary always gives a byte-identical tarball (sorted
members, every time set to the binary's mtime, owner root, gzip header without name or time), so
its fingerprint is stable and a second build is recognised as the same image.

Boot: liblxc mounts /proc, /sys and /dev; busybox ``init`` (pid 1) runs ``/etc/init.d/rcS`` once
(tmpfs on /run and /dev/shm, ``lo`` up, DHCP on ``eth0`` in the background) and then just stays,
reaping orphans. busybox init halts on SIGPWR (liblxc's default stop signal) and SIGUSR1/SIGUSR2,
and reboots on SIGTERM.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import subprocess
import tarfile
from pathlib import Path

from ..errors import TYPE_CHECKING, ImageError, InvalidArgument, ToolMissing
from ..logs import get_logger

if TYPE_CHECKING:
    from typing import IO

log = get_logger(__name__)

COMPRESSIONS = ("gzip", "xz", "none")

_INITTAB = """\
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
"""

_RCS = """\
#!/bin/sh
# One-shot boot of the busybox image. liblxc has mounted /proc, /sys and /dev already.
[ -e /proc/self ] || mount -t proc proc /proc
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run 2>/dev/null
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm 2>/dev/null
[ -s /etc/hostname ] && hostname -F /etc/hostname 2>/dev/null
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    # Foreground client sent to the background: boot does not wait, renewals keep working.
    udhcpc -i eth0 -f -t 5 -T 1 -A 3 -x "hostname:$(hostname)" \\
        -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &
fi
exit 0
"""

_UDHCPC_SCRIPT = """\
#!/bin/sh
# udhcpc event script: apply the lease to $interface (address, default route, resolv.conf).
RESOLV_CONF="${RESOLV_CONF:-/etc/resolv.conf}"

prefix_of() {  # dotted netmask -> prefix length
    n=0
    for octet in $(echo "$1" | tr . ' '); do
        case "$octet" in
            255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;;
            248) n=$((n + 5)) ;; 240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;;
            192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;;
        esac
    done
    echo "$n"
}

case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        plen="${mask:-$(prefix_of "${subnet:-255.255.255.0}")}"
        if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$plen "; then
            ip -4 addr flush dev "$interface"
            ip -4 addr add "$ip/$plen" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        fi
        if [ -n "$router" ]; then
            while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
            for r in $router; do
                ip -4 route add default via "$r" dev "$interface" && break
            done
        fi
        {
            [ -n "$domain" ] && echo "search $domain"
            for d in $dns; do echo "nameserver $d"; done
        } > "$RESOLV_CONF.tmp" && mv "$RESOLV_CONF.tmp" "$RESOLV_CONF"
        ;;
esac
exit 0
"""

_DIRS = {  # rootfs directory -> mode
    "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "usr/share": 0o755, "usr/share/udhcpc": 0o755, "etc": 0o755, "etc/init.d": 0o755,
    "dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777, "root": 0o700,
    "home": 0o755, "mnt": 0o755, "var": 0o755, "var/log": 0o755, "var/tmp": 0o1777,
}


def _busybox_info(busybox: Path) -> tuple[str, list[str]]:
    """The busybox version and the applet paths it installs (``--list-full``)."""
    try:
        banner = subprocess.run([str(busybox)], capture_output=True, check=False).stdout
        listing = subprocess.run([str(busybox), "--list-full"], capture_output=True,
                                 check=True).stdout
    except FileNotFoundError:
        raise ToolMissing(f"{busybox} not found: install Debian's busybox-static") from None
    except (subprocess.CalledProcessError, OSError) as e:
        raise ImageError(f"cannot run {busybox}: {e}") from None
    m = re.search(rb"BusyBox v([0-9][0-9A-Za-z.+~-]*)", banner)
    if m is None:
        raise ImageError(f"{busybox} does not look like busybox")
    applets = []
    for line in listing.decode().splitlines():
        rel = line.strip().lstrip("/")
        if not rel or rel == "bin/busybox" or ".." in rel.split("/"):
            continue
        applets.append(rel)
    return m.group(1).decode(), sorted(set(applets))


def _entries(busybox: Path, arch: str) -> tuple[list[tuple[str, str, int, bytes | str]], int]:
    """(member name, kind d/f/l, mode, data or link target) for every member, and the mtime."""
    import yaml  # here: only building the image writes its (LXD's) metadata.yaml
    version, applets = _busybox_info(busybox)
    binary = busybox.read_bytes()
    mtime = int(busybox.stat().st_mtime)
    metadata = {
        "architecture": arch,
        "creation_date": mtime,
        "properties": {
            "architecture": arch,
            "description": f"busybox {version} ({arch})",
            "os": "busybox",
            "release": version,
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy", "rename"], "template": "hostname.tpl"},
        },
    }
    files: dict[str, tuple[str, int, bytes | str]] = {
        "metadata.yaml": ("f", 0o644, yaml.safe_dump(metadata, sort_keys=True).encode()),
        "templates": ("d", 0o755, b""),
        "templates/hostname.tpl": ("f", 0o644, b"{{ container.name }}\n"),
        "rootfs": ("d", 0o755, b""),
    }
    for d, mode in _DIRS.items():
        files[f"rootfs/{d}"] = ("d", mode, b"")
    for applet in applets:
        parts = applet.split("/")
        for i in range(1, len(parts)):
            files.setdefault("rootfs/" + "/".join(parts[:i]), ("d", 0o755, b""))
        files[f"rootfs/{applet}"] = ("l", 0o777, "/bin/busybox")
    etc = {
        "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hostname": "busybox\n",
        "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "inittab": _INITTAB,
        "profile": "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
        "os-release": (f'NAME="BusyBox"\nID=busybox\nVERSION_ID="{version}"\n'
                       f'PRETTY_NAME="BusyBox {version}"\n'),
    }
    for name, text in etc.items():
        files[f"rootfs/etc/{name}"] = ("f", 0o644, text.encode())
    files["rootfs/etc/init.d/rcS"] = ("f", 0o755, _RCS.encode())
    files["rootfs/usr/share/udhcpc/default.script"] = ("f", 0o755, _UDHCPC_SCRIPT.encode())
    files["rootfs/etc/mtab"] = ("l", 0o777, "/proc/self/mounts")
    files["rootfs/var/run"] = ("l", 0o777, "/run")
    files["rootfs/bin/busybox"] = ("f", 0o755, binary)
    return [(name, *files[name]) for name in sorted(files)], mtime


def _write_tar(out: IO[bytes], entries: list[tuple[str, str, int, bytes | str]],
               mtime: int) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, mode, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tf.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def build_busybox_image(out: str | os.PathLike[str], *, busybox: str = "/bin/busybox",
                        compression: str = "gzip") -> Path:
    """Write a unified busybox image to ``out`` (atomically) and return its path.

    ``compression`` is ``gzip``, ``xz`` or ``none``. The architecture is the host's (``uname -m``):
    a static busybox only runs natively anyway.
    """
    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"compression must be one of {', '.join(COMPRESSIONS)}")
    out_p = Path(out)
    entries, mtime = _entries(Path(busybox), os.uname().machine)
    from typing import cast  # here: typing is no import of lxdlib's modules (errors.py)

    from ..state import create_private, temp_beside
    tmp = temp_beside(out_p)  # made here, not found there: ``out`` may be in a user's directory
    try:
        with os.fdopen(create_private(tmp), "wb") as raw:
            if compression == "gzip":
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                   compresslevel=9) as gz:
                    _write_tar(cast("IO[bytes]", gz), entries, mtime)
            elif compression == "xz":
                with lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ,
                                   check=lzma.CHECK_CRC64, preset=6) as xz:
                    _write_tar(cast("IO[bytes]", xz), entries, mtime)
            else:
                _write_tar(raw, entries, mtime)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out_p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("busybox image packed from %s into %s (%s, %d members)", busybox, out_p,
              compression, len(entries))
    return out_p

