"""A managed network's static DHCP hosts: one small file per owner, in a directory dnsmasq watches.

An entry pins a MAC to an IPv4 address and/or a host name; its key names its owner and, after a
``/``, whatever distinguishes the owner's entries (``<instance>/<nic>``). All entries of one owner
live in one file, ``hosts.d/<owner>``, that dnsmasq reads as a ``--dhcp-hostsdir`` file: adding,
changing or forgetting an instance's entries reads and writes that file and nothing that lists
every instance, so the cost does not grow with the network. The file holds dnsmasq's lines and,
on ``#`` comment lines that dnsmasq skips, the entries themselves as JSON (key included): the
one atomic write of the file commits both.

The rules that span entries (a MAC, and a static address, belong to one key at most) are checked
through an index, ``dhcp-index/mac-<hex>`` and ``dhcp-index/ip-<address>``, each naming the key
that holds it. The owner files are the truth: an index file is believed only when the entry it
names says the same, so one left behind by a crash between two writes (or by an entry that moved
on) is ignored and later overwritten. The index is written before the owner file and pruned
after it, so an entry always has its index files.

dnsmasq only adds what it reads by itself: a removed or changed entry stays in its memory until
it is told to read the directory again (SIGHUP), which re-reads every file and matches every
lease against every entry — ~90 ms of its CPU with 1,000 instances, for each delete. A removed
entry that pins a name alone is harmless there (its MAC leaves with its instance, and a name is
given by MAC), so its re-read is put off: its MAC and its name are marked in ``dhcp-stale/``
(before the entry goes, so that a crash leaves a mark too many rather than one too few), and
the re-read comes when an entry with a marked MAC or name is added, when ``STALE_MAX`` entries
are marked, or with any other re-read. An entry that pins an address is re-read at once:
another MAC may want the address.

Callers hold the network's lock around every change (a read-modify-write of one owner's file and
the index files it claims); `HostStore` itself takes no lock.

Older roots kept every entry in one ``dhcp-hosts.yaml`` (rendered to one ``dnsmasq.hosts``);
`HostStore.migrate` moves them here once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import state
from ..errors import TYPE_CHECKING
from ..logs import get_logger
from ..patterns import Pattern
from ..values import Value, assign
from . import dnsmasq

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

INDEX_DIR = "dhcp-index"
STALE_DIR = "dhcp-stale"
#: Removed name-only entries dnsmasq may keep before it is told to re-read (see above).
STALE_MAX = 64
HEADER = "# lxdlib static DHCP hosts of one owner: each '#{...}' line is the entry of the line " \
         "after it\n"

# An owner that is a plain name (an instance name) names its file as it is, which keeps the
# directory readable; anything else is hashed. Plain names never start with '_', hashed ones
# always do, so the two never meet; none starts with '.', which dnsmasq would skip.
_PLAIN_RE = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
#: One label of a DNS name (RFC 1123): what an entry's host name must be (the network manager
#: refuses anything else), and a network's domain is made of them.
DNS_LABEL = Pattern(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class StaticHost(Value, frozen=True):
    """One static entry: ``hwaddr`` (lower case) pinned to ``ipv4`` and/or ``hostname``."""

    _fields = ("key", "hwaddr", "ipv4", "hostname")
    __slots__ = _fields

    key: str
    hwaddr: str
    ipv4: str | None
    hostname: str | None

    def __init__(self, key: str, hwaddr: str, ipv4: str | None = None,
                 hostname: str | None = None) -> None:
        assign(self, "key", key)
        assign(self, "hwaddr", hwaddr)
        assign(self, "ipv4", ipv4)
        assign(self, "hostname", hostname)

    @property
    def line(self) -> str | None:
        return dnsmasq.host_line(self.hwaddr, self.ipv4, self.hostname)

    def as_dict(self) -> dict[str, Any]:
        return {"hwaddr": self.hwaddr, "ipv4": self.ipv4, "hostname": self.hostname}


def owner_of(key: str) -> str:
    return key.split("/", 1)[0]


def file_name(owner: str) -> str:
    """The file of ``owner``'s entries in the hosts directory (derived from the owner alone)."""
    if _PLAIN_RE.fullmatch(owner):
        return owner
    return "_" + hashlib.sha256(owner.encode()).hexdigest()[:32]


def _mac_file(hwaddr: str) -> str:
    return hwaddr.lower().replace(":", "")


def _deferrable(host: StaticHost) -> bool:
    """Whether dnsmasq may keep ``host`` after it was removed, until a batched re-read: an
    entry that pins no address, and whose name (if any) can be marked (a DNS label is safe as
    a file name)."""
    return host.ipv4 is None and (host.hostname is None or
                                  bool(DNS_LABEL.fullmatch(host.hostname)))


