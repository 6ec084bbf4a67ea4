"""Issue 10 case 4: a config liblxc cannot load is refused before anything is saved, and one
broken instance (a config liblxc refuses, a record that is not a record) never makes commands
that walk every instance fail: it shows as ERROR with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import lxdlib
from lxdlib import housekeeping
from lxdlib.errors import CorruptRecord, InvalidConfig

pytestmark = pytest.mark.root

BAD = "lxc.environment=A"  # no "=" in the value: liblxc 5.0 refuses to load the file


def cli(host: lxdlib.Host, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                           str(host.paths.root), *args], capture_output=True, text=True,
                          timeout=120)


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout


def refused(r: subprocess.CompletedProcess[str]) -> str:
    # liblxc itself prints "Failed to load config for <name>" before lxdlib's one-line error
    assert r.returncode == 1 and r.stderr.splitlines()[-1].startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_config_set_of_raw_lxc_liblxc_refuses_is_not_saved_cli(host: lxdlib.Host) -> None:
    host.create("busybox", "c1")
    host.create("busybox", "c2")
    config_before = (host.paths.instance_dir("c1") / "config").read_bytes()
    err = refused(cli(host, "config", "set", "c1", "raw.lxc", BAD))
    assert "raw.lxc" in err and "lxc.environment" in err
    assert "raw.lxc" not in host.instances["c1"].config
    assert (host.paths.instance_dir("c1") / "config").read_bytes() == config_before
    out = ok(cli(host, "list", "-f", "csv", "-c", "ns"))
    assert out.split() == ["c1,STOPPED", "c2,STOPPED"]
    assert "Status: STOPPED" in ok(cli(host, "info", "c1"))
    ok(cli(host, "start", "c1"))
    ok(cli(host, "config", "set", "c1", "raw.lxc", "lxc.environment=A=1"))  # valid: accepted
    ok(cli(host, "config", "show", "c1"))


def test_liblxc_check_covers_create_update_devices_and_profiles(host: lxdlib.Host) -> None:
    with pytest.raises(InvalidConfig, match=r"raw\.lxc"):
        host.create("busybox", "bad", config={"raw.lxc": BAD})
    assert "bad" not in host.instances and not host.paths.instance_dir("bad").exists()
    c = host.launch("busybox", "c1")
    with pytest.raises(InvalidConfig, match=r"raw\.lxc"):
        c.set_config("raw.lxc", "lxc.idmap = u 0 1000000 x")  # three numbers needed
    with pytest.raises(InvalidConfig):
        c.update(config={"raw.lxc": BAD}, devices={})
    assert "raw.lxc" not in c.config and c.status == "Running"
    # a profile edit reaches every user: refused before the profile is saved
    with pytest.raises(InvalidConfig, match=r"raw\.lxc"):
        host.update_profile("default", config={"raw.lxc": BAD})
    assert host.profiles.get("default").config == {}
    # a profile nobody uses yet is checked too (its future users would break)
    host.profiles.create("spare")
    with pytest.raises(InvalidConfig, match=r"raw\.lxc"):
        host.update_profile("spare", config={"raw.lxc": BAD})
    with pytest.raises(InvalidConfig, match=r"raw\.lxc"):
        host.profiles.create("bad", {"raw.lxc": BAD})
    assert "bad" not in host.profiles.names()
    refused(cli(host, "profile", "set", "default", "raw.lxc", BAD))
    assert [i.status for i in host.instances.list()] == ["Running"]


def test_unloadable_liblxc_config_shows_as_error(host: lxdlib.Host) -> None:
    """A root written before the check (or a hand-edited config) keeps working around it."""
    good = host.launch("busybox", "good")
    broken = host.create("busybox", "broken", config={"boot.autostart": "true"})
    cfg = host.paths.instance_dir("broken") / "config"
    cfg.write_text(cfg.read_text() + "lxc.environment = A\n")

    out = ok(cli(host, "list", "-f", "csv", "-c", "ns"))
    assert out.split() == ["broken,ERROR", "good,RUNNING"]
    data = json.loads(ok(cli(host, "list", "-f", "json")))
    assert data[0]["status"] == "Error" and "lxc.environment" in data[0]["error"]
    assert broken.status == "Error" and "lxc.environment" in (broken.error or "")
    assert good.error is None
    assert [i.status for i in host.instances.list()] == ["Error", "Running"]
    info = ok(cli(host, "info", "broken"))
    assert "Status: ERROR" in info and "lxc.environment" in info
    assert "Status: RUNNING" in ok(cli(host, "info", "good"))
    assert "/1.0/instances/broken" in ok(cli(host, "profile", "show", "default"))
    housekeeping.run(host)
    housekeeping.recover(host)
    assert "failed" in host.autostart(attempts=1, sleep=lambda s: None)["broken"]
    refused(cli(host, "start", "broken"))
    # repairing the record rewrites a config liblxc loads
    ok(cli(host, "config", "set", "broken", "user.fixed", "yes"))
    cfg.write_text(cfg.read_text() + "lxc.environment = A\n")
    ok(cli(host, "delete", "broken"))  # a broken instance can still be deleted
    assert host.instances.names() == ["good"]


def test_autostart_value_edited_past_the_validators_fails_that_instance_alone(
        host: lxdlib.Host) -> None:
    """A record edited by hand with a priority that is no number: autostart reports that
    instance failed and starts the others (it ended with a ValueError before starting any)."""
    host.create("busybox", "odd", config={"boot.autostart": "true"})
    host.create("busybox", "fine", config={"boot.autostart": "true",
                                           "boot.autostart.priority": "5"})
    path = host.paths.instance_record("odd")
    data = json.loads(path.read_text())
    data["config"]["boot.autostart.priority"] = "high"
    path.write_text(json.dumps(data))
    waited: list[float] = []
    result = host.autostart(attempts=1, sleep=waited.append)
    assert result["fine"] == "started" and waited == []
    assert result["odd"].startswith("failed") and "high" in result["odd"]
    assert host.instances["fine"].state == "RUNNING"
    assert host.instances["odd"].state == "STOPPED"


def test_housekeeping_reports_an_instance_whose_volume_or_pool_is_gone(
        host: lxdlib.Host) -> None:
    """A scheduled instance whose volume was removed by hand, or whose record names a pool
    that is gone: housekeeping reports each skipped, why, and takes the others' snapshots
    (it passed them over as if deleted meanwhile, saying nothing, run after run)."""
    import datetime as dt
    import shutil
    sched = {"snapshots.schedule": "* * * * *", "snapshots.schedule.stopped": "true"}
    for name in ("novol", "nopool", "fine"):
        host.create("busybox", name, config=sched)
    shutil.rmtree(host.pool("default").volume_path("containers", "novol"))
    path = host.paths.instance_record("nopool")
    data = json.loads(path.read_text())
    data["pool"] = "gone"
    path.write_text(json.dumps(data))
    report = housekeeping.run(host, now=dt.datetime(2030, 1, 1, 10, 0, 5, tzinfo=dt.UTC))
    assert report.created == ["fine/snap0"]
    assert "instance volume 'novol' not found" in report.skipped["novol"]
    assert "storage pool 'gone' not found" in report.skipped["nopool"]
    host.instances["fine"].delete()  # one deleted meanwhile is still passed over, unsaid
    assert "fine" not in housekeeping.run(host).skipped


def test_corrupt_record_shows_as_error(host: lxdlib.Host) -> None:
    host.launch("busybox", "good")
    host.create("busybox", "bad")
    rec = host.paths.instance_record("bad")
    for garbage in ("{{{ not yaml", "[1, 2]", "name: bad\nconfig: 7\n"):
        rec.write_text(garbage)
        out = ok(cli(host, "list", "-f", "csv", "-c", "ns"))
        assert out.split() == ["bad,ERROR", "good,RUNNING"], garbage
        assert "bad" in cli(host, "list").stderr
        data = json.loads(ok(cli(host, "list", "-f", "json")))
        assert data[0]["status"] == "Error" and "unreadable" in data[0]["error"]
        with pytest.raises(CorruptRecord):
            host.instances["bad"].record()
        assert host.instances["bad"].error is not None
        assert "Status: RUNNING" in ok(cli(host, "info", "good"))
        assert "/1.0/instances/good" in ok(cli(host, "profile", "show", "default"))
        assert "unreadable" in refused(cli(host, "info", "bad"))
        housekeeping.run(host)
        report = housekeeping.recover(host)
        assert "bad" in report.skipped
        assert host.pool("default").volume_exists("containers", "bad")  # its data is kept
        assert host.autostart(sleep=lambda s: None) == {}
        ok(cli(host, "storage", "volume", "list", "default"))
    assert "repair it" in refused(cli(host, "delete", "bad"))  # its record may be worth fixing
    ok(cli(host, "delete", "bad", "--force"))
    assert host.instances.names() == ["good"]
    assert not host.pool("default").volume_exists("containers", "bad")


def test_missing_volume_does_not_break_listings(host: lxdlib.Host) -> None:
    host.launch("busybox", "good")
    host.create("busybox", "novol")
    subprocess.run(["btrfs", "subvolume", "delete",
                    str(host.pool("default").volume_path("containers", "novol"))],
                   check=True, capture_output=True)
    assert ok(cli(host, "list", "-f", "csv", "-c", "ns")).split() == ["good,RUNNING",
                                                                      "novol,STOPPED"]
    ok(cli(host, "info", "novol"))
    assert "Status: RUNNING" in ok(cli(host, "info", "good"))
    assert "volume is missing" in housekeeping.recover(host).skipped["novol"]
    assert "volume is missing" in refused(cli(host, "start", "novol"))
    ok(cli(host, "delete", "novol"))
    assert host.instances.names() == ["good"]


def test_a_stopped_instances_config_is_asked_of_liblxc_again_only_when_it_changed(
        host: lxdlib.Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing asks liblxc to load each stopped instance's config (to show a broken one as
    ERROR); the next listing in the process takes that verdict again while the file is the
    same, and asks again once it changed, so a config broken since is still found."""
    from lxdlib import listing, runtime, state
    host.create("busybox", "s1")
    cfg = host.paths.instance_dir("s1") / "config"
    monkeypatch.setattr(state, "RECENT_NS", -1)  # trust files of any age (else: after 1 s)
    loads: list[str] = []
    real = runtime.open_container

    def counted(lxcpath: object, name: str) -> runtime.Container:
        loads.append(name)
        return real(lxcpath, name)  # type: ignore[arg-type]
    monkeypatch.setattr(runtime, "open_container", counted)
    listing.clear_cache()
    assert host.instances.list_state()["s1"].state == "STOPPED" and loads == ["s1"]
    assert host.instances.list_state()["s1"].state == "STOPPED" and loads == ["s1"]
    text = cfg.read_text()
    cfg.write_text(text + "lxc.environment = A\n")
    broken = host.instances.list_state()["s1"]
    assert broken.state == "ERROR" and "lxc.environment" in (broken.error or "")
    assert loads == ["s1", "s1"]
    cfg.write_text(text)
    assert host.instances.list_state()["s1"].state == "STOPPED" and loads == ["s1"] * 3


