"""Bad text refused where it enters, before anything is written.

A lone surrogate is what Python makes of a command-line word (or a file name) whose bytes are
not UTF-8 (``surrogateescape``); a caller of the API may pass one too. No record, liblxc
config or name on disk can hold it: each validator refuses it with a typed error, and the
record encoder and the liblxc config's text are the last stops for any value none looked
at (before, each was a ``UnicodeEncodeError`` traceback). An IPv6 address with a zone
(``fd00::5%x``, which Python's ``ipaddress`` takes and LXD refuses) was kept in a nic and put
in the nic filter's nft rule, which then failed to load at every start. A unix device's
major or minor past Linux's 12 and 20 bits failed every start in its hook."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lxdlib import render
from lxdlib.config import names, schema
from lxdlib.config.devices import validate_device
from lxdlib.config.text import check_description, has_control, is_utf8
from lxdlib.errors import InvalidArgument, InvalidConfig
from lxdlib.network.manager import validate_config as network_config
from lxdlib.state import encode_record
from lxdlib.storage.pools import validate_pool_name
from lxdlib.volumes import validate_config as volume_config

BAD = "\udcff"  # b"\xff" as Python reads it from a command line


def test_is_utf8() -> None:
    assert is_utf8("") and is_utf8("abc") and is_utf8("\u00e9t\u00e9 \U0001f600")
    assert not is_utf8(BAD) and not is_utf8("a\ud800b")
    assert has_control(f"p{BAD}") and not has_control("\u00e9t\u00e9")


CASES: list[tuple[str, Callable[[], Any], type[Exception]]] = [
    ("user value", lambda: schema.validate_key("user.x", f"a{BAD}"), InvalidConfig),
    ("environment value", lambda: schema.validate_key("environment.A", BAD), InvalidConfig),
    ("environment name", lambda: schema.validate_key(f"environment.A{BAD}", "1"), InvalidConfig),
    ("raw.lxc", lambda: schema.validate_key("raw.lxc", f"lxc.environment = {BAD}"),
     InvalidConfig),
    ("limits.memory", lambda: schema.validate_key("limits.memory", f"1{BAD}"), InvalidConfig),
    ("server user key", lambda: schema.validate_server_config({"user.x": BAD}), InvalidConfig),
    ("disk path", lambda: validate_device("d", {"type": "disk", "source": "/tmp",
                                                "path": f"/m{BAD}"}), InvalidConfig),
    ("device user key", lambda: validate_device("d", {"type": "none", "user.x": BAD}),
     InvalidConfig),
    ("proxy listen", lambda: validate_device("d", {"type": "proxy",
                                                   "listen": f"unix:/run/{BAD}",
                                                   "connect": "tcp:127.0.0.1:80"}),
     InvalidConfig),
    ("unix-char path", lambda: validate_device("d", {"type": "unix-char", "path": f"/dev/{BAD}",
                                                     "major": "1", "minor": "3"}),
     InvalidConfig),
    ("profile name", lambda: names.validate_profile_name(f"p{BAD}"), InvalidArgument),
    ("snapshot name", lambda: names.validate_snapshot_name(f"s{BAD}"), InvalidArgument),
    ("alias name", lambda: names.validate_alias_name(f"a{BAD}"), InvalidArgument),
    ("pool name", lambda: validate_pool_name(f"p{BAD}"), InvalidArgument),
    ("description", lambda: check_description(f"d{BAD}"), InvalidArgument),
    ("network config", lambda: network_config({"user.x": BAD}), InvalidConfig),
    ("volume config", lambda: volume_config({"user.x": BAD}), InvalidConfig),
    ("a record", lambda: encode_record({"config": {"user.x": BAD}}), InvalidArgument),
    ("a liblxc config line", lambda: render.to_text([("lxc.environment", f"A={BAD}")]),
     InvalidConfig),
]


@pytest.mark.parametrize(("what", "call", "error"), CASES, ids=[c[0] for c in CASES])
def test_a_lone_surrogate_is_a_typed_error(what: str, call: Callable[[], Any],
                                           error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_text_beyond_ascii_is_still_accepted(tmp_path: Path) -> None:
    schema.validate_key("user.x", "\u00e9t\u00e9 \U0001f600")
    validate_device("d", {"type": "disk", "source": "/tmp", "path": "/caf\u00e9"})
    check_description("caf\u00e9")
    assert encode_record({"a": "\u00e9"}).decode() == '{\n  "a": "\u00e9"\n}'
    assert "A=\u00e9" in render.to_text([("lxc.environment", "A=\u00e9")])


@pytest.mark.parametrize(("check", "value"), [
    (lambda v: validate_device("e", {"type": "nic", "nictype": "bridged", "parent": "br0",
                                     "ipv6.address": v}), "fd00::5%x"),
    (lambda v: validate_device("e", {"type": "nic", "nictype": "bridged", "parent": "br0",
                                     "ipv6.address": v, "security.ipv6_filtering": "true"}),
     "fd00::5%eth0"),
    (lambda v: validate_device("p", {"type": "proxy", "listen": f"tcp:[{v}]:80",
                                     "connect": "tcp:127.0.0.1:80"}), "fd00::1%x"),
    (lambda v: validate_device("p", {"type": "proxy", "listen": "tcp:[::1]:80",
                                     "connect": f"tcp:[{v}]:80", "nat": "true"}), "::1%lo"),
    (lambda v: network_config({"ipv6.address": v}), "fd00:1::1%x/64"),
])
def test_an_ipv6_zone_is_refused(check: Callable[[str], Any], value: str) -> None:
    with pytest.raises(InvalidConfig, match="zone"):
        check(value)
    check(value.split("%")[0] + ("/64" if value.endswith("/64") else ""))


@pytest.mark.parametrize(("key", "good", "bad"), [("major", "4095", "4096"),
                                                  ("minor", "1048575", "1048576")])
def test_a_device_number_linux_cannot_make_is_refused(key: str, good: str, bad: str) -> None:
    """LXD's uint32 took ``major=4294967295``; the node could not be made and the start
    failed in its hook with an ``OverflowError`` (Linux: 12 bits of major, 20 of minor)."""
    dev = {"type": "unix-char", "path": "/dev/x", "major": "1", "minor": "3"}
    validate_device("u", {**dev, key: good})
    with pytest.raises(InvalidConfig, match="device number"):
        validate_device("u", {**dev, key: bad})
    with pytest.raises(InvalidConfig, match="device number"):
        validate_device("u", {**dev, key: "4294967295"})
