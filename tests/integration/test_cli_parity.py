"""The `lxdlib` command behaving as LXD 5.0's `lxc` where issue 13 found it did not: edit round
trips and empty edits, masking `none` devices in `show --expanded`, a URL import of a stored
image, an import beside its original, exec's messages for 127/126, `list --format json`'s
shape and `info`'s order, and the address columns without link-local addresses."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import lxdlib
from tests.integration.simplestreams_fixtures import ImageFactory, serving

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

# api.InstanceFull's keys in LXD 5.0's order, and api.InstanceState's
INSTANCE_KEYS = ["architecture", "config", "devices", "ephemeral", "profiles", "stateful",
                 "description", "created_at", "expanded_config", "expanded_devices", "name",
                 "status", "status_code", "last_used_at", "location", "type", "project",
                 "backups", "state", "snapshots"]
STATE_KEYS = ["status", "status_code", "disk", "memory", "network", "pid", "processes", "cpu"]
NIC_KEYS = ["addresses", "counters", "hwaddr", "host_name", "mtu", "state", "type"]
SNAPSHOT_KEYS = ["expires_at", "architecture", "config", "created_at", "devices", "ephemeral",
                 "expanded_config", "expanded_devices", "last_used_at", "name", "profiles",
                 "stateful", "size"]


def run(host: lxdlib.Host, *args: str, input: str | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def name(prefix: str) -> str:
    """Container and bridge names are global on the machine: each test makes its own."""
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture
def net(host: lxdlib.Host) -> Iterator[str]:
    """A managed bridge without NAT or IPv6 on the host side (the root's teardown removes
    it with the root's other networks)."""
    bridge = name("lxp")
    host.networks.create(bridge, {"ipv4.address": "auto", "ipv4.nat": "false",
                                  "ipv6.address": "none"})
    yield bridge


def test_edits_take_their_own_show_and_refuse_empty_input(host: lxdlib.Host, net: str) -> None:
    c = name("pe")
    run(host, "init", "busybox", c, "-c", "user.keep=yes")
    run(host, "storage", "volume", "create", "default", "vol1", "user.k=v")
    fp = host.images["busybox"].fingerprint
    pairs = [(["config", "show", c], ["config", "edit", c]),
             (["profile", "show", "default"], ["profile", "edit", "default"]),
             (["image", "show", "busybox"], ["image", "edit", fp[:12]]),
             (["network", "show", net], ["network", "edit", net]),
             (["storage", "show", "default"], ["storage", "edit", "default"]),
             (["storage", "volume", "show", "default", "vol1"],
              ["storage", "volume", "edit", "default", "vol1"])]
    for show, edit in pairs:
        before = run(host, *show).stdout
        run(host, *edit, input=before)  # its own output, read-only fields and all
        assert yaml.safe_load(run(host, *show).stdout) == yaml.safe_load(before), show
        for empty in ("", "\n", "# nothing here\n"):
            r = run(host, *edit, input=empty, check=False)
            assert r.returncode == 1 and r.stderr.startswith("Error: ") and "empty" in r.stderr
            assert "Traceback" not in r.stderr
        assert run(host, *show).stdout == before, f"{edit} changed something on empty input"
    assert host.instances[c].config["user.keep"] == "yes"
    # the editable fields of each still change through the same round trip
    shown = yaml.safe_load(run(host, "image", "show", "busybox").stdout)
    shown["public"] = True
    shown["properties"]["note"] = "edited"
    run(host, "image", "edit", "busybox", input=yaml.safe_dump(shown))
    assert host.images["busybox"].public and host.images["busybox"].properties["note"] == "edited"
    shown["fingerprnt"] = "typo"
    r = run(host, "image", "edit", "busybox", input=yaml.safe_dump(shown), check=False)
    assert r.returncode == 1 and "fingerprnt" in r.stderr
    vol = yaml.safe_load(run(host, "storage", "volume", "show", "default", "vol1").stdout)
    vol["config"]["user.k"] = "w"
    vol["description"] = "data"
    run(host, "storage", "volume", "edit", "default", "vol1", input=yaml.safe_dump(vol))
    now = host.volumes.store.get("default", "vol1")
    assert now["config"]["user.k"] == "w" and now["description"] == "data"
    pool = yaml.safe_load(run(host, "storage", "show", "default").stdout)
    pool["description"] = "the pool"
    run(host, "storage", "edit", "default", input=yaml.safe_dump(pool))
    assert host.pools["default"].description == "the pool"
    pool["config"] = {**pool["config"], "source": "/srv/elsewhere"}
    r = run(host, "storage", "edit", "default", input=yaml.safe_dump(pool), check=False)
    assert (r.returncode, r.stderr) == (  # where a pool's data is kept cannot change
        1, "Error: Pool source cannot be changed when not in pending state\n")
    netshow = yaml.safe_load(run(host, "network", "show", net).stdout)
    netshow["description"] = "bridge"
    run(host, "network", "edit", net, input=yaml.safe_dump(netshow))
    assert host.networks.get(net).description == "bridge"


def test_show_expanded_keeps_a_masking_none_device(host: lxdlib.Host, tmp_path: Path) -> None:
    c = name("pn")
    src = tmp_path / "shared"
    src.mkdir()
    (src / "marker").write_text("x")
    run(host, "profile", "create", "withdisk")
    run(host, "profile", "device", "add", "withdisk", "data", "disk", f"source={src}",
        "path=/mnt/data")
    run(host, "init", "busybox", c, "-p", "default", "-p", "withdisk")
    run(host, "config", "device", "add", c, "data", "none")
    shown = yaml.safe_load(run(host, "config", "show", "--expanded", c).stdout)
    assert shown["devices"]["data"] == {"type": "none"}  # LXD shows what masks the profile's
    assert list(shown["devices"]) == sorted(shown["devices"])
    assert yaml.safe_load(run(host, "config", "device", "show", c, "--expanded").stdout)[
        "data"] == {"type": "none"}
    listed = json.loads(run(host, "list", c, "-f", "json").stdout)[0]
    assert listed["expanded_devices"]["data"] == {"type": "none"}
    # the runtime still skips it: nothing is mounted there
    run(host, "start", c)
    assert run(host, "exec", c, "--", "test", "-e", "/mnt/data/marker",
               check=False).returncode == 1
    assert "data" not in host.instances[c].expanded_devices


def test_url_import_of_a_stored_image_adds_the_alias(host: lxdlib.Host, busybox_tarball: Path,
                                                     tmp_path: Path) -> None:
    served = tmp_path / "srv"
    served.mkdir()
    data = busybox_tarball.read_bytes()
    fp = hashlib.sha256(data).hexdigest()
    assert host.images["busybox"].fingerprint == fp
    (served / "bb.tar.gz").write_bytes(data)
    with serving(served) as srv:
        r = run(host, "image", "import", f"{srv.url}/bb.tar.gz", "--alias", "again")
        assert fp in r.stdout
        run(host, "image", "import", f"{srv.url}/bb.tar.gz", "--alias", "again")  # twice: fine
        srv.lxd_image = ("bb.tar.gz", fp)
        before = srv.hits["/bb.tar.gz"]
        run(host, "image", "import", f"{srv.url}/lxd", "--alias", "viaheader")
        assert srv.hits["/bb.tar.gz"] == before  # announced hash already stored: no download
        other = ImageFactory(busybox_tarball, tmp_path).build(
            "20240101", kinds=("unified",), marker="other").unified
        assert other is not None
        (tmp_path / "other.tar.gz").write_bytes(other)
        run(host, "image", "import", str(tmp_path / "other.tar.gz"), "--alias", "taken")
        r = run(host, "image", "import", f"{srv.url}/bb.tar.gz", "--alias", "new1",
                "--alias", "taken", check=False)
        assert r.returncode == 1 and "taken" in r.stderr
    aliases = host.images.store.aliases()
    assert aliases["again"]["target"] == aliases["viaheader"]["target"] == fp
    assert "new1" not in aliases  # nothing added when one alias is refused
    assert len(host.images) == 2
    # a file import of a stored image is refused, as LXD refuses it
    r = run(host, "image", "import", str(busybox_tarball), "--alias", "fromfile", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert "fromfile" not in host.images.store.aliases()


def test_import_beside_the_original_gets_its_own_macs(host: lxdlib.Host, net: str,
                                                      tmp_path: Path) -> None:
    a, b = name("pa"), name("pb")
    run(host, "init", "busybox", a)
    run(host, "config", "device", "add", a, "eth0", "nic", f"network={net}", "name=eth0")
    run(host, "start", a)
    run(host, "snapshot", a, "s0")
    mac = host.instances[a].config["volatile.eth0.hwaddr"]
    uuid = host.instances[a].config["volatile.uuid"]
    backup = tmp_path / "a.tar.gz"
    run(host, "export", a, str(backup))
    run(host, "import", str(backup), b)
    cfg = host.instances[b].config
    assert cfg["volatile.eth0.hwaddr"] != mac
    assert cfg["volatile.uuid"] == uuid  # LXD keeps the uuid on import
    snap = host.instances[b].record().snapshots[0]
    assert snap.config["volatile.eth0.hwaddr"] == cfg["volatile.eth0.hwaddr"]
    run(host, "start", b)  # beside the running original
    assert host.instances[a].status == host.instances[b].status == "Running"
    # a restore (the original's name free again) keeps the MAC it had
    run(host, "delete", "-f", a)
    run(host, "import", str(backup))
    assert host.instances[a].config["volatile.eth0.hwaddr"] == mac


def test_exec_says_command_not_found_and_not_executable(host: lxdlib.Host) -> None:
    c = name("px")
    run(host, "launch", "busybox", c)
    r = run(host, "exec", c, "--", "bash", check=False)
    assert (r.returncode, r.stderr) == (127, "Error: Command not found\n")
    r = run(host, "exec", c, "--", "/etc/hostname", check=False)
    assert (r.returncode, r.stderr) == (126, "Error: Command not executable\n")
    r = run(host, "exec", c, "--", "sh", "-c", "echo out; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "")
    # the API keeps its result: no exception, the exit code
    assert host.instances[c].exec(["bash"]).returncode == 127


def test_exec_passes_the_callers_term_as_lxc_does(host: lxdlib.Host) -> None:
    """lxc sends its own TERM with every exec (piped too); --env overrides it; none without."""
    c = name("pt")
    run(host, "launch", "busybox", c)
    cli = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), "exec", c]

    def term(env: dict[str, str], *opts: str) -> str:
        r = subprocess.run([*cli, *opts, "--", "env"], capture_output=True, text=True,
                           env=env, timeout=60, check=True)
        return "".join(line for line in r.stdout.splitlines() if line.startswith("TERM="))

    without = {k: v for k, v in os.environ.items() if k != "TERM"}
    assert term({**without, "TERM": "vt100"}) == "TERM=vt100"
    assert term({**without, "TERM": "vt100"}, "--env", "TERM=dumb") == "TERM=dumb"
    assert term(without) == ""


def test_list_json_has_lxds_shape_and_info_its_order(host: lxdlib.Host, net: str) -> None:
    up, down = name("pu"), name("pd")
    run(host, "init", "busybox", up)
    run(host, "config", "device", "add", up, "eth0", "nic", f"network={net}", "name=eth0")
    run(host, "start", up)
    run(host, "exec", up, "--", "sh", "-c", "dd if=/dev/zero of=/dev/null bs=1M count=20")
    run(host, "init", "busybox", down)
    run(host, "snapshot", down, "first")
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        # as lxc 5.0.2 prints them: Go's nil lists and maps are null in JSON, []/{} in
        # yaml.v2's YAML; Go times are strings in JSON, plain (a YAML timestamp) in YAML
        def nil(empty: object, fmt: str = fmt) -> object:
            return None if fmt == "json" else empty

        def when(v: object) -> str:
            return v.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, dt.datetime) else str(v)
        listed = {d["name"]: d for d in load(run(host, "list", "-f", fmt).stdout)}
        for d in listed.values():
            assert list(d) == INSTANCE_KEYS and list(d["state"]) == STATE_KEYS, fmt
            assert d["project"] == "default" and d["location"] == "none"
            assert d["backups"] == nil([]) and d["stateful"] is False
            assert d["expanded_devices"]["root"]["path"] == "/"
            assert list(d["state"]["memory"]) == ["usage", "usage_peak", "swap_usage",
                                                  "swap_usage_peak"]
            assert list(d["state"]["cpu"]) == ["usage"]
        u, s = listed[up], listed[down]
        assert (u["status"], u["status_code"]) == ("Running", 103)
        assert (s["status"], s["status_code"]) == ("Stopped", 102)
        st = u["state"]
        assert (st["status"], st["status_code"]) == ("Running", 103)
        assert st["pid"] > 1 and st["processes"] >= 1 and st["cpu"]["usage"] > 0
        assert st["memory"]["usage"] > 0 and st["memory"]["usage_peak"] >= 0
        assert all(d["usage"] > 0 for d in st["disk"].values())  # where the pool can say
        assert set(st["network"]) >= {"lo", "eth0"}
        for nic in st["network"].values():
            assert list(nic) == NIC_KEYS
            assert list(nic["counters"])[:4] == ["bytes_received", "bytes_sent",
                                                 "packets_received", "packets_sent"]
            for addr in nic["addresses"]:
                assert list(addr) == ["family", "address", "netmask", "scope"]
        assert st["network"]["eth0"]["hwaddr"] == u["config"]["volatile.eth0.hwaddr"]
        assert st["network"]["eth0"]["host_name"]
        assert s["state"]["network"] == nil({}) and s["state"]["pid"] == 0
        assert s["state"]["memory"]["usage"] == 0 and s["state"]["cpu"]["usage"] == 0
        assert u["snapshots"] == nil([])
        assert [list(x) for x in s["snapshots"]] == [SNAPSHOT_KEYS]
        assert s["snapshots"][0]["name"] == "first"
        assert when(s["last_used_at"]) == "1970-01-01T00:00:00Z"  # never started
        assert when(u["created_at"]).endswith("Z")
    peak = listed[up]["state"]["memory"]["usage_peak"]
    info = run(host, "info", up).stdout.splitlines()
    labels = [x.strip().split(":")[0] for x in info]
    order = ["Resources", "Processes", "Disk usage", "CPU usage", "Memory usage",
             "Memory (current)", "Network usage"]
    if not listed[up]["state"]["disk"]:
        order.remove("Disk usage")
    if peak:  # the kernel keeps it (v1, or v2 with memory.peak)
        order.insert(order.index("Network usage"), "Memory (peak)")
    assert [x for x in labels if x in order] == order, info
    eth0 = info[info.index("    eth0:"):]
    eth0_labels = [x.strip().split(":")[0] for x in eth0[1:11]]
    assert eth0_labels[-5:] == ["Bytes received", "Bytes sent", "Packets received",
                                "Packets sent", "IP addresses"], eth0
    assert any(x.startswith("        inet:  ") for x in eth0)  # inet:  two spaces, inet6: one
    # a stopped instance has no Resources part, as in LXD
    assert "Resources:" not in run(host, "info", down).stdout