def test_a_corrupt_profile_breaks_no_listing(host: lxdlib.Host) -> None:
    """A profile record that is no record (unparseable, a device that is not a mapping: hand-
    edited) is a ``CorruptRecord`` for that profile alone: the listings that read every
    profile (who uses a volume, a pool, a network; profile list) show the others, and the
    bad one can still be shown (its error) and deleted."""
    vols = host.volumes.store
    vols.create("default", "v")
    host.profiles.create("usesv", {}, {"v": {"type": "disk", "pool": "default", "source": "v",
                                             "path": "/v"}})
    host.profiles.create("bad", {}, {})
    path = host.paths.profiles / "bad.yaml"
    for text in (b"{{", b'{"name": "bad", "devices": {"z": 7}}', b"[1]",
                 b'{"name": "bad", "config": "x"}'):
        path.write_bytes(text)
        assert vols.used_by("default", "v") == ["/1.0/profiles/usesv"], text
        for args in (("storage", "volume", "list", "default", "-f", "csv"),
                     ("storage", "list", "-f", "csv"), ("profile", "list", "-f", "csv"),
                     ("network", "list", "-f", "csv")):
            out = ok(cli(host, *args))
            assert "usesv" in out or "profile" not in args, (text, args, out)
        with pytest.raises(CorruptRecord):
            host.profiles.get("bad").record()
        assert "unreadable" in refused(cli(host, "profile", "show", "bad"))
    ok(cli(host, "profile", "delete", "bad"))
    assert "bad" not in host.profiles
    host.profiles.delete("usesv")
    vols.delete("default", "v")


