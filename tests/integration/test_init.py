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
