"""The lxdlib demo: the LXD workflow end to end on the embedded defaults, printing each step.

Runs as root on the default root (``/var/lib/lxdlib``, or ``$LXDLIB_ROOT``): a fresh root gets a
loop-backed btrfs pool, a NAT bridge with DHCP and a ``default`` profile, as ``lxd init --auto``
would. The busybox image is built locally from Debian's busybox-static, so no network is needed.
The instances it makes are deleted at the end; the pool, bridge and image stay for the next run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import lxdlib

LXDLIB = str(Path(sys.executable).with_name("lxdlib"))


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def cli(*args: str) -> None:
    print(f"$ lxdlib {' '.join(args)}", flush=True)
    subprocess.run([LXDLIB, *args], check=True)


def main() -> int:
    host = lxdlib.Host()
    names = ("demo-web", "demo-quota")
    for n in names:  # a previous run that was interrupted
        if n in host.instances:
            host.instances[n].delete(force=True)

    step(f"init: default pool, bridge and profile under {host.paths.root}")
    t = time.perf_counter()
    host.ensure_initialized()
    print(f"profiles: {host.profiles.names()}  pools: {host.pool_names()}  "
          f"networks: {[n['name'] for n in host.networks.list()]}  "
          f"({(time.perf_counter() - t) * 1000:.0f} ms)")

    step("image build busybox (from Debian's busybox-static, deterministic)")
    img = host.images.build_busybox("busybox")
    print(f"busybox image {img.fingerprint[:12]} ({img.size / 1e6:.1f} MB)")

    try:
        step("launch busybox demo-web")
        t = time.perf_counter()
        web = host.launch("busybox", "demo-web")
        print(f"{web!r} in {(time.perf_counter() - t) * 1000:.0f} ms")

        step("exec: commands inside, exit codes as LXD reports them")
        print(web.exec(["sh", "-c", "uname -sr; hostname; id"]).text.rstrip())
        print("exit code of `false`:", web.exec(["false"]).returncode)
        print("exit code of a missing command:", web.exec(["no-such-command"]).returncode)
        web.wait_for(lambda: bool(web.addresses()), timeout=15)
        print("eth0 address from the bridge's DHCP:", ", ".join(web.addresses()) or "(none yet)")

        step("config set demo-web limits.memory 256MiB (applied live)")
        web.set_config("limits.memory", "256MiB")
        print("limits.memory =", web.config["limits.memory"])

        step("snapshot demo-web, change a file, restore")
        web.exec("echo before > /root/state", check=True)
        snap = web.snapshots.create()
        web.exec("echo after > /root/state", check=True)
        web.snapshots.restore(snap.name)
        print(f"restored {snap.name}: /root/state =", web.exec(["cat", "/root/state"]).text.strip())

        step("quota: a 32MiB root disk, and a write of 64MiB from inside")
        q = host.launch("busybox", "demo-quota",
                        devices={"root": {"type": "disk", "path": "/", "pool": "default",
                                          "size": "32MiB"}})
        r = q.exec("dd if=/dev/urandom of=/root/big bs=1M count=64 2>&1; sync")
        print(r.text.strip().splitlines()[0] if r.text.strip() else f"exit {r.returncode}")

        step("list and info, through the command")
        cli("list")
        cli("info", "demo-web")
    finally:
        step("delete the demo instances")
        for n in names:
            if n in host.instances:
                host.instances[n].delete(force=True)
                print(f"deleted {n}")
    if shutil.which("lxc-ls"):
        print("\nDone. The pool, bridge and image stay for the next run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
