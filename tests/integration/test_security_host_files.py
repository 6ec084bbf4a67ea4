"""What host root reads beside an instance's rootfs — ``metadata.yaml`` and ``templates/`` —
stays out of the container's reach and costs what its size says.

Two ways in, each built here from a hostile image or backup:

- a hard link: an image or backup that links ``rootfs/etc/x`` to ``metadata.yaml`` or to a
  template gave the container's root the very inode host root parses and renders at every
  start (templates that print the instance's whole config, YAML of its choosing);
- YAML aliases: 500 bytes of anchors (``b1: &b1 [*b0, *b0, …]``) name 10**9 strings; each
  reader of the value (the JSON kept of an image's metadata at every create and start, the
  ``str`` of a backup's config values) walked them all — gigabytes and minutes.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib.errors import ImageError, LxdlibError, UnsafeImage
from tests.integration import invariants
from tests.integration.archive_fixtures import rewrite_index
from tests.integration.image_fixtures import METADATA, good_members, hard, make_image, make_store

pytestmark = pytest.mark.root


def _bomb(levels: int) -> str:
    """YAML whose last anchor names 10**levels strings in ``levels + 1`` short lines."""
    lines = ["b0: &b0 [" + ", ".join(['"xxxxxxxx"'] * 10) + "]"]
    lines += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]"
              for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_image_metadata_alias_bomb_is_refused_at_import(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    image = make_image(tmp_path / "bomb.tar.gz",
                       good_members(metadata=METADATA + _bomb(9).encode()))
    started = time.monotonic()
    with pytest.raises(ImageError, match="aliases"):
        store.import_file(image, aliases=["bomb"])
    assert time.monotonic() - started < 10
    assert store.list() == []
    # anchors that expand by little are YAML as usual
    fine = make_image(tmp_path / "fine.tar.gz", good_members(
        metadata=METADATA + b"x: &x {a: 1}\ny: *x\n"))
    assert store.import_file(fine, aliases=["fine"]).fingerprint


def test_backup_index_alias_bomb_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    host.create("busybox", "c1")
    good = host.export_backup("c1", tmp_path / "good.tar.gz")

    def bomb(doc: dict[str, object]) -> None:
        doc.pop("lxdlib")  # LXD's shape: config values are made strings one by one
        doc["config"]["container"]["config"]["user.x"] = "@BOMB@"  # type: ignore[index]
    bad = rewrite_index(good, tmp_path / "mid.tar.gz", bomb)
    with tarfile.open(bad) as tin, tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as tout:
        for m in tin:
            data = tin.extractfile(m) if m.isreg() else None
            if m.name == "backup/index.yaml":
                assert data is not None
                raw = _bomb(9).encode() + data.read().replace(b"'@BOMB@'", b"*b9")
                m.size = len(raw)
                data = io.BytesIO(raw)
            tout.addfile(m, data)
    started = time.monotonic()
    with pytest.raises(ImageError, match="aliases"):
        host.import_backup(tmp_path / "bad.tar.gz", "r1")
    assert time.monotonic() - started < 10
    assert [i.name for i in host.instances.list()] == ["c1"]
    invariants.check(host)


@pytest.mark.parametrize("linked", ["metadata.yaml", "templates/hostname.tpl"])
def test_image_hard_linking_what_the_host_reads_into_the_rootfs_is_refused(
        tmp_path: Path, linked: str) -> None:
    store = make_store(tmp_path)
    image = make_image(tmp_path / "h.tar.gz",
                       good_members([hard("rootfs/etc/second-name", linked)]))
    rec = store.import_file(image, aliases=["h"])
    dest = tmp_path / "vol"
    dest.mkdir(mode=0o711)
    with pytest.raises(UnsafeImage, match="hard-linked"):
        store.unpack(rec.fingerprint, dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("linked", ["metadata.yaml", "templates/hostname.tpl"])
def test_backup_hard_linking_what_the_host_reads_into_the_rootfs_is_refused(
        host: lxdlib.Host, tmp_path: Path, linked: str) -> None:
    host.create("busybox", "c1")
    good = host.export_backup("c1", tmp_path / "good.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(good) as tin, tarfile.open(bad, "w:gz") as tout:
        for m in tin:
            tout.addfile(m, tin.extractfile(m) if m.isreg() else None)
        link = tarfile.TarInfo("backup/container/rootfs/etc/second-name")
        link.type, link.linkname = tarfile.LNKTYPE, f"backup/container/{linked}"
        tout.addfile(link)
    before = host.pool("default").list_volumes("containers")  # type: ignore[attr-defined]
    with pytest.raises(UnsafeImage, match="hard-linked"):
        host.import_backup(bad, "r1")
    assert host.pool("default").list_volumes("containers") == before  # type: ignore
    invariants.check(host)


def test_a_container_cannot_rewrite_what_the_host_reads_at_start(host: lxdlib.Host) -> None:
    """An instance that has the hard links already (imported before the check) or a
    ``metadata.yaml`` of aliases: its start refuses to read them, quickly."""
    c = host.create("busybox", "c1")
    volume = Path(c.volume)
    rootfs = volume / "rootfs"
    os.link(volume / "templates" / "hostname.tpl", rootfs / "etc" / "tpl")
    with pytest.raises(lxdlib.TemplateError, match="hard-linked"):
        c.start()
    os.unlink(rootfs / "etc" / "tpl")
    os.link(volume / "metadata.yaml", rootfs / "etc" / "meta")
    with pytest.raises(LxdlibError, match="hard-linked"):
        c.start()
    os.unlink(rootfs / "etc" / "meta")
    meta = volume / "metadata.yaml"
    meta.write_text(meta.read_text() + _bomb(9))
    started = time.monotonic()
    with pytest.raises(LxdlibError, match="aliases"):
        c.start()
    assert time.monotonic() - started < 10


def _hook(marker: Path) -> str:
    return f"lxc.hook.pre-start = /bin/sh -c 'id > {marker}'"


ROOT_EQUIVALENT: dict[str, Any] = {
    "raw-lxc-hook": lambda d, m: d["lxdlib"]["record"]["config"].update({"raw.lxc": _hook(m)}),
    "hook-in-a-snapshot": lambda d, m: d["lxdlib"]["record"]["snapshots"][0]["config"].update(
        {"raw.lxc": _hook(m)}),
    "lxd-shape-hook": lambda d, m: (d.pop("lxdlib"), d["config"]["container"]["config"].update(
        {"raw.lxc": _hook(m)})),
    "host-etc-disk": lambda d, m: d["lxdlib"]["record"]["devices"].update(
        etc={"type": "disk", "source": "/etc", "path": "/mnt/etc"}),
    "privileged": lambda d, m: d["lxdlib"]["record"]["config"].update(
        {"security.privileged": "true"}),
}


@pytest.mark.parametrize("case", sorted(ROOT_EQUIVALENT))
def test_backup_with_root_equivalent_settings_is_refused_unless_allowed(
        host: lxdlib.Host, tmp_path: Path, case: str) -> None:
    """Before, a backup's ``raw.lxc`` hook ran as host root at the imported instance's first
    start, and a ``disk`` on ``/etc`` showed the container the host's files: an archive is
    hostile input, and these are host root's to grant (as for an instance from another host)."""
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    good = host.export_backup("c1", tmp_path / "good.tar.gz")
    marker = tmp_path / "hook-ran"
    bad = rewrite_index(good, tmp_path / "bad.tar.gz",
                        lambda d: ROOT_EQUIVALENT[case](d, marker))
    vols = host.pool("default").list_volumes("containers")  # type: ignore[attr-defined]
    with pytest.raises(lxdlib.InvalidArgument, match="root-equivalent"):
        host.import_backup(bad, "r1")
    assert host.pool("default").list_volumes("containers") == vols  # type: ignore
    assert [i.name for i in host.instances.list()] == ["c1"]
    invariants.check(host)
    r = host.import_backup(bad, "r1", allow_root_equivalent=True)  # host root's choice
    if case == "raw-lxc-hook":
        r.start()
        assert marker.read_text().startswith("uid=0(root)")
        r.stop(force=True)


SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
fd = libc.inotify_init()
libc.inotify_add_watch(fd, b"sub/aaa", 0x10)  # IN_CLOSE_NOWRITE: root has read it
os.read(fd, 4096)
if libc.renameat2(-100, b"sub", -100, b"subl", 2) != 0:  # RENAME_EXCHANGE
    sys.exit("exchange failed")
print("swapped", flush=True)
"""


def test_push_tree_follows_no_symlink_a_host_user_swaps_in(host: lxdlib.Host) -> None:
    """Root pushes a tree a host user owns (a home into that user's container). The user
    watches it being read and, once ``sub/aaa`` is, swaps ``sub`` for a symlink to a
    directory of root's: a walk by path then read ``sub/etc/secret`` from root's directory
    into the container (with ``/`` as the target: the host's ``/etc/shadow``)."""
    import shutil
    import subprocess
    import tempfile
    c = host.create("busybox", "c1")
    base = Path(tempfile.mkdtemp(prefix="lxdlib-test-push-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        hidden = base / "hidden"
        (hidden / "etc").mkdir(parents=True)
        hidden.chmod(0o700)
        (hidden / "etc" / "secret").write_text("root's only\n")
        tree = base / "tree"
        (tree / "sub" / "etc").mkdir(parents=True)
        (tree / "sub" / "aaa").write_bytes(bytes(20 * 1024 * 1024))
        (tree / "subl").symlink_to(hidden)
        for top, dirs, files in os.walk(tree):
            for n in (".", *dirs, *files):
                os.chown(os.path.join(top, n), 1000, 1000, follow_symlinks=False)
        user = subprocess.Popen(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                                 "/usr/bin/python3", "-c", SWAPPER, str(tree)],
                                stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)  # its watch is in place
            # the swap may make the walk fail (typed since the fix; a raw OSError before)
            with contextlib.suppress(LxdlibError, OSError):
                c.files.push_tree(tree, "/root/tree")
            out, _ = user.communicate(timeout=30)
        finally:
            if user.poll() is None:
                user.kill()
                user.wait()
        assert out.strip() == "swapped"  # the user did swap it, after root read sub/aaa
        assert not c.files.exists("/root/tree/sub/etc/secret")
        assert not c.files.exists("/root/tree/subl/etc/secret")
    finally:
        shutil.rmtree(base, ignore_errors=True)
