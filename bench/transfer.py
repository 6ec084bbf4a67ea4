"""Instance transfer between two roots: lxdlib's migration stream against the raw floor,
``btrfs send | ssh | btrfs receive`` of the same subvolume.

    sudo .venv/bin/python bench/transfer.py [--mb 400] [--rounds 3] [--no-ssh]

Two roots on this machine, each with its own btrfs loop pool, stand for two hosts. The transport
is SSH to 127.0.0.1 through an sshd this bench starts (own port, throwaway host and user keys,
removed at the end) when ``sshd`` is installed, else a local pipe (said in the output). The
instance holds ``--mb`` of incompressible files beside busybox. Each round times the whole
``copy_between`` (both processes, checks, commit) and the raw pipeline; the best round of each
is compared (goal: lxdlib ≥ 80% of the raw rate).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import btrfsutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from lxdlib import migrate
from tests.cleanup import teardown_root

NAME = "bench-xfer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_sshd() -> Iterator[list[str] | None]:
    """An sshd on 127.0.0.1 for root with a throwaway key; yields the ssh argv prefix (None
    when sshd or ssh is missing). Everything it made is removed afterwards."""
    sshd, ssh = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("ssh")
    if not os.path.exists(sshd) or ssh is None:
        yield None
        return
    work = Path(tempfile.mkdtemp(prefix="lxdlib-bench-ssh-"))
    made_run = not os.path.isdir("/run/sshd")
    if made_run:
        os.makedirs("/run/sshd", mode=0o755)
    proc = None
    try:
        for kind in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(work / kind)], check=True)
        shutil.copy(work / "user.pub", work / "authorized_keys")
        port = free_port()
        (work / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host'}\n"
            f"AuthorizedKeysFile {work / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {work / 'sshd.pid'}\n")
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(work / "sshd_config")],
                                stderr=subprocess.DEVNULL)
        argv = [ssh, "-T", "-p", str(port), "-i", str(work / "user"), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "root@127.0.0.1"]
        for _ in range(50):
            if subprocess.run([*argv, "true"], check=False,
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the bench's sshd did not answer")
        yield argv
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
        if made_run:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def make_root(busybox: Path | None, base: Path, label: str) -> lxdlib.Host:
    r = base / label
    r.mkdir()
    r.chmod(0o711)
    h = lxdlib.Host(r)
    h.create_pool("default", "btrfs", {"size": "3GiB"})
    h.profiles.create("default", {}, {"root": {"type": "disk", "path": "/", "pool": "default"}})
    if busybox is not None:
        h.images.import_file(busybox, aliases=["busybox"])
    return h


def fill(volume: Path, mb: int) -> int:
    data = volume / "rootfs" / "data"
    data.mkdir()
    left = mb
    i = 0
    while left > 0:
        n = min(left, 8)
        (data / f"f{i}").write_bytes(os.urandom(n * 1024 * 1024))
        left -= n
        i += 1
    os.sync()
    return sum(p.stat().st_size for p in data.iterdir())


def raw_round(a: lxdlib.Host, b: lxdlib.Host, transport: list[str] | None) -> float:
    """``btrfs send snap | [ssh] btrfs receive dir`` of a read-only snapshot of the volume."""
    vol = Path(a.pool("default").volume_path("containers", NAME))  # type: ignore[attr-defined]
    base_a = Path(a.pool("default").base)  # type: ignore[attr-defined]
    base_b = Path(b.pool("default").base)  # type: ignore[attr-defined]
    snap = base_a / "raw-snap"
    into = base_b / "raw-recv"
    btrfsutil.create_snapshot(vol, snap, read_only=True)
    into.mkdir()
    try:
        recv = ["btrfs", "receive", "-q", str(into)]
        t = time.perf_counter()
        send = subprocess.Popen(["btrfs", "send", "-q", str(snap)], stdout=subprocess.PIPE)
        subprocess.run([*(transport or []), *recv], stdin=send.stdout, check=True)
        assert send.stdout is not None
        send.stdout.close()
        if send.wait() != 0:
            raise RuntimeError("btrfs send failed")
        return time.perf_counter() - t
    finally:
        for sub in into.iterdir():
            btrfsutil.delete_subvolume(sub)
        into.rmdir()
        btrfsutil.delete_subvolume(snap)


def lxdlib_round(a: lxdlib.Host, b: lxdlib.Host, transport: list[str] | None) -> tuple[float, int]:
    other = [*(transport or []), *migrate.local_argv(b.ctx.paths.root)]
    t = time.perf_counter()
    out = migrate.copy_between(a.ctx, None, other, NAME, "bench-copy")
    took = time.perf_counter() - t
    lxdlib.Host(b.ctx.paths.root).instances.get("bench-copy").delete()
    return took, out.sent_bytes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=400, help="data in the instance (MB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-ssh", action="store_true", help="a local pipe, even with sshd")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    from lxdlib.imagestore.busybox import build_busybox_image
    base = Path(tempfile.mkdtemp(prefix="lxdlib-bench-xfer-", dir="/var/tmp"))
    base.chmod(0o711)
    try:
        busybox = build_busybox_image(base / "busybox.tar.gz")
        a = make_root(busybox, base, "a")
        b = make_root(None, base, "b")
        a.create("busybox", NAME)
        size = fill(Path(a.pool("default").volume_path("containers", NAME)),  # type: ignore
                    args.mb)
        with contextlib.ExitStack() as stack:
            transport = None if args.no_ssh else stack.enter_context(local_sshd())
            how = "ssh to 127.0.0.1 (a bench sshd)" if transport else \
                "a local pipe (no sshd here)" if not args.no_ssh else "a local pipe (--no-ssh)"
            print(f"transport: {how}; instance data {size / 1e6:.0f} MB; "
                  f"{args.rounds} rounds, best of each")
            raw, ours, sent = [], [], 0
            for _ in range(args.rounds):
                raw.append(raw_round(a, b, transport))
                took, sent = lxdlib_round(a, b, transport)
                ours.append(took)
        raw_rate = size / min(raw) / 1e6
        our_rate = size / min(ours) / 1e6
        print(f"raw   btrfs send | {'ssh | ' if transport else ''}btrfs receive: "
              f"{min(raw):6.2f} s  {raw_rate:7.1f} MB/s")
        print(f"lxdlib copy_between (whole copy, {sent / 1e6:.0f} MB on the wire): "
              f"{min(ours):6.2f} s  {our_rate:7.1f} MB/s")
        print(f"ratio: {our_rate / raw_rate * 100:.0f}% of raw (goal >= 80%)")
    finally:
        for label in ("a", "b"):
            teardown_root(base / label)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