def test_an_instance_record_that_is_no_file_is_shown_never_destroyed(host: lxdlib.Host) -> None:
    """An ``instance.yaml`` that is a dangling symlink, a directory or a FIFO (hand-made) is a
    ``CorruptRecord`` of that instance: listings show it as ERROR. It is never taken for a
    create killed before its record, whose leftovers (directory, volume, snapshots) any
    listing removes, and it never makes a listing fail with a traceback."""
    host.launch("busybox", "good")
    bad = host.create("busybox", "bad")
    bad.snapshots.create("s0")
    rec = host.paths.instance_record("bad")
    pool = host.pool("default")
    for make in (lambda: rec.symlink_to("/nonexistent/bk"), rec.mkdir,
                 lambda: os.mkfifo(rec)):  # a FIFO hung every listing that read it
        rec.unlink()
        make()
        for args in (("list", "-f", "csv", "-c", "ns"), ("storage", "list", "-f", "csv"),
                     ("profile", "list", "-f", "csv"), ("recover",)):
            out = ok(cli(host, *args))
            if args[0] == "list":
                assert out.split() == ["bad,ERROR", "good,RUNNING"]
        assert "Status: RUNNING" in ok(cli(host, "info", "good"))
        assert "unreadable" in refused(cli(host, "info", "bad"))
        assert "bad" in housekeeping.run(host).skipped
        with pytest.raises(CorruptRecord):
            host.instances["bad"].record()
        assert pool.volume_exists("containers", "bad"), make  # its data is kept
        assert pool.list_snapshots("bad") == ["s0"]
        assert host.instances.names() == ["bad", "good"]
        if rec.is_dir() and not rec.is_symlink():
            rec.rmdir()
        else:
            rec.unlink()
        rec.write_text("{}")
    rec.unlink()
    os.mkfifo(rec)
    ok(cli(host, "delete", "bad", "--force"))  # the record put aside is read once more
    assert host.instances.names() == ["good"]
    assert not pool.volume_exists("containers", "bad")
    # a housekeeping stamp that is no file skips that instance alone, with no traceback
    host.create("busybox", "later")
    stamp = host.paths.instance_dir("good") / housekeeping.LAST_RUN
    stamp.unlink(missing_ok=True)
    stamp.mkdir()
    report = housekeeping.run(host)
    assert list(report.skipped) == ["good"]
    assert (host.paths.instance_dir("later") / housekeeping.LAST_RUN).is_file()


