"""The `lxdlib` command against real containers: the seed article's instance commands, one-line
errors with non-zero exit codes, formats."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lxdlib
from lxdlib import runtime

pytestmark = pytest.mark.root


def run(host: lxdlib.Host, *args: str, input: str | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def test_seed_instance_commands(host: lxdlib.Host) -> None:
    run(host, "launch", "busybox", "alpine-test")
    run(host, "init", "busybox", "second")
    out = run(host, "list").stdout
    assert "| alpine-test | RUNNING |" in out and "| second      | STOPPED |" in out
    fast = run(host, "list", "--fast").stdout.splitlines()[1]
    assert all(h in fast for h in ("NAME", "STATE", "ARCHITECTURE", "CREATED AT", "PROFILES",
                                   "TYPE"))
    # the times are formatted where a column shows them (and only there)
    times = [line.split(",") for line in
             run(host, "list", "-c", "ncl", "-f", "csv").stdout.splitlines()]
    stamp = r"\d{4}/\d\d/\d\d \d\d:\d\d UTC"
    assert [r[0] for r in times] == ["alpine-test", "second"]
    assert all(re.fullmatch(stamp, r[1]) for r in times), times
    assert re.fullmatch(stamp, times[0][2]), times  # started: a last use
    info = run(host, "info", "alpine-test").stdout
    assert "Name: alpine-test" in info and "Status: RUNNING" in info and "PID:" in info
    assert run(host, "exec", "alpine-test", "--", "sh", "-c", "echo hi; exit 3",
               check=False).returncode == 3
    r = run(host, "exec", "alpine-test", "sh", "-c", "cat", input="piped")
    assert r.stdout == "piped"
    run(host, "stop", "alpine-test", "--force")
    run(host, "start", "alpine-test")
    run(host, "restart", "alpine-test", "--force")
    run(host, "pause", "alpine-test")
    assert "FROZEN" in run(host, "list", "alpine-test", "-c", "ns", "-f", "csv").stdout
    run(host, "start", "alpine-test")
    # the columns read from liblxc and the cgroup: PID, processes, memory, CPU time
    row = run(host, "list", "alpine-test", "-c", "npNmu", "-f", "csv").stdout.strip().split(",")
    assert row[0] == "alpine-test" and int(row[1]) > 1 and int(row[2]) >= 1, row
    assert row[3].endswith("B") and row[4].endswith("s"), row
    run(host, "config", "set", "alpine-test", "limits.memory", "256MB")
    assert run(host, "config", "get", "alpine-test", "limits.memory").stdout.strip() == "256MB"
    shown = yaml.safe_load(run(host, "config", "show", "alpine-test").stdout)
    assert shown["config"]["limits.memory"] == "256MB" and shown["profiles"] == ["default"]
    expanded = yaml.safe_load(run(host, "config", "show", "--expanded", "alpine-test").stdout)
    assert expanded["devices"]["root"]["path"] == "/"
    run(host, "snapshot", "alpine-test")
    run(host, "snapshot", "alpine-test", "named")
    run(host, "restore", "alpine-test", "snap0")
    run(host, "move", "alpine-test/named", "alpine-test/renamed")
    assert "renamed" in run(host, "info", "alpine-test").stdout
    run(host, "delete", "alpine-test/renamed")
    data = json.loads(run(host, "list", "--format", "json").stdout)
    assert {d["name"] for d in data} == {"alpine-test", "second"}
    r = run(host, "delete", "alpine-test", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    run(host, "delete", "alpine-test", "--force")
    run(host, "move", "second", "third")
    run(host, "delete", "third")
    assert json.loads(run(host, "list", "-f", "json").stdout) == []


def test_config_edit_from_stdin(host: lxdlib.Host) -> None:
    run(host, "init", "busybox", "c1")
    doc = yaml.safe_load(run(host, "config", "show", "c1").stdout)
    doc["config"]["user.note"] = "edited"
    run(host, "config", "edit", "c1", input=yaml.safe_dump(doc))
    assert host.instances["c1"].config["user.note"] == "edited"
    bad = dict(doc)
    bad["config"] = {**doc["config"], "environment.X": "a\nlxc.init.cmd=/bin/evil"}
    r = run(host, "config", "edit", "c1", input=yaml.safe_dump(bad), check=False)
    assert r.returncode == 1 and "Error:" in r.stderr
    assert "environment.X" not in host.instances["c1"].config


def test_user_errors_are_one_line(host: lxdlib.Host) -> None:
    for args in (["start", "nope"], ["launch", "busybox", "bad_name"],
                 ["launch", "no-such-image", "c1"], ["config", "set", "x", "k", "v"],
                 ["launch", "busybox", "c2", "-c", "limits.memory=lots"]):
        r = run(host, *args, check=False)
        assert r.returncode == 1, args
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), (args, r.stderr)
    assert run(host, "launch", check=False).returncode == 1  # usage error: 1, as lxc


def test_image_and_storage_commands(host: lxdlib.Host, tmp_path: Path) -> None:
    out = run(host, "image", "list").stdout
    assert "busybox" in out
    fp = host.images.get("busybox").fingerprint
    run(host, "image", "alias", "create", "bb", fp[:12])
    assert "bb" in run(host, "image", "alias", "list").stdout
    assert f"Fingerprint: {fp}" in run(host, "image", "info", "bb").stdout
    exported = tmp_path / "exp"
    exported.mkdir()
    run(host, "image", "export", "busybox", str(exported))
    files = list(exported.iterdir())
    assert len(files) == 1
    assert files[0].read_bytes() == host.images.store.tarball_path(fp).read_bytes()
    run(host, "image", "delete", "busybox")
    r = run(host, "image", "import", str(files[0]), "--alias", "again")
    assert fp in r.stdout
    pools = run(host, "storage", "list").stdout
    assert "| default |" in pools and "btrfs" in pools
    info = yaml.safe_load(run(host, "storage", "info", "default").stdout)
    assert info["info"]["driver"] == "btrfs"
    run(host, "storage", "create", "extra", "dir")
    assert run(host, "storage", "delete", "default", check=False).returncode == 1  # profile uses it
    run(host, "launch", "again", "onextra", "-s", "extra")
    assert host.instances["onextra"].record().pool == "extra"
    assert run(host, "storage", "delete", "extra", check=False).returncode == 1
    run(host, "delete", "onextra", "--force")
    run(host, "storage", "delete", "extra")


def test_launch_options(host: lxdlib.Host) -> None:
    host.profiles.create("extra", {"user.from": "extra"}, {})
    run(host, "launch", "busybox", "c1", "-p", "default", "-p", "extra", "-c", "user.x=1",
        "-d", "root,size=64MiB")
    c = host.instances["c1"]
    assert c.profiles == ["default", "extra"]
    assert c.expanded_config["user.from"] == "extra" and c.config["user.x"] == "1"
    assert c.devices["root"]["size"] == "64MiB"
    r = run(host, "exec", "c1", "--env", "A=b", "--cwd", "/tmp", "--", "sh", "-c", "echo $A; pwd")
    assert r.stdout.split() == ["b", "/tmp"]


def test_info_of_a_running_instance_loads_no_liblxc(host: lxdlib.Host) -> None:
    """``info`` takes a running instance's state and pid from the kernel (its payload cgroup,
    whose init's parent is its monitor), as a listing does: what liblxc says, without loading
    liblxc. A frozen one shows FROZEN; a stopped one is asked of liblxc."""
    c = host.launch("busybox", "kinfo")
    code = ("import json, sys\nfrom lxdlib.cli.main import main\nrc = main(sys.argv[1:])\n"
            "print(json.dumps(['_lxc' in sys.modules, 'subprocess' in sys.modules, rc]))")

    def info() -> tuple[str, list[object]]:
        r = subprocess.run([sys.executable, "-c", code, "--root", str(host.paths.root), "info",
                            "kinfo"], capture_output=True, text=True, timeout=60, check=True)
        text, _, last = r.stdout.rstrip("\n").rpartition("\n")
        return text, json.loads(last)
    text, loaded = info()
    liblxc = runtime.open_container(host.paths.lxcpath, "kinfo")
    pid = liblxc.init_pid
    assert "Status: RUNNING" in text and f"PID: {pid}" in text and "Processes:" in text
    assert loaded == [False, False, 0]
    assert (c.state, c.pid) == (liblxc.state, pid) == ("RUNNING", pid)  # the API's view too
    c.pause()
    text, loaded = info()
    assert "Status: FROZEN" in text and f"PID: {pid}" in text and loaded[0] is False
    assert (c.state, c.pid) == (liblxc.state, pid) == ("FROZEN", pid)
    c.resume()
    c.stop(force=True)
    text, loaded = info()
    assert "Status: STOPPED" in text and "PID:" not in text and loaded == [True, False, 0]
    assert (c.state, c.pid) == (liblxc.state, liblxc.init_pid) == ("STOPPED", -1)
    del liblxc
    c.delete()


def test_info_shows_host_root_mapping(host: lxdlib.Host) -> None:
    """Issue 10 case 8: an id map that includes host id 0 (raw.idmap, privileged) is kept, as
    in LXD, but ``info`` and the API say plainly that the container's root is host root."""
    run(host, "init", "busybox", "plain")
    run(host, "init", "busybox", "rooted", "-c", "raw.idmap=both 0 0")
    run(host, "init", "busybox", "priv", "-c", "security.privileged=true")
    run(host, "init", "busybox", "other", "-c", "raw.idmap=uid 0 1000")  # host 0 -> ns 1000
    assert "host root" not in run(host, "info", "plain").stdout
    assert not host.instances["plain"].maps_host_root
    assert host.instances["plain"].info()["maps_host_root"] is False

    out = run(host, "info", "rooted").stdout
    assert "Maps host root: YES" in out
    assert "container uid 0 is host uid 0 (raw.idmap)" in out
    assert "container gid 0 is host gid 0 (raw.idmap)" in out
    assert host.instances["rooted"].maps_host_root
    assert "security.privileged=true" in run(host, "info", "priv").stdout
    assert host.instances["priv"].maps_host_root
    assert "container uid 1000 is host uid 0" in run(host, "info", "other").stdout
    run(host, "init", "busybox", "based", "-c", "security.idmap.base=0")
    assert "container uid 0 is host uid 0 (the instance's id map)" in \
        run(host, "info", "based").stdout

    # a running instance is judged by the map its init really has
    c = host.instances["rooted"]
    c.start()
    assert c.exec(["cat", "/proc/self/uid_map"]).text.split()[:3] == ["0", "0", "1"]
    info = c.info()
    assert info["maps_host_root"] and "pid" in info
    assert "container uid 0 is host uid 0 (raw.idmap)" in info["host_root_mapping"]
    assert "Maps host root: YES" in run(host, "info", "rooted").stdout

    # a map changed while running takes effect at the next start: info says so beforehand
    p = host.instances["plain"]
    p.start()
    run(host, "config", "set", "plain", "raw.idmap", "both 0 0")
    out = run(host, "info", "plain").stdout
    assert "Maps host root: YES from its next start" in out
    assert "from its next start: container uid 0 is host uid 0 (raw.idmap)" in out


