"""The busybox image builder: deterministic output, a correct rootfs, a working DHCP script."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from lxdlib.errors import InvalidArgument
from lxdlib.imagestore import build_busybox_image, read_metadata
from tests.integration.image_fixtures import make_store

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, chroot, netns)"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static missing"),
]

BUSYBOX = Path("/bin/busybox")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("comp", ["gzip", "xz", "none"])
def test_build_is_deterministic(tmp_path: Path, comp: str) -> None:
    a = build_busybox_image(tmp_path / "a", compression=comp)
    b = build_busybox_image(tmp_path / "sub-b", compression=comp)
    assert sha256(a) == sha256(b)
    assert sorted(os.listdir(tmp_path)) == ["a", "sub-b"]  # no temp files left


def test_build_refuses_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        build_busybox_image(tmp_path / "x", compression="zip")
    assert list(tmp_path.iterdir()) == []


def test_tarball_members(tmp_path: Path) -> None:
    image = build_busybox_image(tmp_path / "bb.tar.gz")
    mtime = int(BUSYBOX.stat().st_mtime)
    with tarfile.open(image) as tf:
        members = tf.getmembers()
        meta = yaml.safe_load(tf.extractfile("metadata.yaml").read())  # type: ignore[union-attr]
    names = [m.name for m in members]
    assert names == sorted(names) and names[0] == "metadata.yaml"
    assert {m.mtime for m in members} == {mtime}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}
    assert meta["architecture"] == os.uname().machine
    assert meta["creation_date"] == mtime
    assert meta["properties"]["os"] == "busybox"
    assert meta["templates"] == {"/etc/hostname": {"when": ["create", "copy", "rename"],
                                                   "template": "hostname.tpl"}}
    with open(image, "rb") as f:
        header = f.read(10)
    assert header[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert header[3] & 0x08 == 0  # no file name in the gzip header


def test_import_and_unpack(tmp_path: Path) -> None:
    image = build_busybox_image(tmp_path / "busybox.tar.gz")
    version = read_metadata(image).properties["release"]
    store = make_store(tmp_path)
    rec = store.import_file(image, aliases=["busybox"])
    assert rec.properties["os"] == "busybox"
    assert rec.properties["release"] == version
    assert rec.properties["description"] == f"busybox {version} ({os.uname().machine})"
    assert rec.architecture == os.uname().machine
    dest = tmp_path / "vol"
    dest.mkdir()
    store.unpack(rec.fingerprint, dest)
    rootfs = dest / "rootfs"
    assert os.readlink(rootfs / "bin/sh") == "/bin/busybox"
    assert os.readlink(rootfs / "sbin/init") == "/bin/busybox"
    assert (rootfs / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert (rootfs / "bin/busybox").stat().st_mode & 0o7777 == 0o755
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (rootfs / "root").stat().st_mode & 0o7777 == 0o700
    for d in ("proc", "sys", "dev", "run", "var/log", "etc"):
        assert (rootfs / d).is_dir() and not (rootfs / d).is_symlink()
    assert (rootfs / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert "::sysinit:/etc/init.d/rcS" in (rootfs / "etc/inittab").read_text()
    assert os.access(rootfs / "etc/init.d/rcS", os.X_OK)
    assert os.access(rootfs / "usr/share/udhcpc/default.script", os.X_OK)
    assert (dest / "templates/hostname.tpl").read_text() == "{{ container.name }}\n"
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        assert os.path.lexists(rootfs / applet), applet
    # the unpacked rootfs really runs: busybox through its absolute symlinks, in a chroot
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "echo ok; ls /bin/sh"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ok", "/bin/sh"]


def test_dhcp_script_configures_interface(tmp_path: Path) -> None:
    """Run the image's udhcpc script (with the image's own busybox ``ip``) for a lease."""
    image = build_busybox_image(tmp_path / "busybox.tar.gz")
    store = make_store(tmp_path)
    rec = store.import_file(image)
    dest = tmp_path / "vol"
    dest.mkdir()
    store.unpack(rec.fingerprint, dest)
    rootfs = dest / "rootfs"
    ns = f"lxdlib-t-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                        "peer0"], check=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "interface": "eth0",
               "ip": "10.231.7.5", "subnet": "255.255.255.0", "router": "10.231.7.1",
               "dns": "10.231.7.1 10.231.7.2", "domain": "lxd",
               "RESOLV_CONF": "/tmp/resolv.conf"}
        run = ["ip", "netns", "exec", ns, "chroot", str(rootfs),
               "/bin/sh", "/usr/share/udhcpc/default.script"]
        subprocess.run([*run, "deconfig"], env=env, check=True)
        subprocess.run([*run, "bound"], env=env, check=True)
        subprocess.run([*run, "renew"], env=env, check=True)  # idempotent
        addrs = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"],
                               capture_output=True, text=True, check=True).stdout
        assert addrs.count("inet ") == 1 and "10.231.7.5/24" in addrs
        routes = subprocess.run(["ip", "-n", ns, "-4", "route", "show", "default"],
                                capture_output=True, text=True, check=True).stdout
        assert "default via 10.231.7.1 dev eth0" in routes
        assert (rootfs / "tmp/resolv.conf").read_text() == (
            "search lxd\nnameserver 10.231.7.1\nnameserver 10.231.7.2\n")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_unpack_speed_against_gnu_tar(tmp_path: Path) -> None:
    """Print import+unpack time beside plain ``tar -xzf`` (numbers only: no timing asserts)."""
    image = build_busybox_image(tmp_path / "busybox.tar.gz")
    times_tar, times_unpack, times_import = [], [], []
    for i in range(5):
        d = tmp_path / f"tar{i}"
        d.mkdir()
        t = time.perf_counter()
        subprocess.run(["tar", "-xzf", str(image), "-C", str(d)], check=True)
        times_tar.append(time.perf_counter() - t)
        store = make_store(tmp_path / f"s{i}")
        t = time.perf_counter()
        rec = store.import_file(image)
        times_import.append(time.perf_counter() - t)
        v = tmp_path / f"vol{i}"
        v.mkdir()
        t = time.perf_counter()
        store.unpack(rec.fingerprint, v)
        times_unpack.append(time.perf_counter() - t)
        assert sorted(os.listdir(v / "rootfs")) == sorted(os.listdir(d / "rootfs"))
        shutil.rmtree(d)
        shutil.rmtree(v)
    med = sorted(times_tar)[2], sorted(times_import)[2], sorted(times_unpack)[2]
    print(f"\nbusybox image: tar -xzf {med[0] * 1000:.1f} ms, import {med[1] * 1000:.1f} ms, "
          f"unpack {med[2] * 1000:.1f} ms (unpack/tar {med[2] / med[0]:.2f}x)")
