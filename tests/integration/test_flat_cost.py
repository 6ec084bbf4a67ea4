"""A verb about one instance reads nothing of the others: no scan of the instances' directory,
no other instance's record. Its cost then cannot grow with their number (issue 12); the
benchmarks measure the times (``bench/scale.py``), this keeps the reads out.

The verbs run in a fresh ``Host`` (as each command line does), with other instances beside,
one of them left half-made by a killed create (a directory without a record): settling that
one is the business of a listing or ``lxdlib recover``, or of a verb that makes that name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib import record

pytestmark = pytest.mark.root


class Reads:
    """What the verbs under watch read of the root's instances."""

    def __init__(self) -> None:
        self.scans = 0
        self.records: list[str] = []


@pytest.fixture
def reads(host: lxdlib.Host, monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    for n in ("o1", "o2"):
        host.create("busybox", n)
    (host.paths.instance_dir("leftover")).mkdir(mode=0o700)  # a create killed early
    seen = Reads()
    directories, load_file = record.directories, record.load_file

    def counted_directories(paths: object) -> list[str]:
        seen.scans += 1
        return directories(paths)  # type: ignore[arg-type]

    def counted_load(path: str, name: str) -> record.InstanceRecord:
        seen.records.append(name)
        return load_file(path, name)
    monkeypatch.setattr(record, "directories", counted_directories)
    monkeypatch.setattr(record, "load_file", counted_load)
    yield seen


def test_making_an_instance_scans_no_other(host: lxdlib.Host, reads: Reads,
                                           tmp_path: Path) -> None:
    backup = host.export_backup("o1", tmp_path / "o1.tar.gz", instance_only=True)
    reads.records.clear()
    fresh = lxdlib.Host(host.paths.root)
    fresh.create("busybox", "new1")
    fresh.launch_many(["new2", "new3"], image="busybox", start=False)
    fresh.import_backup(backup, "new4")
    fresh.copy("new1", "new5")
    assert reads.scans == 0
    assert not {"o1", "o2", "leftover"} & set(reads.records), reads.records
    assert host.paths.instance_dir("leftover").exists()  # not theirs to settle
    names = fresh.instances.names()  # a listing settles it
    assert "leftover" not in names and not host.paths.instance_dir("leftover").exists()


def test_a_leftover_of_the_name_itself_is_settled(host: lxdlib.Host, reads: Reads) -> None:
    fresh = lxdlib.Host(host.paths.root)
    fresh.launch_many(["leftover"], image="busybox", start=False)
    assert fresh.instances["leftover"].state == "STOPPED"
    assert reads.scans == 0
    assert not os.path.exists(host.paths.instance_dir("o1") / ".pending.yaml")


def _loads_per_instance(reads: Reads) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in reads.records:
        out[n] = out.get(n, 0) + 1
    return out


def test_a_profile_change_reads_each_other_record_once(host: lxdlib.Host, reads: Reads) -> None:
    """``profile set`` of a profile one instance uses: the others' records are read by the
    one walk that finds the users (its second look, once the users are locked, loads no
    unchanged record), not once more by each step that used to fill ``used_by``."""
    for p in ("pa", "pb", "pc"):
        host.profiles.create(p)
    host.create("busybox", "user1", profiles=["default", "pa"])
    record.clear_cache()  # as a new process
    reads.records.clear()
    reads.scans = 0
    host.profiles["pa"].set_config("user.x", "1")
    host.profiles["pa"].unset_config("user.x")
    others = {n: k for n, k in _loads_per_instance(reads).items() if n != "user1"}
    assert others and max(others.values()) == 1, others  # the first walk; the rest: stat
    assert reads.scans <= 4, reads.scans  # two walks (and their recheck) per change


def test_volume_and_pool_questions_walk_the_instances_once(host: lxdlib.Host,
                                                           reads: Reads) -> None:
    """A custom volume's ``set``/``unset`` read its own record only; who uses a volume, a
    pool or a network is found by one walk over the instances, however many profiles there
    are (each profile's used_by was a walk of its own)."""
    for p in ("pa", "pb", "pc", "pd"):
        host.profiles.create(p)
    vols = host.pools["default"].volumes
    vols.create("hv")
    vol = vols["hv"]
    record.clear_cache()
    reads.records.clear()
    vol.set_config("user.a", "1")
    vol.unset_config("user.a")
    assert reads.records == []
    assert vol.config == {}
    for ask in (lambda: vol.used_by, lambda: host.pools["default"].used_by,
                lambda: host.network_users("nonet")):
        record.clear_cache()
        reads.records.clear()
        ask()
        loads = _loads_per_instance(reads)
        assert loads and max(loads.values()) == 1, loads


def test_listings_of_volumes_and_pools_walk_the_instances_once(host: lxdlib.Host,
                                                                reads: Reads) -> None:
    """``storage volume list`` and ``storage list`` fill every row's ``used_by`` from one walk
    over the instances: they read each record once, not once per volume or per pool (at 300
    instances a list of 100 volumes took 290 ms that way, 52 ms with one walk)."""
    store = host.volumes.store
    for v in ("lv1", "lv2", "lv3", "lv4"):
        store.create("default", v)
    store.attach("default", "lv2", "o1", "/mnt/lv2")
    host.profiles.create("pv", devices={"d": {"type": "disk", "pool": "default",
                                              "source": "lv3", "path": "/mnt/lv3"}})
    host.create_pool("second", "dir")
    record.clear_cache()
    reads.records.clear()
    listed = {v["name"]: v["used_by"] for v in store.list("default")}
    assert listed == {"lv1": [], "lv2": ["/1.0/instances/o1"], "lv3": ["/1.0/profiles/pv"],
                      "lv4": []}
    loads = _loads_per_instance(reads)
    assert loads and max(loads.values()) == 1, loads
    record.clear_cache()
    reads.records.clear()
    users = host.pools_users(["default", "second"])
    assert set(users["default"]) >= {"/1.0/instances/o1", "/1.0/instances/o2"}
    assert users["second"] == []
    loads = _loads_per_instance(reads)
    assert loads and max(loads.values()) == 1, loads


def test_a_start_with_a_custom_volume_reads_no_other_instance(host: lxdlib.Host,
                                                              reads: Reads) -> None:
    """A custom volume is shared by instances of one id map only, which its record names
    once a user has passed the check: later starts and creates of that map read the volume's
    record, not every instance's (the check walked them all at each start)."""
    host.pools["default"].volumes.create("fv")
    disk = {"fv": {"type": "disk", "pool": "default", "source": "fv", "path": "/mnt/fv"}}
    host.create("busybox", "vu1", devices=disk)  # the volume's first user: one walk
    record.clear_cache()
    reads.records.clear()
    reads.scans = 0
    fresh = lxdlib.Host(host.paths.root)
    inst = fresh.instances["vu1"]
    inst.start()
    try:
        fresh.create("busybox", "vu2", devices=disk)
    finally:
        inst.stop(force=True)
    assert reads.scans == 0
    assert not {"o1", "o2", "leftover"} & set(reads.records), reads.records
