"""Snapshot an instance, run an upgrade in it, and roll back if the upgrade or a check fails.

    sudo .venv/bin/python examples/snapshot_before_upgrade.py web \\
        --upgrade "apt-get update && apt-get -y dist-upgrade" --check "systemctl is-system-running"

The snapshot is taken while the instance runs (btrfs/zfs snapshots are instant); on failure the
instance is restored from it (stopped, restored, started again if it was running, as
``lxc restore`` does) and the exit status is 1. The snapshot is kept unless ``--drop``.
"""

from __future__ import annotations

import argparse
import datetime as dt

import lxdlib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("instance")
    ap.add_argument("--root")
    ap.add_argument("--upgrade", required=True, help="shell command that upgrades")
    ap.add_argument("--check", help="shell command that must succeed afterwards")
    ap.add_argument("--drop", action="store_true", help="delete the snapshot after success")
    args = ap.parse_args()
    inst = lxdlib.Host(args.root).instances[args.instance]
    name = "pre-upgrade-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
    inst.snapshots.create(name, description=f"before: {args.upgrade}")
    print(f"snapshot {args.instance}/{name} taken")
    result = inst.exec(args.upgrade, stdout=lambda b: print(b.decode(errors="replace"), end=""))
    ok = result.returncode == 0
    if ok and args.check:
        ok = inst.exec(args.check).returncode == 0
    if not ok:
        print(f"upgrade failed (exit {result.returncode}); restoring {name}")
        inst.snapshots.restore(name)
        return 1
    print("upgrade succeeded")
    if args.drop:
        inst.snapshots.delete(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
