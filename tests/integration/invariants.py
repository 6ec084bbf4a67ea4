"""The consistency a root must have after any crash and the next lxdlib call (crash tests).

Every instance record has its volume and liblxc config; every snapshot record has exactly one
read-only volume and no snapshot volume lacks a record; no volume lacks its instance; each
custom volume's snapshots are those its record lists; no temporary names, intent records or
half-made directories are left; no lock is still held.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import lxdlib
from lxdlib import record, state
from lxdlib.journal import PENDING, STATE_DIR
from lxdlib.storage.base import PoolDriver


def _read_only(pool: PoolDriver, inst: str, snap: str) -> bool:
    if pool.driver == "btrfs":
        import btrfsutil
        return bool(btrfsutil.get_subvolume_read_only(
            pool.volume_path("containers-snapshots", f"{inst}/{snap}")))
    return True  # zfs snapshots are immutable; dir snapshots have no flag root respects


def _temporary(pool: PoolDriver) -> list[str]:
    found: list[str] = []
    if pool.driver == "zfs":
        z = pool
        out = subprocess.run(["zfs", "list", "-H", "-t", "all", "-o", "name", "-r",
                              z.root],  # type: ignore[attr-defined]
                             capture_output=True, text=True, check=True).stdout.split()
        for name in out:
            leaf = name.rsplit("/", 1)[-1]
            snap = leaf.split("@", 1)[1] if "@" in leaf else ""
            if leaf.startswith(".") or snap.startswith(("tmp-", "aside-", ".")):
                found.append(name)
        return found
    base: Path = pool.base  # type: ignore[attr-defined]
    for kind in ("images", "containers", "custom", "containers-snapshots", "custom-snapshots"):
        d = base / kind
        if not d.is_dir():
            continue
        for entry in os.listdir(d):
            if entry.startswith("."):
                found.append(f"{kind}/{entry}")
            elif kind in ("containers-snapshots", "custom-snapshots"):
                found += [f"{kind}/{entry}/{e}" for e in os.listdir(d / entry)
                          if e.startswith(".")]
    return found


def check(host: lxdlib.Host) -> None:
    """Assert the invariants (raise AssertionError naming the first broken one)."""
    paths = host.paths
    names = record.names(paths)
    by_pool: dict[str, set[str]] = {p: set() for p in host.pool_names()}
    for entry in os.listdir(paths.lxcpath):
        d = paths.lxcpath / entry
        if not d.is_dir():
            continue
        assert (d / "instance.yaml").is_file(), f"instance directory {entry} has no record"
        assert not os.path.lexists(d / PENDING), f"instance {entry} has an intent left"
        assert not os.path.lexists(d / record.DELETING), f"instance {entry} is half-deleted"
        assert not [e for e in os.listdir(d) if e.startswith(".") and ".tmp" in e], \
            f"instance {entry} has temporary files: {os.listdir(d)}"
    for name in names:
        rec = record.load(paths, name)
        assert rec.name == name, f"record of {name} names {rec.name}"
        assert (paths.instance_dir(name) / "config").is_file(), f"{name} has no liblxc config"
        pool = host.pool(rec.pool)
        assert pool.volume_exists("containers", name), f"{name} has no volume on {rec.pool}"
        vol = pool.volume_path("containers", name)
        assert (vol / "rootfs").is_dir(), f"{name}'s volume has no rootfs"
        assert not (vol / STATE_DIR).exists(), f"{name}'s volume holds a CRIU dump"
        on_disk = pool.list_snapshots(name)
        recorded = [s.name for s in rec.snapshots]
        assert sorted(on_disk) == sorted(recorded), \
            f"{name}: snapshot volumes {on_disk} != records {recorded}"
        for snap in recorded:
            assert _read_only(pool, name, snap), f"snapshot {name}/{snap} is writable"
        by_pool[rec.pool].add(name)
    for pname, owned in by_pool.items():
        pool = host.pool(pname)
        vols = set(pool.list_volumes("containers"))  # type: ignore[attr-defined]
        assert vols == owned, f"pool {pname}: volumes {sorted(vols)} != instances {sorted(owned)}"
        if pool.driver != "zfs":
            snapdirs = pool.base / "containers-snapshots"  # type: ignore[attr-defined]
            stray = {e for e in os.listdir(snapdirs) if not e.startswith(".")} - owned \
                if snapdirs.is_dir() else set()
            stray = {e for e in stray if os.listdir(snapdirs / e)}
            assert not stray, f"pool {pname}: snapshots of no instance: {sorted(stray)}"
        temp = _temporary(pool)
        assert not temp, f"pool {pname}: temporary volumes left: {temp}"
        check_custom_snapshots(host, pname)
    for lockfile in paths.locks.glob("*.lock"):
        kind = lockfile.name.removesuffix(".lock")
        assert not state.lock_holder(paths, kind), f"a lock of kind {kind!r} is still held"


def check_custom_snapshots(host: lxdlib.Host, pname: str) -> None:
    """Each custom volume's snapshots on the pool are those its record lists (read-only on
    btrfs), and no snapshots are left of a volume without a record."""
    pool = host.pool(pname)
    records = host.paths.volume_records / pname
    recorded_vols = {e[:-5] for e in os.listdir(records) if e.endswith(".yaml")
                     and not e.startswith(".")} if records.is_dir() else set()
    for vol in recorded_vols:  # the records read as they are: a look-up would settle them
        on_disk = pool.list_custom_snapshots(vol)
        data = state.read_record(records / f"{vol}.yaml")
        recorded = [s["name"] for s in (data.get("snapshots") or [])]
        marked = [s["name"] for s in (data.get("snapshots") or []) if "renamed_from" in s]
        assert not marked, f"pool {pname}: volume {vol}: renames left unfinished: {marked}"
        assert sorted(on_disk) == sorted(recorded), \
            f"pool {pname}: volume {vol}: snapshots {on_disk} != records {recorded}"
        if pool.driver == "btrfs":
            import btrfsutil
            for snap in on_disk:
                assert btrfsutil.get_subvolume_read_only(
                    pool.volume_path("custom-snapshots", f"{vol}/{snap}")), \
                    f"pool {pname}: snapshot {vol}/{snap} is writable"
    stray = [v for v in pool.all_custom_snapshots() if v not in recorded_vols]
    assert not stray, f"pool {pname}: snapshots of no custom volume: {stray}"


def forwarders(host: lxdlib.Host, name: str) -> set[tuple[str, str]]:
    """(device, listen address) of the live proxy forwarders of instance ``name`` (by argv)."""
    root = str(host.paths.root)
    found: set[tuple[str, str]] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = [a.decode() for a in (d / "cmdline").read_bytes().split(b"\0")]
            zombie = (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if zombie or "lxdlib.forwarder" not in args or "--listen" not in args:
            continue
        opt = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
        if opt.get("--root") == root and opt.get("--instance") == name:
            found.add((opt["--device"], opt["--listen"]))
    return found


def check_live(host: lxdlib.Host) -> None:
    """Record and live state agree for every instance: each proxy device of a running
    instance has its forwarder on its listen address and no other forwarder runs (none for a
    stopped one); each host-path disk is mounted once; a live ``limits.processes`` is the
    cgroup's ``pids.max``."""
    from lxdlib import runtime
    for name in record.names(host.paths):
        inst = host.instances[name]
        cfg, devs = inst.expanded()
        running = inst.state in ("RUNNING", "FROZEN")
        want = {(d, dev["listen"]) for d, dev in devs.items()
                if running and dev.get("type") == "proxy" and dev.get("nat") != "true"}
        have = forwarders(host, name)
        assert have == want, f"{name}: forwarders {sorted(have)} != devices {sorted(want)}"
        if running:
            from lxdlib.devices.hotmount import mounts
            points = [m for m, _ in mounts(inst.pid)]
            for d, dev in devs.items():
                if dev.get("type") == "disk" and dev.get("source") and dev["path"] != "/":
                    n = points.count("/" + dev["path"].strip("/"))
                    assert n == 1, f"{name}: disk {d} is mounted {n} times at {dev['path']}"
            pids = runtime.cgroup_get(inst.handle(), "pids.max")
            assert pids == (cfg.get("limits.processes") or "max"), \
                f"{name}: pids.max {pids} but limits.processes {cfg.get('limits.processes')}"
