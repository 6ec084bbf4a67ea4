"""`lxdlib init --auto` and `--preseed` on fresh roots, and first-use initialisation."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lxdlib

pytestmark = pytest.mark.root


def cli(root: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", *args],
                       capture_output=True, text=True, input=input, timeout=180,
                       env={"LXDLIB_ROOT": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0, (args, r.stderr)
    return r


def _cleanup(root: Path) -> None:
    host = lxdlib.Host(root)
    for inst in host.instances.list():
        inst.delete(force=True)
    for net in host.networks.list():
        host.ctx.networks.delete(net.name)  # the driver's: the default profile still names it


def test_init_auto_then_launch_gets_an_address(root: Path, busybox_tarball: Path) -> None:
    # the default bridge name is global on the host: use a unique one through preseed-like
    # defaults would hide the --auto path, so run --auto only when lxdbr0 is free
    if Path("/sys/class/net/lxdbr0").exists():
        pytest.skip("a bridge named lxdbr0 already exists on this host")
    try:
        cli(root, "init", "--auto", "--storage-create-loop", "1GiB")
        host = lxdlib.Host(root)
        assert host.pool_names() == ["default"]
        assert host.pool("default").describe()["driver"] == "btrfs"
        assert [n["name"] for n in host.networks.list()] == ["lxdbr0"]
        prof = host.profiles.get("default")
        assert prof.devices["eth0"]["network"] == "lxdbr0"
        assert prof.devices["root"] == {"type": "disk", "path": "/", "pool": "default"}
        cli(root, "image", "import", str(busybox_tarball), "--alias", "busybox")
        cli(root, "launch", "busybox", "web")
        web = host.instances["web"]
        assert web.wait_for(lambda: bool(web.addresses()), timeout=20)
        assert "web" in cli(root, "list", "-c", "n4", "-f", "csv").stdout
    finally:
        _cleanup(root)


def test_init_preseed(root: Path, busybox_tarball: Path) -> None:
    br = f"lxp{secrets.token_hex(3)}"
    preseed = {
        "config": {"images.remote_cache_expiry": "5"},
        "storage_pools": [{"name": "main", "driver": "btrfs", "config": {"size": "1GiB"}},
                          {"name": "plain", "driver": "dir"}],
        "networks": [{"name": br, "type": "bridge",
                      "config": {"ipv4.address": "auto", "ipv6.address": "none"}}],
        "profiles": [{"name": "default", "devices": {
            "root": {"type": "disk", "path": "/", "pool": "main"},
            "eth0": {"type": "nic", "name": "eth0", "network": br}}},
                     {"name": "small", "config": {"limits.memory": "64MiB"}}],
    }
    try:
        cli(root, "init", "--preseed", input=yaml.safe_dump(preseed))
        host = lxdlib.Host(root)
        assert sorted(host.pool_names()) == ["main", "plain"]
        assert host.config["images.remote_cache_expiry"] == "5"
        assert host.profiles.get("small").config == {"limits.memory": "64MiB"}
        host.images.import_file(busybox_tarball, aliases=["busybox"])
        c = host.launch("busybox", "c1", profiles=["default", "small"])
        assert c.record().pool == "main"
        assert c.wait_for(lambda: bool(c.addresses()), timeout=20)
        bad = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(root),
                              "init", "--preseed"], input="clusters: []\n", capture_output=True,
                             text=True)
        assert bad.returncode == 1 and "unknown preseed keys" in bad.stderr
    finally:
        _cleanup(root)


def test_first_use_initialises_a_fresh_root(root: Path, busybox_tarball: Path) -> None:
    host = lxdlib.Host(root)
    host.images.import_file(busybox_tarball, aliases=["busybox"])
    # no profile, pool or network yet: creating needs the default profile, so init happens
    if Path("/sys/class/net/lxdbr0").exists():
        pytest.skip("a bridge named lxdbr0 already exists on this host")
    try:
        c = host.launch("busybox", "c1")  # needs the default profile: init --auto happens first
        assert c.state == "RUNNING"
        assert host.profiles.names() == ["default"] and host.pool_names() == ["default"]
        assert [n["name"] for n in host.networks.list()] == ["lxdbr0"]
        assert c.wait_for(lambda: bool(c.addresses()), timeout=20)
    finally:
        _cleanup(root)


def _preseed(root: Path, doc: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), "init",
                           "--preseed"], capture_output=True, text=True, input=doc, timeout=180)


def _made(root: Path) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    host = lxdlib.Host(root)
    return (host.pool_names(), [n["name"] for n in host.networks.list()],
            host.profiles.names(), host.config)


def _bridge_traces(br: str) -> list[str]:
    """What a bridge leaves on the host: its link, its nft table, a dnsmasq serving it."""
    found = []
    if Path(f"/sys/class/net/{br}").exists():
        found.append("link")
    if subprocess.run(["nft", "list", "table", "inet", f"lxdlib_{br}"],
                      capture_output=True).returncode == 0:
        found.append("nft table")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dnsmasq") and any(br.encode() in a for a in argv):
            found.append("dnsmasq")
    return found


@pytest.mark.parametrize("doc", [
    "storage_pools: 5\n", "networks: 5\n", "profiles: [5]\n", "config: [1]\n",
    "profiles: [{name: x, config: [1]}]\n", "profiles: [{name: x, devices: [1]}]\n",
    "profiles: [{name: x, devices: {d: [1]}}]\n", "networks: [{config: {}}]\n",
    "storage_pools: [{name: p, driver: dir, config: {user.x: [1]}}]\n", ": : :\n\t- x",
    # a bad item late in the document: the pool and bridge before it are not made either
    "storage_pools: [{name: p, driver: dir}]\n"
    "networks: [{name: BR, config: {ipv4.address: none, ipv6.address: none}}]\n"
    "profiles: [{name: x, config: {limits.memory: abc}}]\n",
])
def test_preseed_of_a_wrong_shape_or_value_is_refused_and_makes_nothing(
        root: Path, doc: str) -> None:
    br = f"lxq{secrets.token_hex(3)}"
    lxdlib.Host(root)
    before = _made(root)
    try:
        r = _preseed(root, doc.replace("BR", br))
        assert r.returncode == 1 and r.stderr.startswith("Error: "), r.stderr
        assert "Traceback" not in r.stderr, r.stderr
        assert _made(root) == before
        assert _bridge_traces(br) == []
    finally:
        _cleanup(root)
        subprocess.run(["ip", "link", "del", br], capture_output=True)


def test_preseed_nested_too_deep_or_alias_bombed_is_refused(root: Path) -> None:
    """200 KB of nested ``[`` ended the command in a RecursionError traceback (libyaml's C
    composer, past its stack, kills the process): refused as other YAML from elsewhere is
    (``state.load_yaml``). Aliases that name 10**9 strings are refused too, and quickly."""
    lxdlib.Host(root)
    before = _made(root)
    bomb = "config:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  {b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True))
    try:
        r = _preseed(root, "config: " + "[" * 100_000 + "]" * 100_000)
        assert r.returncode == 1 and r.stderr.startswith("Error: invalid preseed YAML"), \
            r.stderr[-300:]
        r = _preseed(root, bomb)
        assert r.returncode == 1 and r.stderr.startswith("Error: "), r.stderr[-300:]
        assert "Traceback" not in r.stderr
        assert _made(root) == before
    finally:
        _cleanup(root)


def test_preseed_failing_while_making_undoes_what_it_made(root: Path) -> None:
    """The second bridge's subnet is the first one's: refused only when it is made, after the
    pool, the first bridge (link, nft table, dnsmasq) and the server key; all are undone."""
    from tests.integration.network_fixtures import free_subnet
    br1, br2 = f"lxq{secrets.token_hex(3)}", f"lxq{secrets.token_hex(3)}"
    net = str(free_subnet())
    doc = {"config": {"images.remote_cache_expiry": "5"},
           "storage_pools": [{"name": "p", "driver": "dir"}],
           "networks": [{"name": br1, "config": {"ipv4.address": net, "ipv6.address": "none"}},
                        {"name": br2, "config": {"ipv4.address": net, "ipv6.address": "none"}}],
           "profiles": [{"name": "x", "config": {"limits.memory": "64MiB"}}]}
    lxdlib.Host(root)
    before = _made(root)
    try:
        r = _preseed(root, yaml.safe_dump(doc))
        assert r.returncode == 1 and "used by another network" in r.stderr, r.stderr
        assert _made(root) == before
        assert _bridge_traces(br1) == [] and _bridge_traces(br2) == []
        assert not (root / "storage-pools" / "p").exists()
    finally:
        _cleanup(root)
        for br in (br1, br2):
            subprocess.run(["ip", "link", "del", br], capture_output=True)
            subprocess.run(["nft", "delete", "table", "inet", f"lxdlib_{br}"],
                           capture_output=True)