def test_corrupt_image_network_and_pool_records_break_no_listing(host: lxdlib.Host) -> None:
    """One image, network or storage pool record that is no record (unparseable, of another
    shape, a directory) is a ``CorruptRecord`` of that object alone: ``image list``, the
    image housekeeping (and the snapshot housekeeping after it), ``network list``,
    ``storage list`` and a launch go on with the others; the corrupt image can be deleted."""
    host.create("busybox", "src")
    two = host.images.publish("src", aliases=["two"])
    fp = two.fingerprint
    img = host.paths.images / fp / "image.yaml"
    net = host.paths.networks / "bkbad0.yaml"
    pool = host.paths.pools / "bkbad.yaml"
    net.parent.mkdir(exist_ok=True)
    for text in (b"{{", b"[1, 2]", b"\0" * 16, b'{"fingerprint": 5, "properties": [1]}', None):
        for path in (img, net, pool):
            if path.is_dir():
                path.rmdir()
            if text is None:
                path.unlink(missing_ok=True)
                path.mkdir()
            else:
                path.write_bytes(text)
        images = ok(cli(host, "image", "list", "-f", "csv"))
        assert "busybox" in images and fp[:12] not in images, text
        r = cli(host, "housekeeping")  # the bad pool is reported skipped, nothing else
        assert "Traceback" not in r.stderr and "pool:bkbad" in r.stdout + r.stderr, r.stderr
        assert "Skipped: src" not in r.stdout and "Error" not in r.stderr, r.stderr
        assert "default" in ok(cli(host, "storage", "list", "-f", "csv"))
        ok(cli(host, "network", "list", "-f", "csv"))
        ok(cli(host, "launch", "busybox", "new"))
        ok(cli(host, "delete", "--force", "new"))
        assert "unreadable" in refused(cli(host, "image", "show", fp))
        if text != b'{"fingerprint": 5, "properties": [1]}':  # a network's shape, a pool's
            assert "unreadable" in refused(cli(host, "network", "show", "bkbad0"))
            assert "unreadable" in refused(cli(host, "storage", "show", "bkbad"))
        with pytest.raises(CorruptRecord):
            host.images.store.get(fp)
    ok(cli(host, "image", "delete", "two"))
    assert not (host.paths.images / fp).exists()
    assert "two" not in host.images.store.aliases()
    net.rmdir()
    pool.rmdir()


