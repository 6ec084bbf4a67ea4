"""``publish`` against real containers: the tarball's layout and ownership, launching from the
published image, snapshots, --force on a running instance, duplicates, aliases with --reuse,
ZFS (shifted on disk) and the compression-argument injection LXD had."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import lxdlib
from lxdlib.errors import AlreadyExists, InvalidArgument, InvalidConfig, WrongState
from lxdlib.images.publish import build_metadata, compressor
from lxdlib.imagestore import compression
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons  # noqa: F401

pytestmark = pytest.mark.root

INJECTIONS = ["zstd -d -f /etc/passwd -o {target}", "gzip; touch {target}", "xz --files={target}",
              "nosuch", "", "gzip -c > {target}", "none -o {target}"]


def members(host: lxdlib.Host, fingerprint: str) -> list[tarfile.TarInfo]:
    with tarfile.open(host.images.store.tarball_path(fingerprint)) as tf:
        return tf.getmembers()


def owners(infos: list[tarfile.TarInfo]) -> dict[str, tuple[int, int]]:
    return {i.name: (i.uid, i.gid) for i in infos}


def test_compressor_refuses_everything_but_plain_algorithms() -> None:
    assert compressor("none") is None
    assert compressor("gzip")[0].endswith("/gzip")  # type: ignore[index]
    assert compressor("zstd -19")[-1] == "-19"  # type: ignore[index]
    for bad in INJECTIONS:
        with pytest.raises(InvalidArgument):
            compressor(bad.format(target="/tmp/x"))
    with pytest.raises(InvalidArgument, match="squashfs"):
        compressor("squashfs")


def test_build_metadata_reuses_or_generates() -> None:
    from datetime import UTC, datetime
    now = datetime(2024, 1, 2, tzinfo=UTC)
    vol = {"architecture": "x86_64", "creation_date": 5, "properties": {"os": "a"},
           "templates": {"/etc/hostname": {"template": "h.tpl", "when": ["create"]}}}
    assert build_metadata(vol, "x86_64", None, None, now) == vol
    replaced = build_metadata(vol, "x86_64", {"description": "d"}, now, now)
    assert replaced["properties"] == {"description": "d"} and replaced["creation_date"] == 5
    assert replaced["expiry_date"] == int(now.timestamp()) and "templates" in replaced
    assert build_metadata(None, "aarch64", None, None, now) == {
        "architecture": "aarch64", "creation_date": int(now.timestamp()), "properties": {}}


def test_publish_round_trip_force_duplicate_and_reuse(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "src")
    c.exec(["sh", "-c", "echo hello > /root/marker && touch /home/owned && "
            "chown 1000:1234 /home/owned"], check=True)
    before = {i.fingerprint for i in host.images.list()}
    with pytest.raises(WrongState, match="Use --force"):
        host.images.publish("src", aliases=["pub"])
    assert {i.fingerprint for i in host.images.list()} == before
    img = host.images.publish("src", aliases=["pub"], properties={"description": "published"},
                              force=True)
    assert c.state == "RUNNING"
    data = host.images.store.tarball_path(img.fingerprint).read_bytes()
    assert img.fingerprint == hashlib.sha256(data).hexdigest()
    assert not img.cached and img.properties == {"description": "published"}
    assert [a["name"] for a in img.aliases] == ["pub"]
    assert compression.detect(host.images.store.tarball_path(img.fingerprint)) == "gzip"
    infos = members(host, img.fingerprint)
    names = [i.name for i in infos]
    assert names[0] == "metadata.yaml"
    assert names.index("rootfs") < names.index("templates") < names.index("templates/hostname.tpl")
    own = owners(infos)
    assert own["rootfs/home/owned"] == (1000, 1234) and own["rootfs/root/marker"] == (0, 0)
    assert own["rootfs/bin/busybox"] == (0, 0)

    copy = host.launch("pub", "copy1")
    assert copy.exec(["cat", "/root/marker"]).text == "hello\n"
    assert copy.exec(["stat", "-c", "%u:%g", "/home/owned"]).text == "1000:1234\n"
    assert copy.exec(["cat", "/etc/hostname"]).text == "copy1\n"  # templates travel along
    assert copy.config["image.description"] == "published"
    copy.stop(force=True)

    c.stop(force=True)
    xz = host.images.publish("src", compression="xz")
    assert compression.detect(host.images.store.tarball_path(xz.fingerprint)) == "xz"
    with pytest.raises(AlreadyExists, match="The image already exists"):
        host.images.publish("src", compression="xz")  # same content, same bytes
    with pytest.raises(AlreadyExists, match="alias"):
        host.images.publish("src", aliases=["pub"], compression="zstd")
    zst = host.images.publish("src", aliases=["pub"], compression="zstd", reuse=True)
    assert host.images["pub"].fingerprint == zst.fingerprint
    assert compression.detect(host.images.store.tarball_path(zst.fingerprint)) == "zstd"
    plain = host.images.publish("src", compression="none")
    assert compression.detect(host.images.store.tarball_path(plain.fingerprint)) == "none"
    assert not [n for n in os.listdir(host.paths.images) if n.startswith(".")]


def test_publish_snapshot_cli_and_injection(host: lxdlib.Host, tmp_path: Path) -> None:
    c = host.launch("busybox", "s1")
    c.exec(["sh", "-c", "echo one > /root/state"], check=True)
    c.snapshots.create("snap0")
    c.exec(["sh", "-c", "echo two > /root/state"], check=True)
    img = host.images.publish("s1/snap0", aliases=["fromsnap"])  # a running instance's snapshot
    assert c.state == "RUNNING"
    s2 = host.create("fromsnap", "s2")
    assert (s2.volume / "rootfs/root/state").read_text() == "one\n"

    before = {i.fingerprint for i in host.images.list()}
    target = tmp_path / "pwned"
    for bad in INJECTIONS:
        with pytest.raises(InvalidArgument):
            host.images.publish("s1/snap0", compression=bad.format(target=target))
    with pytest.raises(InvalidConfig):
        host.set_config("images.compression_algorithm", f"zstd -d -f /etc/passwd -o {target}")
    cli = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root)]
    r = subprocess.run([*cli, "publish", "s1/snap0", "--compression",
                        f"zstd -d -f /etc/passwd -o {target}"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("Error: ")
    assert not target.exists() and {i.fingerprint for i in host.images.list()} == before

    r = subprocess.run([*cli, "publish", "s1", "local:", "--alias", "cli-pub", "--force",
                        "--compression", "xz", "os=busybox", "release=cli"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fp = r.stdout.split("fingerprint: ")[1].strip()
    pub = host.images["cli-pub"]
    assert pub.fingerprint == fp and pub.properties == {"os": "busybox", "release": "cli"}
    assert c.state == "RUNNING"
    assert img.fingerprint != fp and img.fingerprint in host.images


def test_publish_from_zfs_unshifts_ownership(host: lxdlib.Host,
                                             zfs_daemon: ZfsDaemons) -> None:  # noqa: F811
    zpool = f"lxdz{secrets.token_hex(3)}"
    host.create_pool("zp", "zfs", {"size": "1GiB", "zfs.pool_name": zpool})
    try:
        c = host.launch("busybox", "z1", pool="zp")
        c.exec(["touch", "/root/f"], check=True)
        base = host.facts().idmap.base
        assert os.stat(c.volume / "rootfs/root/f").st_uid == base  # shifted on disk
        # (chown inside is refused on FUSE: the kernel wants CAP_CHOWN in the initial userns)
        os.chown(c.volume / "rootfs/root/f", base + 1000, base + 1001)
        c.snapshots.create("snap0")
        c.stop(force=True)
        for source in ("z1", "z1/snap0"):
            img = host.images.publish(source)
            own = owners(members(host, img.fingerprint))
            assert own["rootfs/root/f"] == (1000, 1001), source
            assert own["rootfs/bin/busybox"] == (0, 0) and own["rootfs"] == (0, 0)
            host.images.delete(img.fingerprint)
        assert host.pool("zp").list_snapshots("z1") == ["snap0"]
    finally:
        for inst in host.instances.list():
            inst.delete(force=True)
        host.delete_pool("zp")
