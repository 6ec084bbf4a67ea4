"""What host root does with a tree the container's root shaped: copy, import, delete and
publish of an instance whose root planted a deep tree or a huge sparse file.

- Depth: ``mkdir d; cd d`` 1100 times takes the container's root a second. Python 3.11's
  ``shutil.rmtree`` recurses once per level, so a copy to a ``dir`` pool, a backup's import
  and a ``dir`` instance's delete ended in ``RecursionError``, and the copy's leftover then
  failed every later command that opened the ``dir`` pool (its clean-up of leftovers hit it).
- Cgroups: the subtree below the payload is the container's, and a forced stop thaws it
  walking it with ``os.walk``, which recurses the same way: ``stop --force`` and
  ``delete --force`` of an instance whose root nested 1100 cgroups raised ``RecursionError``.
- Holes: ``truncate -s`` makes a file of any size that takes no space. ``publish`` read it in
  full: 8 EiB held the command (and the instance, stopped by ``--force``) for ever and filled
  the image store, outside every pool's quota, with compressed zeros.
"""

from __future__ import annotations

import os
import secrets
import tarfile
import time
from pathlib import Path

import pytest

import lxdlib
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons

__all__ = ["zfs_daemon", "zfs_daemons"]  # fixtures

pytestmark = pytest.mark.root

DEPTH = 1100  # past Python 3.11's recursion limit of 1000


def _plant_deep(inst: lxdlib.Instance) -> None:
    inst.exec(["sh", "-c", f"mkdir /root/deep && cd /root/deep && i=0 && "
                           f"while [ $i -lt {DEPTH} ]; do mkdir d; cd d; i=$((i+1)); done && "
                           "echo bottom > f && ln -s /etc/shadow shadow"], check=True)


def _depth(inst: lxdlib.Instance) -> str:
    return inst.exec(["sh", "-c", "cd /root/deep && n=0 && while cd d 2>/dev/null; "
                                  "do n=$((n+1)); done; echo $n $(cat f)"], check=True).text


def _leftovers(host: lxdlib.Host) -> list[str]:
    out = []
    for pool in host.pool_names():
        base = host.pool(pool).volume_path("containers", "x").parent
        out += [f"{pool}/{n}" for n in os.listdir(base)]
    return sorted(out)


def test_a_deep_tree_is_copied_imported_and_deleted(host: lxdlib.Host, tmp_path: Path) -> None:
    host.create_pool("treedir", "dir")
    src = host.launch("busybox", "deep")
    assert src.wait_ready(10)
    _plant_deep(src)
    src.stop(force=True)

    on_dir = host.copy("deep", "deep-dir", pool="treedir")
    back = host.copy("deep-dir", "deep-back", pool="default")
    archive = host.export_backup("deep", tmp_path / "deep.tar.gz")
    imported = host.import_backup(archive, "deep-imp")
    imported_dir = host.import_backup(archive, "deep-impdir", pool="treedir")
    for inst in (on_dir, back, imported, imported_dir):
        inst.start()
        assert _depth(inst) == f"{DEPTH} bottom\n", inst.name
        inst.stop(force=True)
    for inst in (on_dir, imported_dir, back, imported, src):
        inst.delete()
    assert host.instances.names() == []
    assert _leftovers(host) == []
    host.pool("treedir")  # the pool opens: nothing of a failed removal is left to trip it


def test_a_deep_tree_is_shifted_exported_and_published_from_zfs(
        host: lxdlib.Host, tmp_path: Path, zfs_daemon: ZfsDaemons) -> None:
    """zfs-fuse has no idmapped mounts: a copy shifts every owner, an export and a publish
    map them back; each walked the tree with ``os.walk``, which recurses per level too."""
    host.create_pool("treezfs", "zfs", {"size": "512MiB",
                                        "zfs.pool_name": f"lxtt{secrets.token_hex(3)}"})
    src = host.launch("busybox", "deep")
    assert src.wait_ready(10)
    _plant_deep(src)
    src.stop(force=True)
    on_zfs = host.copy("deep", "deep-zfs", pool="treezfs")
    on_zfs.start()
    assert _depth(on_zfs) == f"{DEPTH} bottom\n"
    assert on_zfs.exec(["stat", "-c", "%u", "/root/deep/d/d/d"], check=True).text == "0\n"
    on_zfs.stop(force=True)
    archive = host.export_backup("deep-zfs", tmp_path / "deep.tar.gz")
    with tarfile.open(archive) as tf:
        member = tf.getmember("backup/container/rootfs/root/deep/d")
    assert (member.uid, member.gid) == (0, 0)
    img = host.images.publish("deep-zfs")
    with tarfile.open(host.images.store.tarball_path(img.fingerprint)) as tf:
        member = tf.getmember("rootfs/root/deep/d")
    assert (member.uid, member.gid) == (0, 0)
    for inst in (on_zfs, src):
        inst.delete()
    assert host.instances.names() == []


@pytest.mark.parametrize("verb", ["stop", "delete"])
def test_a_container_that_nested_its_cgroups_deep_is_still_stopped(host: lxdlib.Host,
                                                                     verb: str) -> None:
    """The payload's cgroup subtree is the container's: its root nests 1100 cgroups and moves
    its shell to the bottom. The thaw before a forced stop walked them with ``os.walk``."""
    inst = host.launch("busybox", "cgdeep")
    assert inst.wait_ready(10)
    out = inst.exec(["sh", "-c", f"mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && "
                                 f"cd /tmp/cg && i=0 && while [ $i -lt {DEPTH} ]; do "
                                 "mkdir d && cd d && i=$((i+1)); done && echo $i && "
                                 "(sleep 1000 >/dev/null 2>&1 </dev/null &) && "
                                 "echo $$ > cgroup.procs"], check=True).text
    assert out == f"{DEPTH}\n"
    if verb == "stop":
        inst.stop(force=True)
        assert inst.state == "STOPPED"
    inst.delete(force=True)
    assert host.instances.names() == []


def test_publish_keeps_a_planted_sparse_file_sparse(host: lxdlib.Host) -> None:
    src = host.launch("busybox", "holes")
    assert src.wait_ready(10)
    src.exec(["truncate", "-s", "4G", "/root/holes"], check=True)
    src.stop(force=True)
    started = time.monotonic()
    img = host.images.publish("holes", aliases=["holes"])
    took = time.monotonic() - started
    tarball = host.images.store.tarball_path(img.fingerprint)
    # read in full, 4 GiB of zeros gzip to 4 MiB in several seconds
    assert tarball.stat().st_size < 2 * 2**20
    assert took < 5
    with tarfile.open(tarball) as tf:
        member = tf.getmember("rootfs/root/holes")
    assert member.size == 4 * 2**30
    copy = host.launch("holes", "holes-copy")
    assert copy.exec(["stat", "-c", "%s", "/root/holes"], check=True).text == f"{4 * 2**30}\n"
    assert copy.exec(["du", "-k", "/root/holes"], check=True).text.split()[0] == "0"