def test_an_event_log_that_cannot_take_a_line_fails_no_operation(
        host: lxdlib.Host, caplog: pytest.LogCaptureFixture) -> None:
    """The event tells of what has already happened: an ``events.log`` that is a directory (or
    a full disk) is a warning, not the failure of a create or a snapshot that did happen."""
    log = host.paths.root / "events.log"
    log.unlink(missing_ok=True)
    log.mkdir()
    try:
        with caplog.at_level("WARNING", logger="lxdlib"):
            host.create("busybox", "ev1")
            host.instances["ev1"].snapshots.create("s0")
        assert host.instances["ev1"].state == "STOPPED"
        assert host.instances["ev1"].snapshots.names() == ["s0"]
        assert any("not written to" in r.getMessage() for r in caplog.records)
    finally:
        log.rmdir()
    host.instances["ev1"].delete()


def test_a_network_whose_record_is_corrupt_can_still_be_deleted(host: lxdlib.Host) -> None:
    """A network record that is no record (cut short, another shape, a directory) hides that
    network from listings with a warning, and ``network delete`` still removes it: the bridge,
    its dnsmasq and its nft table are found by the name, not read from the record. A use by
    an instance still refuses the delete."""
    from lxdlib.network.nat import table_name
    from tests.integration.network_fixtures import link_exists, nft_table_exists, unique
    try:
        for make in (lambda p: p.write_bytes(b"{{"), lambda p: p.write_bytes(b"[1, 2]"),
                     lambda p: (p.unlink(), p.mkdir())):
            name = unique("rsxbk")
            host.networks.create(name)
            assert link_exists(name)
            host.create("busybox", "user1", devices={
                "eth0": {"type": "nic", "network": name, "name": "eth0"}})
            path = host.paths.networks / f"{name}.yaml"
            make(path)
            r = cli(host, "network", "list", "-f", "csv")
            assert name in r.stderr and "unreadable" in r.stderr, r.stderr
            assert f"{name},bridge,YES" not in ok(r)
            assert "unreadable" in refused(cli(host, "network", "show", name))
            assert "in use" in refused(cli(host, "network", "delete", name))
            assert os.path.lexists(path) and link_exists(name)
            host.instances["user1"].delete()
            assert "unreadable" in refused(cli(host, "network", "rename", name, name + "x"))
            assert os.path.lexists(path) and link_exists(name), "a refused rename changes nothing"
            r = cli(host, "network", "delete", name)
            assert "unreadable" in r.stderr and f"Network {name} deleted" in ok(r)
            assert not os.path.lexists(path) and not link_exists(name)
            assert not nft_table_exists(table_name(name))
            assert not (host.paths.run / "networks" / name).exists()
            assert name not in host.networks
            assert "not found" in refused(cli(host, "network", "delete", name)).lower()
    finally:  # the root's teardown finds no name in a corrupt record
        for entry in os.listdir(host.paths.networks):
            left = entry.strip(".").split(".")[0]
            subprocess.run(["ip", "link", "del", left], capture_output=True)
            subprocess.run(["nft", "delete", "table", "inet", table_name(left)],
                           capture_output=True)