def _marks(host: StaticHost) -> list[str]:
    """The marks of a removed entry dnsmasq may still hold: its MAC, and its name (an instance
    made again under that name must not meet the old entry)."""
    marks = [f"mac-{_mac_file(host.hwaddr)}"]
    if host.hostname and DNS_LABEL.fullmatch(host.hostname):
        marks.append(f"name-{host.hostname.lower()}")
    return marks


def render(hosts: Iterable[StaticHost]) -> str:
    out = [HEADER]
    for host in sorted(hosts, key=lambda h: h.key):
        out.append("#" + json.dumps({"key": host.key, **host.as_dict()}, sort_keys=True) + "\n")
        if host.line is not None:
            out.append(host.line + "\n")
    return "".join(out)


def parse(text: str) -> dict[str, StaticHost]:
    """The entries of one owner file (its ``#{...}`` lines; dnsmasq's lines follow from them)."""
    found: dict[str, StaticHost] = {}
    for line in text.splitlines():
        if not line.startswith("#{"):
            continue
        try:
            data = json.loads(line[1:])
            host = StaticHost(key=str(data["key"]), hwaddr=str(data["hwaddr"]).lower(),
                        ipv4=str(data["ipv4"]) if data.get("ipv4") else None,
                        hostname=str(data["hostname"]) if data.get("hostname") else None)
        except (ValueError, KeyError, TypeError):
            log.warning("skipping a damaged DHCP host entry: %r", line)
            continue
        found[host.key] = host
    return found


