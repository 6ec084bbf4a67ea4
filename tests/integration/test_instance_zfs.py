"""Instances on a ZFS pool (zfs-fuse here): no idmapped mounts on FUSE, so lxdlib shifts the
rootfs ownership on disk once at creation; quotas come from the dataset's quota."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

import lxdlib
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons  # noqa: F401

pytestmark = pytest.mark.root


def test_launch_on_zfs_shifts_ownership_and_enforces_quota(host: lxdlib.Host,
                                                           zfs_daemon: ZfsDaemons) -> None:  # noqa: F811
    zpool = f"lxdz{secrets.token_hex(3)}"
    host.create_pool("zp", "zfs", {"size": "1GiB", "zfs.pool_name": zpool})
    try:
        c = host.launch("busybox", "z1", pool="zp",
                        devices={"root": {"type": "disk", "path": "/", "pool": "zp",
                                          "size": "64MiB"}})
        base = host.facts().idmap.base
        assert c.exec(["id", "-u"]).text.strip() == "0"
        c.exec(["touch", "/root/made-inside"], check=True)
        st = os.stat(c.volume / "rootfs" / "root" / "made-inside")
        assert st.st_uid == base  # shifted on disk: container root is host uid <base>
        su = os.stat(c.volume / "rootfs" / "bin" / "busybox")
        assert su.st_uid == base
        r = c.exec(["sh", "-c", "dd if=/dev/urandom of=/root/big bs=1M count=120 && sync"])
        assert r.returncode != 0
        # ZFS's `quota` counts snapshots: free the space before one pins it
        c.exec(["rm", "-f", "/root/big"], check=True)
        s = c.snapshots.create()
        c.exec(["rm", "-f", "/root/made-inside"], check=True)
        c.snapshots.restore(s.name)
        assert c.exec(["ls", "/root/made-inside"]).returncode == 0
        # the listing asks the pool once for every volume (one `zfs get`), the figure as asked
        # for this volume alone
        listed = subprocess.run([sys.executable, "-m", "lxdlib", "--root", str(host.paths.root),
                                 "list", "-f", "json"], capture_output=True, text=True,
                                check=True, timeout=120)
        disk = json.loads(listed.stdout)[0]["state"]["disk"]
        alone = host.pool("zp").volume_usage("containers", "z1") or 0
        assert disk["root"]["usage"] > 0 and abs(disk["root"]["usage"] - alone) <= 1 << 20
        c.delete(force=True)
    finally:
        for inst in host.instances.list():
            inst.delete(force=True)
        host.delete_pool("zp")
