"""Traffic limits of a nic, applied with tc (pyroute2) on the host end of its veth pair.

The host veth is the one place the instance cannot reach, so the limits hold whatever runs
inside. Directions are the instance's, as in LXD:

- ``limits.ingress`` (traffic *into* the instance) leaves the host through the veth: an ``htb``
  root qdisc ``1:0`` whose default class ``1:10`` has the rate;
- ``limits.egress`` (traffic *out of* the instance) arrives on the host veth. LXD polices it
  there (``ingress`` qdisc + ``police``), but kernels built without ``act_police`` (this one has
  no ``act_police`` nor ``act_gact``) cannot drop by rate in tc. lxdlib redirects it instead
  (``ingress`` qdisc + u32 match-all + ``mirred`` redirect) to an ``ifb`` device named after the
  veth, whose root ``htb`` shapes it: a queue rather than drops, which TCP follows smoothly.
- ``limits.max`` sets both.

The veth's qdiscs disappear with the veth; the ifb does not, so ``clear`` (run at stop) deletes
it, ``apply`` replaces whatever an earlier run left, and ``collect_orphans`` removes ifbs whose
veth is gone (each ifb's alias names its veth).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

from ..config.ids import sha256_hex
from ..config.units import parse_bit_rate
from ..errors import TYPE_CHECKING, InvalidArgument, InvalidConfig, NetworkError
from ..logs import get_logger
from ..values import Value, assign
from .bridge import iproute

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

ROOT = 0x10000  # 1:0
CLASS = 0x10010  # 1:10, the default class every packet falls into
INGRESS = 0xFFFF0000  # ffff:0
ETH_P_ALL = 0x0003
#: htb's rate field holds bytes/s in 32 bits; faster limits are capped (about 34 Gbit/s).
MAX_RATE_BYTES = 2**32 - 1
IFB_PREFIX = "lxdifb"


class Limits(Value, frozen=True):
    """Rates in bit/s; ``None`` is unlimited."""

    _fields = ("ingress", "egress")
    __slots__ = _fields

    ingress: int | None
    egress: int | None

    def __init__(self, ingress: int | None = None, egress: int | None = None) -> None:
        assign(self, "ingress", ingress)
        assign(self, "egress", egress)

    def __bool__(self) -> bool:
        return bool(self.ingress or self.egress)


def nic_limits(dev: Mapping[str, str]) -> Limits:
    """The limits a nic device asks for (``limits.max`` stands for both directions)."""
    def rate(key: str) -> int | None:
        value = dev.get(key, "")
        if value == "":
            return None
        try:
            bits = parse_bit_rate(value)
        except InvalidArgument as e:
            raise InvalidConfig(key, str(e), value) from None
        if bits <= 0:
            raise InvalidConfig(key, "a rate limit must be positive", value)
        return bits

    both = rate("limits.max")
    if both is not None:
        return Limits(both, both)
    return Limits(rate("limits.ingress"), rate("limits.egress"))


def ifb_name(veth: str) -> str:
    """The ifb device that shapes ``veth``'s incoming traffic: 15 characters, stable."""
    return IFB_PREFIX + sha256_hex(veth)[:9]


