"""One rule for every description (``config.text.check_description``): a string without a
carriage return or NUL, refused as InvalidArgument before anything is read or made, for every
kind of object that has one. Each entry point is called on a fresh root where the object it
would act on does not exist: a refused description fails first; an accepted one gets past the
check and meets the missing object (NotFound) or makes the harmless record it asked for."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib import backup, copy, preseed, snapshots
from lxdlib.config.text import check_description
from lxdlib.errors import InvalidArgument, NotFound
from lxdlib.instance import InstanceCore
from lxdlib.network.manager import NetworkManager
from lxdlib.record import InstanceRecord, SnapshotRecord, now
from lxdlib.storage import pools
from lxdlib.volumes import VolumeStore

BAD_TEXT = ["a\rb", "\r", "crlf\r\n", "nul\0", "\0"]
BAD: list[object] = [*BAD_TEXT, 5, None, ["x"], b"bytes"]
GOOD = ["", "plain", "two\nlines", "tab\there", "é 😀", "  spaces  ", "a" * 4096]

Call = Callable[[lxdlib.Host, Any], object]

#: every way a description reaches lxdlib, by the kind of object it describes
KINDS: dict[str, Call] = {
    "instance create": lambda h, d: h.instances.create("nope", "hddi", description=d),
    "instance copy": lambda h, d: copy.copy_instance(h.ctx, "hddnope", "hddi", description=d),
    "instance snapshot": lambda h, d: snapshots.create_locked(
        InstanceCore(h.ctx, "hddnope"), "s", description=d),
    "backup instance": lambda h, d: backup.check_archived(h.ctx, InstanceRecord(
        name="hddi", architecture="x86_64", created_at=now(), pool="p", description=d)),
    "backup snapshot": lambda h, d: backup.archive_snapshot(h.ctx, SnapshotRecord(
        name="s", created_at=now(), description=d,
        devices={"root": {"type": "disk", "path": "/", "pool": "p"}})),
    "profile create": lambda h, d: h.profiles.create("hddp", description=d),
    "profile update": lambda h, d: (h.profiles.create("hddp"),
                                    h.profiles.update("hddp", description=d)),
    "network update": lambda h, d: NetworkManager(h.paths).update("hddnope", {}, d),
    "storage pool": lambda h, d: pools.check_pool("hddp", "dir", {}, d),
    "storage pool update": lambda h, d: pools.set_pool_description(h.paths, "hddnope", d),
    "volume create": lambda h, d: VolumeStore(h.ctx).create("hddnope", "v", description=d),
    "volume update": lambda h, d: VolumeStore(h.ctx).update("hddnope", "v", description=d),
    "volume snapshot": lambda h, d: VolumeStore(h.ctx).create_snapshot("hddnope", "v", "s", d),
    "volume snapshot update": lambda h, d: VolumeStore(h.ctx).update_snapshot(
        "hddnope", "v", "s", description=d),
    "image alias create": lambda h, d: h.ctx.images.alias_create("a", "nope", d),
    "image alias update": lambda h, d: h.ctx.images.alias_update("hddnope", description=d),
}
#: a document's: its scalars are text before they are checked (``5`` is "5", null is "")
DOCUMENTS: dict[str, Call] = {
    "preseed network": lambda h, d: preseed.check(h.ctx, {"networks": [
        {"name": "hddn9", "type": "bridge", "description": d}]}),
    "preseed profile": lambda h, d: preseed.check(h.ctx, {"profiles": [
        {"name": "hddp", "description": d}]}),
}
#: what would make a bridge for an accepted description: called with refused ones only, and
#: stopped before the host's bridges (``_no_host_networks``) should one be accepted
REFUSE_ONLY: dict[str, Call] = {
    "network create": lambda h, d: NetworkManager(h.paths).create("hddn9", {}, d),
}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> lxdlib.Host:
    monkeypatch.setattr(NetworkManager, "_apply", _no_host_networks)
    return lxdlib.Host(tmp_path)


def _no_host_networks(self: NetworkManager, *args: object) -> None:
    """A network change got past the description: it goes no further (no bridge, no
    dnsmasq, no nft table of a unit test on the host)."""
    raise AssertionError("a network change reached the host")


def _is_description_error(e: BaseException) -> bool:
    return type(e) is InvalidArgument and "description" in str(e)


@pytest.mark.parametrize("value", BAD, ids=lambda v: repr(v)[:12])
def test_the_rule_refuses(value: object) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_description(value)
    assert type(err.value) is InvalidArgument  # not InvalidConfig: a description is no key
    with pytest.raises(InvalidArgument, match=r"^the instance: description"):
        check_description(value, "the instance")


@pytest.mark.parametrize("value", GOOD, ids=lambda v: repr(v)[:12])
def test_the_rule_accepts(value: str) -> None:
    check_description(value)


REFUSED = [pytest.param(kind, value, id=f"{kind}-{value!r}")
           for kind in [*KINDS, *REFUSE_ONLY] for value in BAD
           # None is "keep the description" where a change may leave it out
           if value is not None or kind.endswith("create") or kind.startswith("backup")] + \
          [pytest.param(kind, value, id=f"{kind}-{value!r}")
           for kind in DOCUMENTS for value in BAD_TEXT]


@pytest.mark.parametrize(("kind", "value"), REFUSED)
def test_every_kind_refuses_the_same_way(host: lxdlib.Host, kind: str, value: object) -> None:
    call = {**KINDS, **REFUSE_ONLY, **DOCUMENTS}[kind]
    with pytest.raises(InvalidArgument) as err:
        call(host, value)
    assert _is_description_error(err.value), (kind, err.value)


@pytest.mark.parametrize("kind", [*KINDS, *DOCUMENTS])
@pytest.mark.parametrize("value", GOOD, ids=lambda v: repr(v)[:12])
def test_every_kind_accepts_the_same(host: lxdlib.Host, kind: str, value: str) -> None:
    with contextlib.suppress(NotFound):  # past the check: the object it would change is absent
        {**KINDS, **DOCUMENTS}[kind](host, value)
