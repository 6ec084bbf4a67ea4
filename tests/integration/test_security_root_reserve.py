"""A pull a running container keeps feeding stops where an unprivileged writer would.

lxdlib writes pulled files as root, and root may use the blocks ext4 keeps back for it (``-m 5``)
so that the host's own services survive a disk users filled. A container that keeps a file
growing (sparse: it costs the container nothing) or keeps adding directories below where a
``pull -r`` has got to decides how much is written; such a pull ate the reserve before the
kernel stopped it, and ``lxdlib file pull`` of a growing file never returned once the disk was
full (it read on to the end of a file that had none). Each test pulls into a real 64 MiB ext4
on a loop device and checks the reserve is whole afterwards (``f_bfree`` against the
superblock's reserved block count), the error is ``DiskFull`` and no half-written file stays.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from tests.integration.ssh_fixtures import SshServer, sshd_server

pytestmark = pytest.mark.root

__all__ = ["sshd_server"]

LXDLIB = str(Path(sys.executable).with_name("lxdlib"))

RESERVED = "what is left is reserved for root"


class SmallDisk:
    """A 64 MiB ext4 with 5 % reserved for root, mounted from a loop device."""

    def __init__(self, mnt: Path, image: Path) -> None:
        self.mnt = mnt
        out = subprocess.run(["tune2fs", "-l", str(image)], capture_output=True, text=True,
                             check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        self.reserved = int(fields["Reserved block count"])
        assert self.reserved > 0
        self.lowest = os.statvfs(mnt).f_bfree

    def reserve_whole(self) -> bool:
        """Whether root's reserve is untouched: as many free blocks as are reserved, at least,
        now and at every look of a ``watch`` that ended."""
        return min(os.statvfs(self.mnt).f_bfree, self.lowest) >= self.reserved

    def counts(self) -> str:
        return (f"{self.reserved} blocks reserved for root; free: {self.lowest} at the lowest, "
                f"{os.statvfs(self.mnt).f_bfree} now")

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Look at the free blocks every half millisecond meanwhile: a pull that failed removes
        its last file, so the reserve it ate is free again by the time it returns."""
        done = threading.Event()

        def look() -> None:
            while not done.is_set():
                self.lowest = min(self.lowest, os.statvfs(self.mnt).f_bfree)
                time.sleep(0.0005)
        t = threading.Thread(target=look)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()

    def left(self) -> list[str]:
        """Every path on the disk but lost+found, relative, sorted."""
        return sorted(str(p.relative_to(self.mnt)) for p in self.mnt.rglob("*")
                      if p.parts[len(self.mnt.parts)] != "lost+found")


@pytest.fixture
def disk(root: Path) -> Iterator[SmallDisk]:
    """Under the test's root, so that its teardown would also find a mount left behind."""
    image, mnt = root.parent / "small.img", root.parent / "small"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "5", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield SmallDisk(mnt, image)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)  # the loop device goes with it


@pytest.fixture
def c1(host: lxdlib.Host) -> lxdlib.Instance:
    inst = host.launch("busybox", "c1")
    assert inst.wait_ready(10)
    return inst


def _grow_for_ever(c1: lxdlib.Instance) -> None:
    """/root/feed: a sparse file the container makes 1 GiB longer as fast as it can."""
    c1.exec("truncate -s 1G /root/feed", check=True)
    c1.popen(["sh", "-c", "n=1; while :; do n=$((n+1)); truncate -s ${n}G /root/feed; done"])


def _deepen_for_ever(c1: lxdlib.Instance) -> None:
    """/root/t: a chain of directories the container keeps making deeper, each with 128 sparse
    64 KiB files (one ``truncate``: it stays ahead of a pull walking down the chain). Small
    files: a failed pull removes only the one it was writing, so the reserve it ate before
    stays eaten."""
    files = " ".join(f"$d/n/f{i}" for i in range(128))
    c1.exec("mkdir -p /root/t/n", check=True)
    c1.popen(["sh", "-c", f"d=/root/t; while :; do mkdir -p $d/n; truncate -s 64K {files}; "
                          "d=$d/n; done"])
    time.sleep(0.5)


def cli(host: lxdlib.Host, *args: str, timeout: float = 20
        ) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    env = {**os.environ, "PYTHONPATH": str(Path(lxdlib.__file__).parents[1])}
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)


def test_pull_of_a_file_the_container_keeps_growing_stops_before_roots_reserve(
        c1: lxdlib.Instance, disk: SmallDisk) -> None:
    # an ordinary pull onto the small disk is untouched
    c1.exec("dd if=/dev/urandom of=/root/small bs=1M count=2 2>/dev/null", check=True)
    c1.files.pull_tree("/root/small", disk.mnt / "small")
    assert (disk.mnt / "small").read_bytes() == c1.files.get("/root/small")
    _grow_for_ever(c1)
    t = time.monotonic()
    with disk.watch(), pytest.raises(lxdlib.DiskFull) as e:
        c1.files.pull_tree("/root/feed", disk.mnt / "feed")
    assert time.monotonic() - t < 15
    assert disk.reserve_whole(), disk.counts()
    assert RESERVED in str(e.value) and e.value.path == disk.mnt / "feed"
    assert disk.left() == ["small"]  # no half file, under its name or beside it