def rate_bytes(bits: int) -> int:
    return max(1, min(bits // 8, MAX_RATE_BYTES))


def _index(ipr: Any, name: str) -> int | None:
    try:
        links = ipr.link_lookup(ifname=name)
    except Exception as e:
        raise NetworkError(f"cannot look up {name}: {e}") from e
    return int(links[0]) if links else None


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Delete something that may well not be there."""
    try:
        fn(*args, **kwargs)
    except Exception as e:
        if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def _handle(h: int) -> str:
    """A tc handle as tc prints it (``1:10``)."""
    return f"{h >> 16:x}:{h & 0xFFFF:x}"


def _htb(ipr: Any, index: int, bits: int) -> None:

    ipr.tc("add", "htb", index, ROOT, default=CLASS & 0xFFFF)
    b = rate_bytes(bits)
    ipr.tc("add-class", "htb", index, CLASS, parent=ROOT, rate=b, ceil=b)


def _clear(ipr: Any, index: int | None, ifb: str) -> None:
    if index is not None:
        _quiet(ipr.tc, "del", "htb", index, ROOT)
        _quiet(ipr.tc, "del", "ingress", index, INGRESS)
    ifb_index = _index(ipr, ifb)
    if ifb_index is not None:
        _quiet(ipr.link, "del", index=ifb_index)
        log.debug("ifb %s deleted", ifb)


def exists(veth: str) -> bool:
    return os.path.exists(f"/sys/class/net/{veth}")


def apply(veth: str, limits: Limits, ifb: str | None = None) -> None:
    """Make ``veth``'s limits exactly ``limits`` (earlier ones are replaced). All or nothing.

    ``ifb`` names the device that shapes traffic arriving from the veth (default: from the veth).
    """
    ifb = ifb or ifb_name(veth)
    with iproute() as ipr:
        index = _index(ipr, veth)
        if index is None:
            raise NetworkError(f"cannot limit traffic of {veth}: no such interface")
        _clear(ipr, index, ifb)
        try:
            if limits.ingress:
                _htb(ipr, index, limits.ingress)
            if limits.egress:
                ipr.link("add", ifname=ifb, kind="ifb")
                ifb_index = _index(ipr, ifb)
                assert ifb_index is not None
                ipr.link("set", index=ifb_index, state="up", ifalias=veth)
                _htb(ipr, ifb_index, limits.egress)
                ipr.tc("add", "ingress", index, INGRESS)
                ipr.tc("add-filter", "u32", index, parent=INGRESS, protocol=ETH_P_ALL, prio=1,
                       target=CLASS, keys=["0x0/0x0+0"],
                       action={"kind": "mirred", "direction": "egress", "action": "redirect",
                               "ifindex": ifb_index})
        except Exception as e:
            try:
                _clear(ipr, index, ifb)
            except Exception as undo:
                log.warning("%s: cannot take back the half-applied limits: %s", veth, undo)
            raise NetworkError(f"cannot limit traffic of {veth}: {e}") from e
    if limits.ingress:
        log.debug("%s: htb root qdisc %s, class %s at %d bit/s (limits.ingress)", veth,
                  _handle(ROOT), _handle(CLASS), limits.ingress)
    if limits.egress:
        log.debug("%s: ingress qdisc with a u32 filter redirecting to ifb %s, whose htb "
                  "runs at %d bit/s (limits.egress)", veth, ifb, limits.egress)
    if not limits:
        log.debug("%s: no traffic limits", veth)


def clear(veth: str, ifb: str | None = None) -> None:
    """Remove every limit of ``veth`` and its ifb (idempotent; the veth may be gone)."""
    with iproute() as ipr:
        _clear(ipr, _index(ipr, veth), ifb or ifb_name(veth))
    log.debug("%s: traffic limits cleared", veth)


def drop_ifb(ifb: str) -> None:
    """Delete ``ifb`` alone (idempotent): a nic's stop when its veth is gone, or is not the
    instance's, whose qdiscs are then not lxdlib's to remove."""
    with iproute() as ipr:
        _clear(ipr, None, ifb)


def _orphaned(ifb: str) -> bool:
    """Whether ``ifb`` exists and the veth named in its alias does not."""
    try:
        with open(f"/sys/class/net/{ifb}/ifalias") as f:
            veth = f.read().strip()
    except OSError:
        return False
    return bool(veth) and not exists(veth)


def collect_orphan(ifb: str) -> bool:
    """``collect_orphans`` for one nic's ifb (``ifb_for``): two sysfs reads, however many links
    the host has. A nic's render and its instance's deletion call this; listing
    ``/sys/class/net`` for every render cost ~0.5 ms with 1,000 instances' veths there."""
    if not _orphaned(ifb):
        return False
    _delete_links([ifb])
    return True


def collect_orphans() -> list[str]:
    """Delete every lxdlib ifb whose veth is gone; return their names (``lxdlib recover``).

    An ifb outlives its veth when nothing ran ``clear`` at the stop (limits added to a running
    instance whose liblxc config had no post-stop hook yet, or a killed monitor). Each ifb
    carries its veth's name as its alias, so orphans are found with a few sysfs reads, after
    one listing of the host's links.
    """
    try:
        names = [n for n in os.listdir("/sys/class/net") if n.startswith(IFB_PREFIX)]
    except FileNotFoundError:
        return []
    orphans = [name for name in names if _orphaned(name)]
    _delete_links(orphans)
    return orphans


def _delete_links(orphans: list[str]) -> None:
    if orphans:
        with iproute() as ipr:
            for name in orphans:
                index = _index(ipr, name)
                if index is not None:
                    _quiet(ipr.link, "del", index=index)
                    log.debug("orphan ifb %s deleted (its veth is gone)", name)


def _class_rate(ipr: Any, index: int | None) -> int | None:
    if index is None:
        return None
    for msg in ipr.get_classes(index=index):
        if msg.get_attr("TCA_KIND") != "htb" or msg["handle"] != CLASS:
            continue
        options = msg.get_attr("TCA_OPTIONS")
        parms = options.get_attr("TCA_HTB_PARMS") if options is not None else None
        if parms:
            return int(parms["rate"]) * 8
    return None


def read(veth: str, ifb: str | None = None) -> Limits:
    """The limits in force on ``veth`` as the kernel reports them (bit/s)."""
    with iproute() as ipr:
        ingress = _class_rate(ipr, _index(ipr, veth))
        egress = _class_rate(ipr, _index(ipr, ifb or ifb_name(veth)))
    return Limits(ingress, egress)