def test_an_unreadable_alias_table_breaks_no_image_verb_but_its_own(host: lxdlib.Host) -> None:
    """A corrupt ``images/aliases.yaml``: ``image list`` still lists every image (with a
    warning naming the file), a launch by fingerprint works, a launch by alias is refused
    naming the file, and ``image alias create``/``delete`` refuse rather than write a table
    that drops the aliases nobody can read."""
    fp = host.images.store.get("busybox").fingerprint
    table = host.paths.images / "aliases.yaml"
    before = b'{"busybox": {"target": '
    table.write_bytes(before)
    r = cli(host, "image", "list", "-f", "csv")
    assert fp[:12] in ok(r) and "aliases.yaml" in r.stderr, r.stderr
    assert "busybox" in ok(cli(host, "image", "show", fp[:12]))  # its properties
    assert fp in ok(cli(host, "image", "info", fp[:12]))
    ok(cli(host, "launch", fp[:12], "byfp"))
    assert host.instances["byfp"].status == "Running"
    assert "aliases.yaml" in refused(cli(host, "launch", "busybox", "byalias"))
    assert "byalias" not in host.instances
    for args in (("image", "alias", "create", "other", fp[:12]),
                 ("image", "alias", "delete", "busybox"), ("image", "delete", fp[:12])):
        assert "aliases.yaml" in refused(cli(host, *args)), args
        assert table.read_bytes() == before, args
    ok(cli(host, "delete", "--force", "byfp"))
    table.unlink()  # a repair that gives up the aliases: the image is still there
    ok(cli(host, "image", "alias", "create", "busybox", fp[:12]))
    ok(cli(host, "launch", "busybox", "byalias"))
    ok(cli(host, "delete", "--force", "byalias"))


def test_delete_on_a_pool_whose_record_is_corrupt_changes_nothing(host: lxdlib.Host) -> None:
    """An instance whose pool's record cannot be read, or whose pool's directory (a loop
    file) is missing: its delete is refused with the pool's error before anything changes (it
    was an error after the record was gone: the instance vanished and its volume stayed);
    once the pool is repaired it deletes."""
    host.create_pool("rsxdirp", "dir")
    host.create("busybox", "onp2", pool="rsxdirp")
    pool = host.paths.pools / "rsxdirp.yaml"
    good = pool.read_bytes()
    pool.write_bytes(b"{{")
    assert "unreadable" in refused(cli(host, "delete", "--force", "onp2"))
    assert host.paths.instance_record("onp2").is_file()
    assert ok(cli(host, "list", "-f", "csv", "-c", "n")).split() == ["onp2"]
    pool.write_bytes(good)
    base = host.paths.pools / "rsxdirp"
    base.rename(base.with_name("rsxdirp.moved"))  # its directory moved behind lxdlib's back
    assert "missing" in refused(cli(host, "delete", "--force", "onp2"))
    assert host.paths.instance_record("onp2").is_file()
    assert ok(cli(host, "list", "-f", "csv", "-c", "n")).split() == ["onp2"]
    base.with_name("rsxdirp.moved").rename(base)
    assert host.pool("rsxdirp").volume_exists("containers", "onp2")
    ok(cli(host, "delete", "--force", "onp2"))
    assert host.instances.names() == []
    assert not host.pool("rsxdirp").volume_exists("containers", "onp2")


