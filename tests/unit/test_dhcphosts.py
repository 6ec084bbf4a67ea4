"""The per-owner static DHCP host files: naming, format, the MAC/address index, migration, and
that one owner's step touches only that owner's files."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import pytest

from lxdlib import state
from lxdlib.network import dhcphosts
from lxdlib.network.dhcphosts import HostStore, StaticHost


@pytest.mark.parametrize("owner", ["c1", "web-01", "a.b", "x_y", "A9"])
def test_plain_owner_names_its_file(owner: str) -> None:
    assert dhcphosts.file_name(owner) == owner


@pytest.mark.parametrize("owner", [".hidden", "_c1", "-c1", "a b", "a/b", "x" * 101, "é", "",
                                   "c1~", "#c1#"])
def test_other_owners_are_hashed(owner: str) -> None:
    name = dhcphosts.file_name(owner)
    # dnsmasq skips dot files and editor leftovers; a hashed name never meets a plain one
    assert name.startswith("_") and len(name) == 33 and "/" not in name
    assert name == dhcphosts.file_name(owner)  # stable
    assert name != dhcphosts.file_name(owner + "x")


def test_key_owner() -> None:
    assert dhcphosts.owner_of("c1/eth0") == "c1"
    assert dhcphosts.owner_of("c1/a/b") == "c1"
    assert dhcphosts.owner_of("c1") == "c1"


def test_render_and_parse_round_trip() -> None:
    hosts = [StaticHost("c1/eth1", "02:00:00:00:00:02"),
             StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.5", "c1"),
             StaticHost("c1/eth2", "02:00:00:00:00:03", None, "c1")]
    text = dhcphosts.render(hosts)
    # what dnsmasq reads: comments, then its own lines only where there is something to pin
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ["02:00:00:00:00:01,10.0.0.5,c1", "02:00:00:00:00:03,c1"]
    assert dhcphosts.parse(text) == {h.key: h for h in hosts}
    assert dhcphosts.parse("#{damaged\n#{}\n02:00:00:00:00:01,c1\n") == {}


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_put_get_and_index(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    assert store.put(StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.5", "c1")) is False
    assert store.get("c1/eth0") == StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.5", "c1")
    assert store.holder_of_mac("02:00:00:00:00:01") == "c1/eth0"
    assert store.holder_of_mac("02:00:00:00:00:01".upper()) == "c1/eth0"
    assert store.holder_of_ipv4("10.0.0.5") == "c1/eth0"
    assert store.holder_of_ipv4("10.0.0.6") is None
    assert set(files(tmp_path)) == {"hosts.d/c1", "dhcp-index/mac-020000000001",
                                    "dhcp-index/ip-10.0.0.5"}
    mode = os.stat(tmp_path / "hosts.d" / "c1").st_mode & 0o777
    assert mode == 0o644  # an unprivileged dnsmasq reads it
    assert os.stat(tmp_path / "hosts.d").st_mode & 0o777 == 0o755

    # a second nic of the same owner: a file dnsmasq has read changes, so it must re-read
    assert store.put(StaticHost("c1/eth1", "02:00:00:00:00:02", None, "c1")) is True
    # unchanged: nothing written
    before = os.stat(tmp_path / "hosts.d" / "c1").st_mtime_ns
    time.sleep(0.01)
    assert store.put(StaticHost("c1/eth1", "02:00:00:00:00:02", None, "c1")) is False
    assert os.stat(tmp_path / "hosts.d" / "c1").st_mtime_ns == before

    # a changed address moves its index entry
    store.put(StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.7", "c1"))
    assert store.holder_of_ipv4("10.0.0.5") is None
    assert store.holder_of_ipv4("10.0.0.7") == "c1/eth0"
    assert not (tmp_path / "dhcp-index" / "ip-10.0.0.5").exists()


def test_stale_index_is_not_believed(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    store.put(StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.5"))
    # what a crash between the index write and the owner file write leaves
    state.atomic_write(tmp_path / "dhcp-index" / "mac-020000000009", b"c1/eth0")
    state.atomic_write(tmp_path / "dhcp-index" / "ip-10.0.0.9", b"c2/eth0")
    assert store.holder_of_mac("02:00:00:00:00:09") is None
    assert store.holder_of_ipv4("10.0.0.9") is None
    store.put(StaticHost("c3/eth0", "02:00:00:00:00:09", "10.0.0.9"))  # overwrites the stale ones
    assert store.holder_of_mac("02:00:00:00:00:09") == "c3/eth0"
    assert store.holder_of_ipv4("10.0.0.9") == "c3/eth0"


def test_remove_and_forget_touch_one_owner(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    store.put(StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.5", "c1"))
    store.put(StaticHost("c1/eth1", "02:00:00:00:00:02"))
    store.put(StaticHost("c10/eth0", "02:00:00:00:00:10", None, "c10"))
    store.put(StaticHost("c2/eth0", "02:00:00:00:00:03", None, "c2"))

    assert store.remove("c2/eth0") == [StaticHost("c2/eth0", "02:00:00:00:00:03", None, "c2")]
    assert store.remove("c2/eth0") == []
    assert not (tmp_path / "hosts.d" / "c2").exists()
    assert store.holder_of_mac("02:00:00:00:00:03") is None

    gone = store.forget("c1")
    assert sorted(h.key for h in gone) == ["c1/eth0", "c1/eth1"]
    # c2's name-only entry is marked as still held by dnsmasq (see the batched re-read test)
    assert set(files(tmp_path)) == {"hosts.d/c10", "dhcp-index/mac-020000000010",
                                    "dhcp-stale/mac-020000000003", "dhcp-stale/name-c2"}
    assert store.forget("c1") == []
    assert store.get("c10/eth0") is not None  # "c1" is not a prefix of "c10/…"

    store.put(StaticHost("c4/eth0", "02:00:00:00:00:04"))
    store.put(StaticHost("c4/eth1", "02:00:00:00:00:05"))
    assert [h.key for h in store.forget("c4/eth0")] == ["c4/eth0"]
    assert list(store.owner_hosts("c4")) == ["c4/eth1"]


def test_owner_step_reads_no_other_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding and forgetting one instance opens only its own files, however many there are,
    and lists no directory."""
    store = HostStore(tmp_path)
    for i in range(50):
        store.put(StaticHost(f"i{i}/eth0", f"02:00:00:00:01:{i:02x}", None, f"i{i}"))
    opened: list[str] = []
    real_os_open, real_io_open = os.open, io.open

    def spy_os(path: str, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    def spy_io(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file) if isinstance(file, str | Path) else repr(file))
        return real_io_open(file, *args, **kwargs)

    def no_listing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"listed a directory: {args}")

    monkeypatch.setattr(os, "open", spy_os)
    monkeypatch.setattr(io, "open", spy_io)
    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)

    store.get("i3/eth0")
    assert str(tmp_path / "hosts.d" / "i3") in opened  # the spy sees reads
    opened.clear()
    store.put(StaticHost("new/eth0", "02:00:00:00:02:01", None, "new"))
    store.put(StaticHost("new/eth0", "02:00:00:00:02:01", None, "new"))
    store.forget("new")
    assert opened
    mine = ("new", "020000000201")
    others = [p for p in opened
              if not any(m in Path(p).name for m in mine)
              and Path(p) not in (tmp_path / "hosts.d", tmp_path / "dhcp-index")]
    assert others == []