def test_ipv6_column_and_api_hide_link_local(host: lxdlib.Host, net: str) -> None:
    c = name("p6")
    run(host, "init", "busybox", c)
    run(host, "config", "device", "add", c, "eth0", "nic", f"network={net}", "name=eth0")
    run(host, "start", c)
    inst = host.instances[c]

    def link_local() -> bool:
        state = inst.network_state().get("eth0", {})
        return any(a["address"].startswith("fe80:") for a in state.get("addresses", ()))
    assert inst.wait_for(link_local, timeout=20), inst.network_state()
    row = run(host, "list", c, "-c", "n6", "-f", "csv").stdout.strip()
    assert row == f"{c}," and inst.addresses("inet6") == []
    run(host, "exec", c, "--", "ip", "-6", "addr", "add", "fd42:7c::5/64", "dev", "eth0")
    deadline = time.monotonic() + 10
    while not inst.addresses("inet6") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inst.addresses("inet6") == ["fd42:7c::5"]
    assert run(host, "list", c, "-c", "n6", "-f", "csv").stdout.strip() == \
        f'{c},fd42:7c::5 (eth0)'
    listing = host.instances.list_state()
    assert listing[c].ipv6 == ["fd42:7c::5"]
    # info, as LXD's, still lists every address with its scope
    assert "(link)" in run(host, "info", c).stdout


