"""kill -9 during create/update/delete: afterwards the network is either fully there or fully
gone once the next call (or cleanup_leftovers) has run, and nothing of it is left on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.network_fixtures import (
    NetEnv,
    dnsmasq_pid,
    free_subnet,
    link_exists,
    netenv_for,
    nft_table_exists,
    pid_alive,
    run,
    wait_dead,
)

pytestmark = pytest.mark.root


@pytest.fixture
def netenv(tmp_path: Path) -> Iterator[NetEnv]:
    yield from netenv_for(tmp_path)


CHILD = """
import sys
from lxdlib.network import NetworkManager
from lxdlib.state import Paths
m = NetworkManager(Paths.at(sys.argv[1]))
op, name = sys.argv[2], sys.argv[3]
if op == "create":
    m.create(name, {"ipv4.address": sys.argv[4]})
elif op == "update":
    m.update(name, {"ipv4.address": sys.argv[4], "ipv4.nat": "true"})
else:
    m.delete(name)
"""


def _processes_of(root: Path) -> list[int]:
    """Live processes whose command line names ``root`` (dnsmasq started for it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(root).encode() in cmd and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _kill_after(env: NetEnv, delay: float, *args: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(env.root), *args])
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # A dnsmasq that the child was starting finishes its start-up on its own; let it write its
    # pid file so the recovery below can find it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = [p for p in _processes_of(env.root)
                   if not any(str(p) == f.read_text().strip()
                              for f in env.root.rglob("dnsmasq.pid"))]
        if not pending:
            break
        time.sleep(0.02)


def _assert_consistent(env: NetEnv, name: str) -> None:
    """Recover, then check the network is either complete or completely gone."""
    env.manager.cleanup_leftovers()
    if any(r["name"] == name for r in env.manager.list()):
        env.manager.ensure_up(name)
        assert link_exists(name)
        assert nft_table_exists(f"lxdlib_{name}")
        assert dnsmasq_pid(env.paths, name) is not None
    else:
        assert not link_exists(name)
        assert not nft_table_exists(f"lxdlib_{name}")
        assert not (env.paths.run / "networks" / name).exists()
        for pid in _processes_of(env.root):
            assert wait_dead(pid), f"process {pid} of a removed network still runs"


@pytest.mark.parametrize("delay", [0.1, 0.18, 0.22, 0.26, 0.3, 0.4, 0.6])
def test_kill_during_create_update_delete(netenv: NetEnv, delay: float) -> None:
    name = netenv.bridge_name()
    netenv.root.mkdir(parents=True, exist_ok=True)

    _kill_after(netenv, delay, "create", name, str(free_subnet()))
    _assert_consistent(netenv, name)
    if not any(r["name"] == name for r in netenv.manager.list()):
        netenv.manager.create(name, {"ipv4.address": str(free_subnet())})

    old = netenv.manager.get(name)["config"]["ipv4.address"]
    new = str(free_subnet())
    _kill_after(netenv, delay, "update", name, new)
    _assert_consistent(netenv, name)
    now = netenv.manager.get(name)["config"]["ipv4.address"]
    assert now in (old, new)
    live = run("ip", "-j", "-4", "addr", "show", "dev", name).stdout
    assert now.split("/")[0] in live and (old == now or old.split("/")[0] not in live)

    _kill_after(netenv, delay, "delete", name)
    _assert_consistent(netenv, name)
    if any(r["name"] == name for r in netenv.manager.list()):
        netenv.manager.delete(name)
    _assert_consistent(netenv, name)
    assert not link_exists(name)
    assert not os.path.exists(netenv.paths.networks / f"{name}.yaml")