def test_an_intent_record_that_is_a_directory_stops_no_other_instance(host: lxdlib.Host) -> None:
    """An instance's ``.pending.yaml`` made a directory by hand: ``recover`` skips that
    instance and goes on (it ended with a traceback for every instance), its own verbs say
    which file, the others work; an empty one is dropped as a planted symlink is."""
    host.create("busybox", "good")
    host.create("busybox", "bad")
    intent = host.paths.instance_dir("bad") / ".pending.yaml"
    (intent / "x").mkdir(parents=True)
    r = cli(host, "recover")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "bad" in r.stdout and "pending.yaml" in r.stdout, r.stdout
    assert "good" in ok(cli(host, "list", "-f", "csv", "-c", "n")).split()
    ok(cli(host, "start", "good"))
    assert "pending.yaml" in refused(cli(host, "start", "bad"))
    (intent / "x").rmdir()
    ok(cli(host, "start", "bad"))
    assert not os.path.lexists(intent)
    ok(cli(host, "delete", "--force", "good", "bad"))


def test_a_volume_record_that_is_a_directory_deletes_or_is_named(host: lxdlib.Host) -> None:
    """A custom volume's record made a directory by hand: a delete removes an empty one with
    the volume, and refuses one that holds something with an error naming it, leaving the
    record where it was (it was an ``IsADirectoryError`` after the record was withdrawn, and
    the ``.away`` it left made the next delete fail too)."""
    vols = host.volumes.store
    records = host.paths.volume_records / "default"
    for holds in (True, False):
        vols.create("default", "v")
        rec = records / "v.yaml"
        rec.unlink()
        rec.mkdir()
        if holds:
            (rec / "x").mkdir()
            assert "not empty" in refused(cli(host, "storage", "volume", "delete", "default", "v"))
            assert (rec / "x").is_dir() and not os.path.lexists(records / ".v.away")
            assert host.pool("default").volume_exists("custom", "v")
            (rec / "x").rmdir()
        ok(cli(host, "storage", "volume", "delete", "default", "v"))
        assert not os.path.lexists(rec) and not os.path.lexists(records / ".v.away")
        assert not host.pool("default").volume_exists("custom", "v")
    # a record (corrupt or not) whose data is gone: the delete removes it, no error after it
    for text in (b"[1]", b'{"name": "w", "config": {}}'):
        (records / "w.yaml").write_bytes(text)
        r = cli(host, "storage", "volume", "delete", "default", "w")
        ok(r)
        assert "already gone" in r.stderr, r.stderr
        assert not os.path.lexists(records / "w.yaml")


def test_an_instance_of_a_corrupt_profile_is_deleted_with_force(host: lxdlib.Host) -> None:
    """An instance that names a profile whose record cannot be read: ``delete`` says so and
    asks for force (as for an instance whose own record cannot be read), ``delete --force``
    deletes it with what can be read; it was refused either way, the instance stuck until
    the profile was repaired by hand. Other instances are untouched."""
    host.profiles.create("badp", {"limits.processes": "50"}, {})
    host.create("busybox", "user", profiles=["default", "badp"])
    host.create("busybox", "other")
    (host.paths.profiles / "badp.yaml").write_bytes(b"{{")
    assert "with force" in refused(cli(host, "delete", "user"))
    assert host.paths.instance_record("user").is_file()
    ok(cli(host, "delete", "--force", "user"))
    assert host.instances.names() == ["other"]
    assert not host.pool("default").volume_exists("containers", "user")
    ok(cli(host, "profile", "delete", "badp"))  # nothing uses it now