def test_migrate_legacy_file(tmp_path: Path) -> None:
    legacy = tmp_path / "dhcp-hosts.yaml"
    legacy.write_text(state.dump_yaml({  # older versions wrote it as YAML
        "c1/eth0": {"hwaddr": "02:00:00:00:00:01", "ipv4": "10.0.0.5", "hostname": "c1"},
        "c2/eth0": {"hwaddr": "02:00:00:00:00:02", "ipv4": None, "hostname": "c2"},
        "c3/eth0": {"hwaddr": "02:00:00:00:00:03", "ipv4": None, "hostname": None},
        "odd key": {"hwaddr": "02:00:00:00:00:04", "ipv4": None, "hostname": "x"},
    }))
    store = HostStore(tmp_path)
    # an entry made after the upgrade but before the migration is newer: kept
    store.put(StaticHost("c2/eth0", "02:00:00:00:00:22", None, "c2"))
    assert store.migrate(legacy) == 3
    assert not legacy.exists()
    assert store.all_hosts() == {
        "c1/eth0": StaticHost("c1/eth0", "02:00:00:00:00:01", "10.0.0.5", "c1"),
        "c2/eth0": StaticHost("c2/eth0", "02:00:00:00:00:22", None, "c2"),
        "c3/eth0": StaticHost("c3/eth0", "02:00:00:00:00:03"),
        "odd key": StaticHost("odd key", "02:00:00:00:00:04", None, "x"),
    }
    assert store.holder_of_ipv4("10.0.0.5") == "c1/eth0"
    assert store.migrate(legacy) == 0  # once


def test_removed_name_entries_wait_for_a_batched_reread(tmp_path: Path) -> None:
    """Removing an entry that pins a name alone marks its MAC and name instead of asking
    dnsmasq to re-read every entry; the re-read is due when an entry with a marked MAC or name
    is added, when an entry with an address goes, or at STALE_MAX marked entries; once sent,
    the marks are gone."""
    store = HostStore(tmp_path)
    name_only = [StaticHost(key=f"c{i}/eth0", hwaddr=f"02:00:00:00:01:{i:02x}", hostname=f"c{i}")
                 for i in range(dhcphosts.STALE_MAX)]
    for host in name_only:
        store.put(host)
    pinned = StaticHost(key="p/eth0", hwaddr="02:00:00:00:02:01", ipv4="10.0.0.5")
    store.put(pinned)

    for host in name_only[:-1]:
        gone = store.forget(dhcphosts.owner_of(host.key))
        assert gone == [host] and not store.reread_due(gone=gone)
    assert len(list(store.stale_dir.iterdir())) == 2 * (dhcphosts.STALE_MAX - 1)
    assert store.reread_due(gone=store.remove(name_only[-1].key))  # the batch is full
    store.reread_sent()
    assert list(store.stale_dir.iterdir()) == []

    assert store.reread_due(gone=store.forget("p"))  # an address: another MAC may want it
    old = name_only[0]
    store.put(old)
    assert not store.reread_due(changed=old)
    assert not store.reread_due(gone=store.remove(old.key))
    assert store.reread_due(changed=old.evolve(key="new/eth0", hostname="new"))  # its MAC
    assert store.reread_due(changed=StaticHost(key="other/eth0", hwaddr="02:00:00:00:03:01",
                                               hostname=old.hostname.upper()))  # its name
    assert not store.reread_due(changed=StaticHost(key="x/eth0", hwaddr="02:00:00:00:03:02",
                                                   hostname="x"))
    assert not store.reread_due(gone=store.remove("missing/eth0"))  # nothing went
