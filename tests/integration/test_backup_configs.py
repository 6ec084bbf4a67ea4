"""A backup's configs (the instance's and every snapshot's, devices and volatile keys included)
are checked like user input before anything is made: an archive whose snapshot carries a value
with a line break or a bad MAC is refused by ``import``, instead of being imported and failing
half-way through a later ``restore``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from tests.integration import invariants
from tests.integration.archive_fixtures import rewrite_index

pytestmark = pytest.mark.root

Doc = dict[str, Any]


def _own_snapshot(doc: Doc) -> Doc:
    return doc["lxdlib"]["record"]["snapshots"][0]  # type: ignore[no-any-return]


def _lxd_snapshot(doc: Doc) -> Doc:
    doc.pop("lxdlib")
    return doc["config"]["snapshots"][0]  # type: ignore[no-any-return]


BAD_NIC = {"type": "nic", "nictype": "bridged", "parent": "lxdbr0", "hwaddr": "zz:zz:zz"}
INJECT = "a\nlxc.init.cmd = /bin/sh -c 'touch /pwned'"

CASES: dict[str, Callable[[Doc], object]] = {
    "snapshot-config-newline": lambda d: _own_snapshot(d)["config"].update(
        {"environment.X": INJECT}),
    "snapshot-device-bad-mac": lambda d: _own_snapshot(d)["devices"].update(eth0=BAD_NIC),
    "snapshot-volatile-newline": lambda d: _own_snapshot(d)["config"].update(
        {"volatile.eth0.hwaddr": "00:16:3e:00:00:01\nlxc.x = y"}),
    "snapshot-volatile-bad-mac": lambda d: _own_snapshot(d)["config"].update(
        {"volatile.eth0.hwaddr": "not-a-mac"}),
    "snapshot-unknown-key": lambda d: _own_snapshot(d)["config"].update({"bogus.key": "1"}),
    "snapshot-missing-profile": lambda d: _own_snapshot(d).update(profiles=["nope"]),
    "snapshot-description-cr": lambda d: _own_snapshot(d).update(description="a\rb"),
    "snapshot-two-disks-one-path": lambda d: _own_snapshot(d)["devices"].update(
        d1={"type": "disk", "path": "/mnt", "source": "/tmp"},
        d2={"type": "disk", "path": "/mnt", "source": "/var/tmp"}),
    "lxd-snapshot-config-newline": lambda d: _lxd_snapshot(d)["config"].update(
        {"user.x": INJECT}),
    "lxd-snapshot-device-bad-mac": lambda d: _lxd_snapshot(d)["devices"].update(eth0=BAD_NIC),
    "instance-volatile-newline": lambda d: d["lxdlib"]["record"]["config"].update(
        {"volatile.eth0.hwaddr": "00:16:3e:00:00:01\nlxc.x = y"}),
    "instance-architecture-newline": lambda d: d["lxdlib"]["record"].update(
        architecture="x86_64\nlxc.x = y"),
    "lxd-architecture-unknown": lambda d: (d.pop("lxdlib"), d["config"]["container"].update(
        architecture="pdp11")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_in_archive_is_refused(host: lxdlib.Host, tmp_path: Path,
                                          case: str) -> None:
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    good = host.export_backup("c1", tmp_path / "good.tar.gz")
    bad = rewrite_index(good, tmp_path / "bad.tar.gz", CASES[case])
    before = sorted(os.listdir(host.paths.lxcpath))
    vols = host.pool("default").list_volumes("containers")  # type: ignore[attr-defined]
    with pytest.raises((lxdlib.InvalidArgument, lxdlib.NotFound)) as err:
        host.import_backup(bad, "r1")
    if "snapshot" in case:
        assert "s0" in str(err.value)  # which snapshot of the archive is wrong
    assert sorted(os.listdir(host.paths.lxcpath)) == before
    assert host.pool("default").list_volumes("containers") == vols  # type: ignore
    invariants.check(host)
    # the unmodified archive imports, and its snapshot restores
    r = host.import_backup(good, "r2")
    r.snapshots.restore("s0")
    assert not list(Path(host.paths.instance_dir("r2")).glob("*.pending.yaml"))
    invariants.check(host)
