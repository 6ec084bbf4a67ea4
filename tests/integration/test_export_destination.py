"""An export into a directory a host user can write gives that user nothing.

Root may be asked to write a backup, an image or a built image into any directory: a user's
home, a shared drop. The user who owns it can put anything there beforehand, under the name
the temporary file would have had (``.<name>.tmp<pid>``, the pid of the exporting process):
a link to a file of root's, which the write would truncate and fill, or a file of the user's
own, which would then hold the whole backup — an instance's every file, the 0600 ones of its
root user too. Here host uid 1000 plants one or the other under that name, for each way lxdlib
writes into a directory it was given; the write must use neither, and its result must be
root's and closed to the user.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import lxdlib
from lxdlib.errors import InvalidArgument
from lxdlib.imagestore.busybox import build_busybox_image

pytestmark = pytest.mark.root

USER = 1000
PRECIOUS = b"root's own data\n"


def plant(drop: Path, final: str, kind: str) -> Path:
    """As the user, a trap at the old temporary name of ``final``: a link to root's file, or
    a file of the user's own, open to all."""
    victim = drop.parent / "victim"
    victim.write_bytes(PRECIOUS)
    victim.chmod(0o644)
    trap = drop / f".{final}.tmp{os.getpid()}"
    script = (f"import os; os.symlink({str(victim)!r}, {str(trap)!r})" if kind == "link" else
              f"import os; open({str(trap)!r}, 'wb').close(); os.chmod({str(trap)!r}, 0o666)")
    subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
                    "/usr/bin/python3", "-I", "-S", "-c", script], check=True, timeout=30)
    return trap


def user_reads(path: Path) -> bool:
    return subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
                           "/usr/bin/python3", "-I", "-S", "-c",
                           f"open({str(path)!r}, 'rb').read(1)"],
                          capture_output=True, timeout=30, check=False).returncode == 0


@pytest.fixture
def drop(root: Path) -> Path:
    """A directory the host user owns (not sticky: no ``protected_symlinks`` to help)."""
    d = root.parent / "drop"
    d.mkdir(mode=0o755)
    os.chown(d, USER, USER)
    return d


def check(drop: Path, trap: Path, kind: str, outs: list[Path]) -> None:
    assert (drop.parent / "victim").read_bytes() == PRECIOUS  # nothing written through a link
    st = os.lstat(trap)  # still there, as the user left it
    assert st.st_uid == USER
    if kind == "own":
        assert st.st_size == 0
    for out in outs:
        st = os.lstat(out)
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), out
        assert not user_reads(out), out


@pytest.mark.parametrize("kind", ["link", "own"])
@pytest.mark.parametrize("what", ["backup", "image export", "image build"])
def test_traps_in_the_destination_are_not_followed(host: lxdlib.Host, drop: Path,
                                                   what: str, kind: str) -> None:
    writers: dict[str, tuple[str, Callable[[], list[Path]]]] = {
        "backup": ("c1.tar.gz", lambda: [host.export_backup("c1", drop / "c1.tar.gz",
                                                            instance_only=True)]),
        "image export": ("img.tar.gz",
                         lambda: host.images.export("busybox", drop / "img.tar.gz")),
        "image build": ("built.tar.gz",
                        lambda: [build_busybox_image(drop / "built.tar.gz")]),
    }
    final, write = writers[what]
    if what == "backup":
        c = host.create("busybox", "c1")
        c.files.put("/root/secret", b"the container root's\n", mode=0o600)
    trap = plant(drop, final, kind)
    outs = write()
    assert outs == [drop / final]
    check(drop, trap, kind, outs)
    assert outs[0].stat().st_size > 1000
    # no temporary file of the write is left beside the result
    assert sorted(p.name for p in drop.iterdir()) == sorted([final, trap.name])


def _reader(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """A reader on ``fifo`` that keeps what arrives (the writer opens it, then writes)."""
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, got


@pytest.mark.parametrize("what", ["backup", "image export", "cli export", "cli image export"])
def test_a_device_or_fifo_destination_is_written_into_not_replaced(
        host: lxdlib.Host, root: Path, what: str) -> None:
    """``export c1 /dev/stdout`` (or ``/dev/null``, or a named pipe a reader waits on) is
    written into, as lxc opens its target: the write made a file beside it and renamed it over,
    so ``/dev/null`` became a regular file of the instance's every byte, which every later
    writer appended to. Here the device is a node of /dev/null's numbers that the test makes
    in its own directory, and the pipe one it reads."""
    here = root.parent
    null = here / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    fifo = here / "pipe"
    os.mkfifo(fifo)
    if what in ("backup", "cli export"):
        host.create("busybox", "c1")
    cli = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(root)]

    def write(dest: Path) -> None:
        if what == "backup":
            host.export_backup("c1", dest, instance_only=True)
        elif what == "image export":
            host.images.export("busybox", dest)
        else:
            argv = (["export", "c1", str(dest), "--instance-only"] if what == "cli export"
                    else ["image", "export", "busybox", str(dest)])
            r = subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
    write(null)
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    reader, got = _reader(fifo)
    write(fifo)
    reader.join(60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and got[0][:2] == b"\x1f\x8b" and len(got[0]) > 1000  # the gzip'd tarball
    assert sorted(p.name for p in here.iterdir()) == ["null", "pipe", "root"]  # no temp left


def test_a_block_device_destination_is_refused(host: lxdlib.Host, root: Path) -> None:
    """A disk (here a node of loop0's numbers in the test's directory) is neither written into
    nor replaced: a clear error, and the node stays."""
    disk = root.parent / "disk"
    os.mknod(disk, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    with pytest.raises(InvalidArgument, match="not a regular file"):
        host.images.export("busybox", disk)
    assert stat.S_ISBLK(os.lstat(disk).st_mode)