def test_pull_r_of_a_tree_the_container_keeps_deepening_stops_before_roots_reserve(
        c1: lxdlib.Instance, disk: SmallDisk) -> None:
    _deepen_for_ever(c1)
    with disk.watch(), pytest.raises(lxdlib.DiskFull) as e:
        c1.files.pull_tree("/root/t", disk.mnt / "t")
    assert disk.reserve_whole(), disk.counts()
    assert RESERVED in str(e.value)
    # as LXD, what was pulled stays; each file in it whole, none half-written beside its name
    left = disk.left()
    files = [p for p in left if p.rsplit("/", 1)[-1].startswith("f")]
    assert len(files) > 300
    assert all((disk.mnt / p).stat().st_size == 64 << 10 for p in files)
    assert not [p for p in left if ".lxdlib-" in p]


def test_cli_file_pull_of_a_growing_file_ends_with_disk_full(
        host: lxdlib.Host, c1: lxdlib.Instance, disk: SmallDisk) -> None:
    _grow_for_ever(c1)
    try:
        with disk.watch():
            r = cli(host, "file", "pull", "c1/root/feed", str(disk.mnt / "feed"))
    except subprocess.TimeoutExpired:
        pytest.fail("file pull of a file the container keeps growing did not end")
    assert r.returncode == 1
    assert r.stderr.decode() == (f"Error: no space left on the device holding "
                                 f"{disk.mnt / 'feed'} ({RESERVED}): free some space and retry\n")
    assert disk.reserve_whole(), disk.counts()
    assert disk.left() == []
    # -r of the growing tree, from the command too
    _deepen_for_ever(c1)
    with disk.watch():
        r = cli(host, "file", "pull", "-r", "c1/root/t", str(disk.mnt))
    assert r.returncode == 1
    assert RESERVED in r.stderr.decode() and r.stderr.decode().startswith("Error: no space")
    assert disk.reserve_whole(), disk.counts()
    assert not [p for p in disk.left() if ".lxdlib-" in p]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_export_of_an_instance_bigger_than_the_room_stops_before_roots_reserve(
        host: lxdlib.Host, c1: lxdlib.Instance, disk: SmallDisk, compression: str) -> None:
    """An export's size is the instance's: tar (and the compressor) wrote it straight into the
    file, as root, and went through the reserve before failing."""
    c1.exec("dd if=/dev/urandom of=/root/noise bs=1M count=60 2>/dev/null", check=True)
    with disk.watch(), pytest.raises(lxdlib.QuotaExceeded) as e:  # DiskFull's base
        host.export_backup("c1", disk.mnt / "c1.tar", compression_algorithm=compression)
    assert disk.reserve_whole(), disk.counts()
    assert isinstance(e.value, lxdlib.DiskFull) and RESERVED in str(e.value)
    assert e.value.path == disk.mnt
    assert disk.left() == []
    # what fits is exported as before
    c1.exec("rm /root/noise", check=True)
    out = host.export_backup("c1", disk.mnt / "c1.tar", compression_algorithm=compression)
    assert out.stat().st_size > 0 and disk.left() == ["c1.tar"]


def test_publish_of_an_instance_bigger_than_the_room_stops_before_roots_reserve(
        host: lxdlib.Host, c1: lxdlib.Instance, disk: SmallDisk) -> None:
    """A publish writes the image's tarball in the store's import directory (here the small
    disk, bound over it), through the same count."""
    c1.exec("dd if=/dev/urandom of=/root/noise bs=1M count=60 2>/dev/null", check=True)
    c1.stop(force=True)
    imports = host.paths.run / "image-imports"
    imports.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(disk.mnt), str(imports)], check=True)
    try:
        with disk.watch(), pytest.raises(OSError) as e:  # DiskFull is one (before: bare)
            host.publish("c1", compression="none")
    finally:
        subprocess.run(["umount", str(imports)], check=True)
    assert disk.reserve_whole(), disk.counts()
    assert isinstance(e.value, lxdlib.DiskFull) and RESERVED in str(e.value)
    assert disk.left() == []
    assert [i.fingerprint for i in host.images.list()] == [host.images.get("busybox").fingerprint]


def test_image_export_bigger_than_the_room_stops_before_roots_reserve(
        host: lxdlib.Host, c1: lxdlib.Instance, disk: SmallDisk) -> None:
    """An image published from an instance is as big as the instance made it."""
    c1.exec("dd if=/dev/urandom of=/root/noise bs=1M count=60 2>/dev/null", check=True)
    c1.stop(force=True)
    img = host.publish("c1", compression="none", aliases=["noisy"])
    with disk.watch(), pytest.raises(OSError) as e:  # DiskFull is one (before: bare)
        img.export(disk.mnt)
    assert disk.reserve_whole(), disk.counts()
    assert isinstance(e.value, lxdlib.DiskFull) and RESERVED in str(e.value)
    assert disk.left() == []


def test_cli_file_pull_from_an_ssh_remote_stops_before_roots_reserve(
        host: lxdlib.Host, c1: lxdlib.Instance, disk: SmallDisk, sshd_server: SshServer) -> None:
    """``h2:c1/…``: the far side streams the file through ssh; ssh wrote it into the file
    here, as root, through the reserve. The same root serves as both ends."""
    r = cli(host, "remote", "add", "h2", sshd_server.url(host.paths.root), "--ssh-config",
            str(sshd_server.ssh_config), "--command", LXDLIB)
    assert r.returncode == 0, r.stderr
    _grow_for_ever(c1)
    with disk.watch():
        r = cli(host, "file", "pull", "h2:c1/root/feed", str(disk.mnt / "feed"))
    assert disk.reserve_whole(), disk.counts()
    assert r.returncode == 1  # before: 141, ssh's death by SIGPIPE, and not a word
    assert r.stderr.decode() == (f"Error: no space left on the device holding "
                                 f"{disk.mnt / 'feed'} ({RESERVED}): free some space and retry\n")
    assert disk.left() == []