# runs the command in a fresh interpreter, then prints the modules it imported (after its output)
_MODULES = """
import json, sys
from lxdlib.cli import main as m
try:
    rc = m.main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print("\\n" + json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""
# what a verb on an existing instance imports only when it uses it: the image store and its
# tarballs, the remotes, other hosts' code (HTTP, TLS, ssh, migration), and the drivers of
# pools it does not touch (the instance is on btrfs)
NOT_FOR_AN_INSTANCE_VERB = {"lxdlib.storage.zfs",
    "lxdlib.images", "lxdlib.imagestore.store", "lxdlib.imagestore.remotes",
    "lxdlib.imagestore.tarball", "lxdlib.imagestore.busybox", "lxdlib.imagestore.simplestreams",
    "tarfile", "ssl", "http.client", "urllib.request", "lxdlib.migrate", "lxdlib.sshhost",
    "lxdlib.wire", "lxdlib.sendstream", "lxdlib.serve", "lxdlib.launcher", "lxdlib.backup",
    # nor attrs with inspect: lxdlib's value classes are ``lxdlib.values.Value`` classes
    "attr", "attrs", "inspect"}


# what neither ``exec`` nor ``config set`` of a running instance uses (imported where used):
# subprocess (with selectors, locale and signal), threading, the profile service, CRIU's and the
# snapshot, copy and recovery modules (their journal recoverers load when an intent needs them)
NOT_FOR_EXEC_OR_CONFIG_SET = {"subprocess", "selectors", "locale", "signal", "threading",
                              "lxdlib.profile_apply", "lxdlib.criu", "lxdlib.snapshots",
                              "lxdlib.copy", "lxdlib.recovery", "lxdlib.progress"}


_ENTRY = """
import atexit, json, sys
atexit.register(lambda: print("\\n" + json.dumps(sorted(sys.modules))))
from lxdlib.cli.main import main
sys.argv[0] = "lxdlib"
sys.exit(main())
"""


def test_the_command_skips_what_only_a_long_lived_process_needs(host: lxdlib.Host) -> None:
    """Run as the process's own command (``main()``: the process exits after the verb),
    ``exec`` leaves liblxc's leaked pidfd to the exit and ``config set`` writes its files
    anew rather than through the spare (the exchange needs ctypes): neither loads ctypes, nor
    shutil (with bz2 and lzma); each still does its work. Called with ``argv`` (a caller that
    goes on), the library does both, as a long-lived process needs."""
    run(host, "launch", "busybox", "imp")
    for argv in (["exec", "imp", "--", "true"], ["config", "set", "imp", "limits.memory",
                                                 "300MB"]):
        r = subprocess.run([sys.executable, "-c", _ENTRY, "--root", str(host.paths.root),
                            *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (argv, r.stderr)
        mods = set(json.loads(r.stdout.splitlines()[-1]))
        assert "_lxc" in mods and not mods & {"ctypes", "shutil", "bz2", "lzma"}, argv
        # nor what neither verb uses (the config's render names the hook command only)
        assert not mods & NOT_FOR_EXEC_OR_CONFIG_SET, (argv, mods & NOT_FOR_EXEC_OR_CONFIG_SET)
    inst = host.instances["imp"]
    assert inst.config["limits.memory"] == "300MB"
    limit = runtime.cgroup_get(inst.handle(), "memory.limit_in_bytes" if
                               runtime.cgroup_version() == 1 else "memory.max")
    assert abs(int(limit or 0) - 300 * 10**6) < 4096  # applied live (to the page)
    from lxdlib import state
    from lxdlib.cli.main import main
    assert main(["--root", str(host.paths.root), "exec", "imp", "--", "true"]) == 0
    assert state.SHORT_LIVED is False


def test_verbs_on_an_instance_import_no_image_or_remote_code(host: lxdlib.Host) -> None:
    """The unit tests pin the imports up to an instance's lookup; here the verbs do their
    work on a real instance (its pool opened, liblxc asked), still without the image store."""
    run(host, "launch", "busybox", "imp")
    for argv in (["info", "imp"], ["exec", "imp", "--", "true"],
                 ["config", "set", "imp", "limits.memory", "256MB"], ["snapshot", "imp"],
                 ["stop", "imp", "--force"], ["copy", "imp", "impc", "--instance-only"],
                 ["start", "imp"]):
        r = subprocess.run([sys.executable, "-c", _MODULES, "--root", str(host.paths.root),
                            *argv], capture_output=True, text=True, timeout=120)
        out = json.loads(r.stdout.splitlines()[-1])
        assert out["rc"] == 0, (argv, r.stderr)
        mods = set(out["modules"])
        # it asked liblxc; info and snapshot read a running instance's state from the kernel
        assert ("_lxc" in mods) is (argv[0] not in ("info", "snapshot")), argv
        assert not mods & NOT_FOR_AN_INSTANCE_VERB, (argv, mods & NOT_FOR_AN_INSTANCE_VERB)
        if argv[0] == "info":  # it reads the namespace in a thread, and renders no config
            assert not mods & {"subprocess", "signal", "lxdlib.profile_apply", "lxdlib.render",
                               "lxdlib.criu", "lxdlib.snapshots", "lxdlib.copy"}, mods
        if argv[0] in ("info", "exec"):  # nor do they check keys or devices: they write none
            assert not mods & {"lxdlib.config.schema", "lxdlib.config.devices"}, argv
        # what only some of the work needs, each ~1-4 ms of a command's start: OpenSSL's
        # digests and ``uuid`` (with ``platform``) for names and identities (lxdlib.config.ids),
        # the nic driver with tc and netlink sockets where there is no nic, ``shutil`` where no
        # tree is removed and no tool looked for, the stream tools where a copy is a clone
        unused = {"hashlib", "_hashlib", "uuid", "platform", "lxdlib.devices.nic",
                  "lxdlib.network.tc", "socket", "shutil", "bz2", "lzma", "tempfile"}
        if argv[0] != "start":  # a start runs lxc-start
            unused |= {"subprocess"}
        assert not mods & unused, (argv, mods & unused)
    # and each did its work
    inst = host.instances["imp"]
    assert inst.state == "RUNNING" and inst.config["limits.memory"] == "256MB"
    assert inst.snapshots.names() == ["snap0"]
    assert host.instances["impc"].config["volatile.uuid"] != inst.config["volatile.uuid"]


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_that_goes_away_ends_the_command_quietly(host: lxdlib.Host,
                                                          buffered: bool) -> None:
    """``lxdlib list | head -1``: a closed pipe ends the command as it ends ``lxc`` (SIGPIPE's
    status, 141 in a shell), without a traceback, and without a second error when Python
    flushes its stdout on the way out; whether stdout is buffered (a pipe's default: the
    write fails at the end) or not (``PYTHONUNBUFFERED``: it fails in the verb)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    r, w = os.pipe()
    os.close(r)  # every write gets EPIPE (Python ignores SIGPIPE)
    try:
        p = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                            str(host.paths.root), "list"], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=60, env=env)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (141, "")
