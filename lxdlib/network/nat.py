"""nftables for managed networks: one ``inet`` table per network, replaced as a whole.

(The per-nic filters of ``security.*_filtering`` live in a ``bridge`` table of the same name, see
`lxdlib.network.filtering`; `delete` removes both.)

Each network owns the table ``lxdlib_<network>``. The table is rendered from a `TableSpec` (a list
of chains, each a hook declaration plus rules) and loaded with ``nft -f -`` in one transaction that
creates, flushes by deletion and re-creates it, so a reader never sees half a rule set and a
re-apply is idempotent. Later features (proxy devices in NAT mode) add chains to the spec instead
of touching the table from the side.

`table_exists` asks the kernel directly over netlink (no ``nft`` process): it runs on every
instance start, where a fork+exec of ``nft`` would cost more than everything else together.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from ..errors import NetworkError, ToolMissing
from ..logs import get_logger
from ..values import Value, assign

log = get_logger(__name__)

TABLE_PREFIX = "lxdlib_"
FAMILY = "inet"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def table_name(network: str) -> str:
    return f"{TABLE_PREFIX}{network}"


class Chain(Value, frozen=True):
    """A base chain: ``type <kind> hook <hook> priority <priority>`` and its rules, in order."""

    _fields = ("name", "kind", "hook", "priority", "rules")
    __slots__ = _fields

    name: str
    kind: str  # "nat" | "filter"
    hook: str  # "postrouting" | "prerouting" | "forward" | "input" | "output"
    priority: int
    rules: tuple[str, ...]

    def __init__(self, name: str, kind: str, hook: str, priority: int,
                 rules: tuple[str, ...] = ()) -> None:
        assign(self, "name", name)
        assign(self, "kind", kind)
        assign(self, "hook", hook)
        assign(self, "priority", priority)
        assign(self, "rules", rules)


class TableSpec(Value, frozen=True):
    """An nftables table lxdlib owns: its name and base chains."""

    _fields = ("name", "chains")
    __slots__ = _fields

    name: str
    chains: tuple[Chain, ...]

    def __init__(self, name: str, chains: tuple[Chain, ...] = ()) -> None:
        assign(self, "name", name)
        assign(self, "chains", chains)


def _quote(ifname: str) -> str:
    # Network names are limited to [A-Za-z0-9_.-] before they get here; quoting keeps nft from
    # reading a name like "ip" as a keyword.
    return f'"{ifname}"'


def bridge_table(network: str, bridge: str, *, nat4: IPNetwork | None = None,
                 nat6: IPNetwork | None = None) -> TableSpec:
    """The table of a managed bridge: forward accept for its traffic, masquerade when NAT is on.

    Masquerade only rewrites packets that leave the subnet: traffic between instances on the
    bridge and replies to the host keep their source address.
    """
    fwd = Chain("filter_fwd", "filter", "forward", 0, (
        f"iifname {_quote(bridge)} accept",
        f"oifname {_quote(bridge)} accept",
    ))
    chains = [fwd]
    masq: list[str] = []
    if nat4 is not None:
        masq.append(f"ip saddr {nat4} ip daddr != {nat4} masquerade")
    if nat6 is not None:
        masq.append(f"ip6 saddr {nat6} ip6 daddr != {nat6} masquerade")
    if masq:
        chains.append(Chain("nat_post", "nat", "postrouting", 100, tuple(masq)))
    return TableSpec(table_name(network), tuple(chains))


def render(spec: TableSpec) -> str:
    """The ``nft -f`` script that replaces the table atomically (create-if-missing, delete, add)."""
    lines = [
        f"table {FAMILY} {spec.name} {{}}",
        f"delete table {FAMILY} {spec.name}",
        f"table {FAMILY} {spec.name} {{",
    ]
    for chain in spec.chains:
        lines.append(f"\tchain {chain.name} {{")
        lines.append(f"\t\ttype {chain.kind} hook {chain.hook} priority {chain.priority}; "
                     "policy accept;")
        lines.extend(f"\t\t{rule}" for rule in chain.rules)
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def load(script: str) -> None:
    """Run an ``nft -f`` script (one kernel transaction: all of it or nothing)."""
    _nft(script)
    log.debug("nft script loaded:\n%s", script)


def _nft(script: str) -> None:
    # here: ``subprocess`` and ``shutil`` cost a command ~2 ms to import, and a start or a
    # listing that only asks the kernel (``table_exists``, netlink) runs no nft
    import shutil
    import subprocess
    exe = shutil.which("nft")
    if exe is None:
        raise ToolMissing("nft (Debian package nftables) is needed for managed networks")
    proc = subprocess.run([exe, "-f", "-"], input=script.encode(), capture_output=True,
                          check=False)
    if proc.returncode != 0:
        raise NetworkError(f"nft failed: {proc.stderr.decode(errors='replace').strip()}")


def apply(spec: TableSpec) -> None:
    """Load the table, replacing any previous version in one transaction."""
    _nft(render(spec))
    log.debug("nft table %s %s loaded (chains: %s)", FAMILY, spec.name,
              ", ".join(c.name for c in spec.chains) or "none")


def delete(network: str) -> None:
    """Remove the network's tables (``inet``, and the ``bridge`` one of nic filters that
    `lxdlib.network.filtering` keeps under the same name); a missing table is fine."""
    name = table_name(network)
    for family in (FAMILY, "bridge"):
        if table_exists(name, family):
            _nft(f"table {family} {name} {{}}\ndelete table {family} {name}\n")
            log.debug("nft table %s %s deleted", family, name)



# -- kernel query over NETLINK_NETFILTER -------------------------------------------------------
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_NEWTABLE = 0
_NFT_MSG_GETTABLE = 1
_NFTA_TABLE_NAME = 1
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 0x2
_NFPROTO_INET = 1
_NFPROTO_BRIDGE = 7
_FAMILIES = {"inet": _NFPROTO_INET, "bridge": _NFPROTO_BRIDGE}
_NLA_HDR = struct.Struct("=HH")
_NLMSG_HDR = struct.Struct("=IHHII")


def _gettable_request(name: str, seq: int, family: int = _NFPROTO_INET) -> bytes:
    value = name.encode() + b"\0"
    attr = _NLA_HDR.pack(_NLA_HDR.size + len(value), _NFTA_TABLE_NAME) + value
    attr += b"\0" * (-len(attr) % 4)
    nfgen = struct.pack("=BBH", family, 0, 0)
    body = nfgen + attr
    msg_type = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETTABLE
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), msg_type, _NLM_F_REQUEST | _NLM_F_ACK,
                           seq, 0) + body


def table_exists(name: str, family: str = FAMILY) -> bool:
    """Whether the table ``name`` (``inet`` or ``bridge``) exists, asked of the kernel in one
    netlink round trip."""
    seq = int.from_bytes(os.urandom(4), "little") or 1
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        sock.send(_gettable_request(name, seq, _FAMILIES[family]))
        found = False
        while True:
            data = sock.recv(65536)
            off = 0
            while off + _NLMSG_HDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _NLMSG_HDR.unpack_from(data, off)
                if length < _NLMSG_HDR.size:
                    raise NetworkError("malformed netlink reply while looking up nft table")
                if mseq == seq:
                    if mtype == (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_NEWTABLE:
                        found = True
                    elif mtype == _NLMSG_ERROR:
                        (err,) = struct.unpack_from("=i", data, off + _NLMSG_HDR.size)
                        if err == 0:
                            return found
                        if -err == errno.ENOENT:
                            return False
                        raise NetworkError(f"looking up nft table {name}: {os.strerror(-err)}")
                off += (length + 3) & ~3