def test_an_images_profiles_are_what_a_launch_without_profiles_gets(host: lxdlib.Host) -> None:
    """LXD's image ``profiles``: shown by ``image show``/``info``, changed by ``image edit``,
    given to an instance whose creator names no profile; ``-p`` still overrides them."""
    host.profiles.create("extra", {"user.from": "extra"})
    shown = yaml.safe_load(run(host, "image", "show", "busybox").stdout)
    assert shown["profiles"] == ["default"]
    info = run(host, "image", "info", "busybox").stdout
    assert info.endswith("Profiles:\n    - default\n")
    shown["profiles"] = ["default", "extra"]
    run(host, "image", "edit", "busybox", input=yaml.safe_dump(shown))
    assert host.images["busybox"].profiles == ["default", "extra"]
    assert run(host, "image", "info", "busybox").stdout.endswith(
        "Profiles:\n    - default\n    - extra\n")
    c1, c2, c3 = name("ip"), name("ip"), name("ip")
    run(host, "init", "busybox", c1)
    assert host.instances[c1].profiles == ["default", "extra"]
    assert host.instances[c1].expanded_config["user.from"] == "extra"
    run(host, "init", "busybox", c2, "-p", "default")
    assert host.instances[c2].profiles == ["default"]
    host.create("busybox", c3)  # the API, too
    assert host.instances[c3].profiles == ["default", "extra"]
    # a profile that does not exist is refused, and nothing changes
    shown["profiles"] = ["default", "nope"]
    r = run(host, "image", "edit", "busybox", input=yaml.safe_dump(shown), check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Profile 'nope' doesn't exist\n")  # as lxc
    assert host.images["busybox"].profiles == ["default", "extra"]
    # an empty list is kept as such (no profile at all), a missing one means `default`
    shown["profiles"] = []
    run(host, "image", "edit", "busybox", input=yaml.safe_dump(shown))
    assert host.images["busybox"].profiles == []
    assert run(host, "image", "info", "busybox").stdout.endswith("Profiles: []\n")
    del shown["profiles"]
    run(host, "image", "edit", "busybox", input=yaml.safe_dump(shown))
    assert host.images["busybox"].profiles == ["default"]


def test_a_running_nic_names_its_host_veth_in_volatile(host: lxdlib.Host, net: str) -> None:
    """LXD's ``volatile.<nic>.host_name``: the host end of the running instance's veth (on the
    instance's bridge), gone once it stops, and never brought back by a restore."""
    c = name("hn")
    inst = host.launch("busybox", c, devices={"eth0": {"type": "nic", "network": net,
                                                      "name": "eth0"}})
    veth = inst.config["volatile.eth0.host_name"]
    link = subprocess.run(["ip", "-json", "link", "show", "dev", veth], capture_output=True,
                          text=True, check=True)
    assert json.loads(link.stdout)[0]["master"] == net
    shown = yaml.safe_load(run(host, "config", "show", c).stdout)
    assert shown["config"]["volatile.eth0.host_name"] == veth
    inst.snapshots.create("s0")
    inst.stop(force=True)
    assert "volatile.eth0.host_name" not in host.instances[c].config
    inst.snapshots.restore("s0")
    assert "volatile.eth0.host_name" not in host.instances[c].config
    inst.start()
    assert host.instances[c].config["volatile.eth0.host_name"] == veth