class HostStore:
    """The static hosts of the network whose run directory is ``run_dir``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.hosts_dir = run_dir / dnsmasq.HOSTS_DIR
        self.index_dir = run_dir / INDEX_DIR
        self.stale_dir = run_dir / STALE_DIR

    # -- reading ------------------------------------------------------------------------------
    def owner_path(self, owner: str) -> Path:
        return self.hosts_dir / file_name(owner)

    def owner_hosts(self, owner: str) -> dict[str, StaticHost]:
        try:
            text = self.owner_path(owner).read_text(errors="replace")
        except FileNotFoundError:
            return {}
        return parse(text)

    def get(self, key: str) -> StaticHost | None:
        return self.owner_hosts(owner_of(key)).get(key)

    def _index_path(self, kind: str, value: str) -> Path:
        name = _mac_file(value) if kind == "mac" else value
        return self.index_dir / f"{kind}-{name}"

    def _indexed(self, kind: str, value: str) -> str | None:
        try:
            return self._index_path(kind, value).read_text()
        except FileNotFoundError:
            return None

    def holder_of_mac(self, hwaddr: str) -> str | None:
        """The key whose entry has ``hwaddr``, if any (one index read, one owner file read)."""
        mac = hwaddr.lower()
        key = self._indexed("mac", mac)
        if key is None:
            return None
        host = self.get(key)
        return key if host is not None and host.hwaddr == mac else None

    def holder_of_ipv4(self, address: str) -> str | None:
        """The key whose entry pins ``address``, if any."""
        key = self._indexed("ip", address)
        if key is None:
            return None
        host = self.get(key)
        return key if host is not None and host.ipv4 == address else None

    # -- changing (under the network's lock) ----------------------------------------------------
    def put(self, host: StaticHost) -> bool:
        """Add or replace ``host`` (by key). Returns whether dnsmasq must re-read its hosts:
        it reads a new file by itself, but a file it has read must not change under it.
        Unchanged entries cost a read and no write."""
        owner = owner_of(host.key)
        hosts = self.owner_hosts(owner)
        old = hosts.get(host.key)
        if old == host:
            return False
        self._claim("mac", host.hwaddr, host.key)
        if host.ipv4:
            self._claim("ip", host.ipv4, host.key)
        had_lines = any(h.line for h in hosts.values())
        hosts[host.key] = host
        self._write_owner(owner, hosts)
        if old is not None:
            self._unclaim(old, host)
        return had_lines

    def remove(self, key: str) -> list[StaticHost]:
        """Drop ``key``'s entry (a missing one is fine); the dropped entry, if any."""
        return self._drop(owner_of(key), {key})

    def forget(self, owner: str) -> list[StaticHost]:
        """Drop the entries keyed ``owner`` or ``owner/<anything>``; the dropped entries."""
        return self.retain(owner, {})

    def retain(self, owner: str, keep: Mapping[str, str | None]) -> list[StaticHost]:
        """Drop the entries keyed ``owner`` or ``owner/<anything>`` but those ``keep`` names,
        and of those, one whose address is not the static address ``keep`` gives it (None:
        any, or none); the dropped entries. One read of the owner's file."""
        return self._drop(owner_of(owner), self.unkept(owner, keep))

    def unkept(self, owner: str, keep: Mapping[str, str | None]) -> set[str]:
        """The keys ``retain`` would drop (a read: every start asks, and most drop none)."""
        hosts = self.owner_hosts(owner_of(owner))
        return {k for k, h in hosts.items() if (k == owner or k.startswith(owner + "/"))
                and (k not in keep or keep[k] not in (None, h.ipv4))}

    def _drop(self, owner: str, keys: set[str]) -> list[StaticHost]:
        hosts = self.owner_hosts(owner)
        gone = [hosts.pop(k) for k in sorted(keys) if k in hosts]
        if not gone:
            return []
        for host in gone:
            if host.line is not None and _deferrable(host):  # no line: dnsmasq never had it
                self._mark_stale(host)
        if hosts:
            self._write_owner(owner, hosts)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.owner_path(owner).unlink()
            state.fsync_dir(self.hosts_dir)
            log.debug("dnsmasq hosts file %s removed", self.owner_path(owner))
        for host in gone:
            self._unclaim(host, None)
        return gone

    # -- what dnsmasq still holds (under the network's lock) -----------------------------------
    def reread_due(self, changed: StaticHost | None = None,
                   gone: Iterable[StaticHost] = ()) -> bool:
        """Whether dnsmasq must re-read its hosts now: after ``gone`` were removed, one that
        pins an address (or an odd name) among them, or ``STALE_MAX`` marks; before ``changed``
        is read, its MAC or its name marked (dnsmasq would still hold the old entry of either)."""
        gone = [h for h in gone if h.line is not None]
        if any(not _deferrable(h) for h in gone):
            return True
        if changed is not None and any((self.stale_dir / mark).exists()
                                       for mark in _marks(changed)):
            return True
        if not gone:
            return False
        try:
            marked = os.listdir(self.stale_dir)
        except FileNotFoundError:
            return False
        return sum(1 for m in marked if m.startswith("mac-")) >= STALE_MAX

    def reread_sent(self) -> None:
        """dnsmasq was told to re-read: it holds no removed entry any more."""
        try:
            names = os.listdir(self.stale_dir)
        except FileNotFoundError:
            return
        for name in names:  # at most twice STALE_MAX and a few
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stale_dir / name)

    def _mark_stale(self, host: StaticHost) -> None:
        self.stale_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for mark in _marks(host):
            # not durable: after a power loss dnsmasq starts afresh, from the files alone
            os.close(os.open(self.stale_dir / mark,
                             os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))

    def _write_owner(self, owner: str, hosts: dict[str, StaticHost]) -> None:
        self.hosts_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = self.owner_path(owner)
        # readable by others: an unprivileged dnsmasq reads it. Not fsync'd: the entries are
        # derived from instance records (every start adds its nics' entries again), and the
        # index files a new entry claims are durable before it is written, so after a power
        # loss an owner file is its old self or the new one, never an entry without its index
        # (removals stay durable: a pin of a deleted instance must not come back)
        state.atomic_write(path, render(hosts.values()).encode(), mode=0o644, durable=False)
        log.debug("dnsmasq hosts file %s written: %s", path, ", ".join(sorted(hosts)))

    def _claim(self, kind: str, value: str, key: str) -> None:
        if self._indexed(kind, value) == key:
            return
        self.index_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state.atomic_write(self._index_path(kind, value), key.encode())

    def _unclaim(self, old: StaticHost, new: StaticHost | None) -> None:
        """Remove the index files ``old`` claimed that ``new`` (same key) no longer does."""
        claims = [("mac", old.hwaddr)] + ([("ip", old.ipv4)] if old.ipv4 else [])
        for kind, value in claims:
            if new is not None and value in (new.hwaddr, new.ipv4):
                continue
            if self._indexed(kind, value) == old.key:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._index_path(kind, value))

    # -- all entries (listing and the one-time migration) ---------------------------------------
    def all_hosts(self) -> dict[str, StaticHost]:
        """Every entry; reads the whole directory (for listings, not for one instance's step)."""
        found: dict[str, StaticHost] = {}
        if not self.hosts_dir.is_dir():
            return found
        for path in sorted(self.hosts_dir.iterdir()):
            if path.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                found.update(parse(path.read_text(errors="replace")))
        return found

    def migrate(self, legacy: Path) -> int:
        """Move the entries of an older root's single ``dhcp-hosts.yaml`` (``legacy``) here, then
        remove it; returns how many were moved. An entry already here is newer and is kept, so
        a migration cut short by a crash simply runs again."""
        try:
            data = state.read_record(legacy)
        except FileNotFoundError:
            return 0
        moved = 0
        for key, entry in (data if isinstance(data, dict) else {}).items():
            if not isinstance(entry, dict) or not entry.get("hwaddr"):
                continue
            host = StaticHost(key=str(key), hwaddr=str(entry["hwaddr"]).lower(),
                        ipv4=str(entry["ipv4"]) if entry.get("ipv4") else None,
                        hostname=str(entry["hostname"]) if entry.get("hostname") else None)
            if self.get(host.key) is None:
                self.put(host)
                moved += 1
        legacy.unlink()
        state.fsync_dir(legacy.parent)
        log.info("moved %d static DHCP hosts from %s to %s", moved, legacy, self.hosts_dir)
        return moved