def test_recover_finishes_a_network_set_killed_after_its_record(netenv: NetEnv) -> None:
    """A ``network set`` killed once the record is written and before the bridge is changed:
    the record says the new subnet, the host serves the old one; ``lxdlib recover`` (no
    listing looks at the host) brings the bridge, its NAT and its dnsmasq to the record."""
    name = netenv.bridge_name()
    netenv.root.mkdir(parents=True, exist_ok=True)
    old, new = str(free_subnet()), str(free_subnet())
    netenv.manager.create(name, {"ipv4.address": old})

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                               str(netenv.root), *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120)
    r = cli("network", "set", name, f"ipv4.address={new}", LXDLIB_CRASHPOINT="network.recorded")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert netenv.manager.get(name)["config"]["ipv4.address"] == new
    assert old.split("/")[0] in run("ip", "-j", "-4", "addr", "show", "dev", name).stdout
    r = cli("recover")
    assert r.returncode == 0 and f"network:{name}" in r.stdout, r.stdout + r.stderr
    live = run("ip", "-j", "-4", "addr", "show", "dev", name).stdout
    assert new.split("/")[0] in live and old.split("/")[0] not in live
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None
    assert f"--listen-address={new.split('/')[0]}".encode() in \
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert "Nothing to recover" in cli("recover").stdout


RENAME_CHILD = """
import os, signal, sys
import lxdlib
from lxdlib.network import manager
root, old, new, when = sys.argv[1:5]
if when == "new-bridge":  # killed while the bridge is made under its new name
    apply = manager.NetworkManager._apply
    def killing_apply(self, name, *args, **kwargs):
        if name == new:
            os.kill(os.getpid(), signal.SIGKILL)
        return apply(self, name, *args, **kwargs)
    manager.NetworkManager._apply = killing_apply
lxdlib.Host(root).networks.rename(old, new)
"""


@pytest.mark.parametrize("point", [
    "network.withdrawn", "network.rename.intent", "network.rename.down",
    "network.rename.moved", "network.rename.recorded", "new-bridge", "network.rename.up",
    "network.rename.settled"])
@pytest.mark.parametrize("then", ["list", "info-new", "show-old"])
def test_a_rename_killed_at_any_point_leaves_one_network_up(
        netenv: NetEnv, point: str, then: str) -> None:
    """A ``network rename`` killed part-way: the next call about the network (a listing,
    ``info`` of the new name, ``show`` of the old) finishes or undoes it, and whichever name
    stands has its bridge, NAT table and dnsmasq up; the other name has nothing. Before, a
    kill after the old bridge went left the network down until an instance on it started."""
    old, new = netenv.bridge_name(), netenv.bridge_name()
    netenv.root.mkdir(parents=True, exist_ok=True)
    netenv.manager.create(old, {"ipv4.address": str(free_subnet())})
    env = {**os.environ}
    if point.startswith("network."):
        env["LXDLIB_CRASHPOINT"] = point
    child = subprocess.run([sys.executable, "-c", RENAME_CHILD, str(netenv.root), old, new,
                            point], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                               str(netenv.root), *args], capture_output=True, text=True,
                              timeout=120)
    r = {"list": lambda: cli("network", "list", "-f", "csv"),
         "info-new": lambda: cli("network", "info", new),
         "show-old": lambda: cli("network", "show", old)}[then]()
    # what that one call left, looked at without lxdlib (whose look-ups settle too)
    files = sorted(os.listdir(netenv.paths.networks))
    if (point, then) in (("network.withdrawn", "info-new"), ("network.rename.settled", "show-old")):
        # the record of the name that stands left withdrawn, which no call here looked up:
        # the first look-up of it puts it back (as after a killed delete)
        assert len(files) == 1 and files[0].startswith(".") and files[0].endswith(".away")
        stands = files[0][1:-len(".away")]
    else:
        assert files in ([f"{old}.yaml"], [f"{new}.yaml"]), files
        stands = files[0][:-len(".yaml")]
    gone = new if stands == old else old
    if then != "list":
        asked = new if then == "info-new" else old
        assert (r.returncode == 0) == (asked == stands), r.stdout + r.stderr
    assert link_exists(stands) and nft_table_exists(f"lxdlib_{stands}")
    assert dnsmasq_pid(netenv.paths, stands) is not None
    assert not link_exists(gone) and not nft_table_exists(f"lxdlib_{gone}")
    assert not (netenv.paths.run / "networks" / gone).exists()
    assert [rec["name"] for rec in netenv.manager.list()] == [stands]
    assert netenv.manager.info(stands)["state"] == "up"
