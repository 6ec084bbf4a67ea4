"""`lxdlib` says and takes what LXD 5.0's `lxc` does (issue 13), against real roots: the new
words (rename, version, alias, operation, project, warning), `-c`/`--format` on the lists, the
messages of mutating verbs, the progress line on a terminal, `image build busybox NAME`, and a
fresh root beside another root's `lxdbr0`."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import lxdlib
from tests.cleanup import teardown_root

pytestmark = pytest.mark.root


def run(root: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        tty_stderr: bool = False, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The command on ``root`` (``input``: its stdin); with ``tty_stderr`` its stderr is a
    terminal (a pty), as when a user runs it, and what it wrote there is returned as
    ``stderr``."""
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), *args]
    full_env = {**os.environ, **(env or {})}
    if not tty_stderr:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env,
                           **({"input": input} if input is not None
                              else {"stdin": subprocess.DEVNULL}))
    else:
        master, slave = pty.openpty()
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, text=True,
                               timeout=300, env=full_env, stdin=subprocess.DEVNULL)
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    got = os.read(master, 65536)
                except OSError:  # EIO: the pty is drained and closed
                    break
                if not got:
                    break
                chunks.append(got)
        finally:
            if slave != -1:
                os.close(slave)
            os.close(master)
        r = subprocess.CompletedProcess(cmd, p.returncode, p.stdout,
                                        b"".join(chunks).decode(errors="replace"))
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# -- the new words --------------------------------------------------------------------------------

def test_rename_version_project_operation_warning(host: lxdlib.Host) -> None:
    root = host.paths.root
    run(root, "init", "busybox", "c1")
    run(root, "snapshot", "c1", "s0")
    assert run(root, "rename", "c1", "c2").stdout == ""
    assert rows(run(root, "list", "-c", "n", "-f", "csv").stdout) == [["c2"]]
    run(root, "rename", "c2/s0", "c2/s1")
    assert [s.name for s in host.instances["c2"].snapshots] == ["s1"]
    r = run(root, "rename", "nope", "x", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ")
    r = run(root, "rename", "c2", "images:c3", check=False)
    assert r.returncode == 1 and "Can't specify a different remote for rename" in r.stderr

    out = run(root, "version").stdout.splitlines()
    assert out[0].startswith("Client version: ") and out[1].startswith("Server version: ")
    assert run(root, "version", "images:").stdout.splitlines()[1] == \
        "Server version: unreachable"

    table = run(root, "project", "list").stdout
    assert " NAME " in table and "STORAGE VOLUMES" in table and "default (current)" in table
    p = yaml.safe_load(run(root, "project", "show", "default").stdout)
    assert p["name"] == "default" and p["description"] == "Default LXD project"
    assert "/1.0/instances/c2" in p["used_by"] and "/1.0/profiles/default" in p["used_by"]
    assert p["config"]["features.images"] == "true"
    listed = rows(run(root, "project", "list", "-f", "csv").stdout)
    assert listed == [["default (current)", "YES", "YES", "YES", "YES", "Default LXD project",
                       str(len(p["used_by"]))]]
    r = run(root, "project", "show", "other", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Project not found\n")
    # info: what the instances' limits and root disks ask for, in LXD's units and shapes
    run(root, "init", "busybox", "pi1", "-c", "limits.memory=64MiB", "-c", "limits.cpu=1",
        "-c", "limits.processes=100")
    usage = {r[0]: r[1:] for r in rows(run(root, "project", "info", "default", "-f",
                                           "csv").stdout)}
    instances = len(host.instances.names())
    assert usage["CONTAINERS"] == usage["INSTANCES"] == ["UNLIMITED", str(instances)]
    assert usage["MEMORY"] == ["UNLIMITED", "64.00MiB"] and usage["CPU"][1] == "1"
    assert usage["PROCESSES"][1] == "100" and usage["VIRTUAL-MACHINES"][1] == "0"
    assert list(usage) == ["CONTAINERS", "CPU", "DISK", "INSTANCES", "MEMORY", "NETWORKS",
                           "PROCESSES", "VIRTUAL-MACHINES"]
    as_json = json.loads(run(root, "project", "info", "default", "-f", "json").stdout)
    assert as_json["resources"]["memory"] == {"Limit": -1, "Usage": 64 << 20}
    as_yaml = yaml.safe_load(run(root, "project", "info", "default", "-f", "yaml").stdout)
    assert as_yaml["resources"]["processes"] == {"limit": -1, "usage": 100}
    for verb in ("create", "delete", "set", "rename"):
        r = run(root, "project", verb, "p2", check=False)
        assert r.returncode == 1 and "one project" in r.stderr, verb

    assert json.loads(run(root, "operation", "list", "-f", "json").stdout) == []
    assert "| ID | TYPE | DESCRIPTION | STATUS | CANCELABLE | CREATED |" in \
        run(root, "operation", "list").stdout
    r = run(root, "operation", "show", "1234", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Operation not found\n")
    assert yaml.safe_load(run(root, "warning", "list", "-f", "yaml").stdout) == []
    assert "| UUID | TYPE | STATUS | SEVERITY | COUNT | PROJECT | LAST SEEN |" in \
        run(root, "warning", "list").stdout


def test_user_aliases_expand_before_parsing(host: lxdlib.Host, tmp_path: Path) -> None:
    root = host.paths.root
    env = {"LXDLIB_CONF": str(tmp_path / "conf")}
    run(root, "init", "busybox", "c1")
    run(root, "alias", "add", "names", "list -c n -f csv", env=env)
    run(root, "alias", "add", "key", "config get @ARG1@ image.@ARG2@", env=env)
    assert run(root, "names", env=env).stdout == "c1\n"
    assert run(root, "key", "c1", "os", env=env).stdout.strip() == \
        host.instances["c1"].config["image.os"]
    assert rows(run(root, "alias", "list", "-f", "csv", env=env).stdout) == [
        ["key", "config get @ARG1@ image.@ARG2@"], ["names", "list -c n -f csv"]]
    r = run(root, "key", "c1", env=env, check=False)
    assert r.returncode == 1 and "references an argument outside the given number" in r.stderr
    run(root, "alias", "rename", "names", "n", env=env)
    run(root, "alias", "remove", "key", env=env)
    assert yaml.safe_load((tmp_path / "conf" / "config.yml").read_text()) == \
        {"aliases": {"n": "list -c n -f csv"}}


# -- columns and formats --------------------------------------------------------------------------

def test_image_list_columns(host: lxdlib.Host) -> None:
    root = host.paths.root
    fp = host.images.get("busybox").fingerprint
    assert rows(run(root, "image", "list", "-c", "lf", "--format", "csv").stdout) == \
        [["busybox", fp[:12]]]
    assert rows(run(root, "image", "list", "-c", "F,p,t", "-f", "csv").stdout) == \
        [[fp, "no", "CONTAINER"]]
    host.images.store.alias_create("bb", fp, "")
    assert rows(run(root, "image", "list", "-c", "lL", "-f", "csv").stdout) == \
        [["bb (1 more)", "bb\nbusybox"]]
    header = run(root, "image", "list").stdout.splitlines()[1]
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "ALIAS", "FINGERPRINT", "PUBLIC", "DESCRIPTION", "ARCHITECTURE", "TYPE", "SIZE",
        "UPLOAD DATE"]
    size = rows(run(root, "image", "list", "-c", "s", "-f", "csv").stdout)[0][0]
    assert size.endswith("MB") and not size.endswith("MiB")
    # `image info` prints the size as `image list` does (LXD: both 1024², written MB)
    nbytes = json.loads(run(root, "image", "list", "-f", "json").stdout)[0]["size"]
    assert size == f"{nbytes / 1024 / 1024:.2f}MB"
    assert f"\nSize: {size}\n" in run(root, "image", "info", "busybox").stdout
    assert json.loads(run(root, "image", "list", "-c", "l", "-f", "json").stdout)[0][
        "fingerprint"] == fp
    r = run(root, "image", "list", "-c", "lz", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Unknown column shorthand char 'z' in 'lz'\n")


def test_storage_list_has_lxds_columns(host: lxdlib.Host) -> None:
    header = run(host.paths.root, "storage", "list").stdout.splitlines()[1]
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "NAME", "DRIVER", "SOURCE", "DESCRIPTION", "USED BY", "STATE"]
    # SOURCE says where the data is, as LXD's: the loop file of a loop-backed pool
    assert rows(run(host.paths.root, "storage", "list", "-f", "csv").stdout) == [
        ["default", "btrfs", str(host.paths.root / "disks" / "default.img"), "", "1",
         "CREATED"]]


@pytest.mark.parametrize("words", [
    ["profile", "list"], ["storage", "list"], ["storage", "volume", "list", "default"],
    ["remote", "list"], ["image", "alias", "list"], ["image", "list"], ["project", "list"],
    ["operation", "list"], ["warning", "list"], ["alias", "list"], ["network", "list"],
])
def test_every_list_takes_lxds_formats(host: lxdlib.Host, words: list[str],
                                       tmp_path: Path) -> None:
    root = host.paths.root
    env = {"LXDLIB_CONF": str(tmp_path)}
    for fmt in ("table", "compact", "csv"):
        run(root, *words, "--format", fmt, env=env)
    json.loads(run(root, *words, "-f", "json", env=env).stdout)
    yaml.safe_load(run(root, *words, "-f", "yaml", env=env).stdout)
    r = run(root, *words, "-f", "xml", env=env, check=False)
    assert (r.returncode, r.stderr) == (1, 'Error: Invalid format "xml"\n')


def test_instance_list_columns_as_lxd_reads_them(host: lxdlib.Host) -> None:
    root = host.paths.root
    run(root, "init", "busybox", "c1")
    assert rows(run(root, "list", "-c", "n,s", "-f", "csv").stdout) == [["c1", "STOPPED"]]
    r = run(root, "list", "-c", "nq", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Unknown column shorthand char 'q' in 'nq'\n")
    r = run(root, "list", "-f", "xml", check=False)
    assert (r.returncode, r.stderr) == (1, 'Error: Invalid format "xml"\n')


def test_instance_list_every_lxd_column_letter_custom_columns_and_filters(
        host: lxdlib.Host) -> None:
    """`list -c` takes each of LXD's letters and its custom columns (a profile's value shown
    through the expanded config), and the filters read status, type and the expanded config
    with LXD's regular expressions; a lone empty csv cell is an empty line, as lxc's."""
    root = host.paths.root
    run(root, "profile", "create", "mem")
    run(root, "profile", "set", "mem", "limits.memory", "64MiB")
    run(root, "init", "busybox", "c1", "-p", "default", "-p", "mem")
    run(root, "launch", "busybox", "c2", "-p", "default", "-p", "mem")
    fp = host.images["busybox"].fingerprint
    listed = rows(run(root, "list", "-c", "nsfF,config:limits.memory,image.os:OS:2,"
                      "devices:root.pool", "-f", "csv").stdout)
    assert listed == [["c1", "STOPPED", fp[:12], fp, "64MiB", "bu", "default"],
                      ["c2", "RUNNING", fp[:12], fp, "64MiB", "bu", "default"]]
    (c1_m, c1_pct, c1_u, _), (c2_m, c2_pct, c2_u, _) = (
        r[1:] for r in rows(run(root, "list", "-c", "nmMuD", "-f", "csv").stdout))
    assert (c1_m, c1_pct, c1_u) == ("", "", "")
    assert c2_m.endswith("iB") and c2_pct.endswith("%") and c2_u.endswith("s")
    table = run(root, "list", "-c", "n,image.os:OS,user.x::1").stdout.splitlines()
    assert table[1].split("|")[1:4] == [" NAME ", "   OS    ", "  "]
    assert run(root, "list", "-c", "4", "-f", "csv", "c1").stdout == "\n"
    for filters, names in [(["status=running"], ["c2"]), (["STATUS=Stopped"], ["c1"]),
                           (["type=container", "image.os=bus.*"], ["c1", "c2"]),
                           (["limits.memory=64MiB", "c1"], ["c1"]), (["l.m=64.*"], ["c1", "c2"]),
                           (["c."], ["c1", "c2"]), (["image.os=bus"], [])]:
        assert [r[0] for r in rows(run(root, "list", *filters, "-c", "n", "-f",
                                       "csv").stdout)] == names, filters
    for cols, message in [("nL", "Can't specify column L when not clustered"),
                          ("n,nope.key", "Invalid config key 'nope.key' in 'nope.key'")]:
        r = run(root, "list", "-c", cols, check=False)
        assert (r.returncode, r.stderr) == (1, f"Error: {message}\n")
    run(root, "delete", "-f", "c1", "c2")


def test_storage_volume_list_columns(host: lxdlib.Host) -> None:
    root = host.paths.root
    run(root, "storage", "volume", "create", "default", "v1")
    run(root, "init", "busybox", "c1")
    assert rows(run(root, "storage", "volume", "list", "default", "-c", "tn", "-f",
                    "csv").stdout) == [["container", "c1"], ["custom", "v1"]]
    for name, used in rows(run(root, "storage", "volume", "list", "default", "-c", "nU", "-f",
                               "csv").stdout):
        assert used == "" or used.endswith("B"), (name, used)  # btrfs: known with quotas on
    r = run(root, "storage", "volume", "list", "default", "-c", "nL", check=False)
    assert r.returncode == 1 and "Can't specify column L when not clustered" in r.stderr
    run(root, "storage", "volume", "delete", "default", "v1")


def test_storage_volume_list_shows_instance_snapshots(host: lxdlib.Host) -> None:
    """An instance's snapshots are ``container (snapshot)`` volumes ``c1/s1``, beside their
    instance, as in LXD's list; their JSON is LXD's (type ``container``, used by the snapshot)."""
    root = host.paths.root
    run(root, "init", "busybox", "c1")
    run(root, "init", "busybox", "c2")
    run(root, "snapshot", "c1", "s1")
    run(root, "storage", "volume", "create", "default", "v1")
    assert rows(run(root, "storage", "volume", "list", "default", "-c", "tnu", "-f",
                    "csv").stdout) == [["container", "c1", "1"],
                                       ["container (snapshot)", "c1/s1", "1"],
                                       ["container", "c2", "1"], ["custom", "v1", "0"]]
    assert rows(run(root, "storage", "volume", "list", "default", "-c", "nU", "-f",
                    "csv").stdout)[1] == ["c1/s1", ""]  # LXD gives no usage for a snapshot
    snap = next(v for v in json.loads(run(root, "storage", "volume", "list", "default", "-f",
                                          "json").stdout) if v["name"] == "c1/s1")
    assert (snap["type"], snap["used_by"]) == ("container", ["/1.0/instances/c1/snapshots/s1"])
    run(root, "delete", "c1", "c2")
    run(root, "storage", "volume", "delete", "default", "v1")


def test_storage_volume_snapshot_words_and_rows(host: lxdlib.Host) -> None:
    """``storage volume snapshot`` and ``restore`` say nothing, ``delete <vol>/<snap>`` says
    LXD's line; a custom volume's snapshots are ``custom (snapshot)`` rows ``v1/snap0`` used
    by nothing, with no usage (LXD asks no state of a snapshot)."""
    root = host.paths.root
    run(root, "storage", "volume", "create", "default", "v1")
    assert run(root, "storage", "volume", "snapshot", "default", "v1").stdout == ""
    assert run(root, "storage", "volume", "snapshot", "default", "v1", "keep").stdout == ""
    assert run(root, "storage", "volume", "restore", "default", "v1", "snap0").stdout == ""
    assert rows(run(root, "storage", "volume", "list", "default", "-c", "tnuU", "-f",
                    "csv").stdout)[1:] == [["custom (snapshot)", "v1/keep", "0", ""],
                                           ["custom (snapshot)", "v1/snap0", "0", ""]]
    assert run(root, "storage", "volume", "delete", "default", "v1/snap0").stdout == \
        "Storage volume v1/snap0 deleted\n"
    assert run(root, "-q", "storage", "volume", "delete", "default", "v1/keep").stdout == ""
    assert run(root, "storage", "volume", "delete", "default", "v1").stdout == \
        "Storage volume v1 deleted\n"


# -- what mutating verbs say ----------------------------------------------------------------------

def test_mutating_verbs_say_what_lxd_says(host: lxdlib.Host, tmp_path: Path) -> None:
    root = host.paths.root

    def says(*args: str) -> str:
        return run(root, *args).stdout

    assert says("launch", "busybox", "c1") == "Creating c1\nStarting c1\n"
    run(root, "stop", "c1", "--force")
    assert says("profile", "create", "p1") == "Profile p1 created\n"
    assert says("profile", "create", "p2") == "Profile p2 created\n"
    assert says("profile", "add", "c1", "p1") == "Profile p1 added to c1\n"
    assert says("profile", "remove", "c1", "p1") == "Profile p1 removed from c1\n"
    assert says("profile", "assign", "c1", "default,p2") == "Profiles default,p2 applied to c1\n"
    assert says("profile", "apply", "c1", "default") == "Profiles default applied to c1\n"
    assert says("profile", "rename", "p2", "p3") == "Profile p2 renamed to p3\n"
    assert says("profile", "device", "add", "p3", "d1", "disk", "source=/tmp",
                "path=/mnt") == "Device d1 added to p3\n"
    assert says("profile", "device", "remove", "p3", "d1") == "Device d1 removed from p3\n"
    assert says("profile", "delete", "p1") == "Profile p1 deleted\n"
    assert says("config", "device", "add", "c1", "d2", "disk", "source=/tmp",
                "path=/mnt") == "Device d2 added to c1\n"
    assert says("config", "device", "remove", "c1", "d2") == "Device d2 removed from c1\n"
    assert says("config", "device", "override", "c1", "root", "size=1GiB") == \
        "Device root overridden for c1\n"
    assert says("storage", "volume", "create", "default", "v1") == "Storage volume v1 created\n"
    assert says("storage", "volume", "delete", "default", "v1") == "Storage volume v1 deleted\n"
    assert says("storage", "create", "p-dir", "dir") == "Storage pool p-dir created\n"
    assert says("storage", "delete", "p-dir") == "Storage pool p-dir deleted\n"
    assert run(root, "-q", "profile", "create", "p4").stdout == ""
    assert run(root, "-q", "profile", "delete", "p4").stdout == ""

    out = says("publish", "c1", "--alias", "pub")
    assert out.startswith("Instance published with fingerprint: ")
    # lxc prints the fingerprint even with -q (it is the command's result)
    assert run(root, "-q", "publish", "c1", "--alias", "pub2", "--compression",
               "none").stdout.startswith("Instance published with fingerprint: ")
    assert says("image", "export", "pub", str(tmp_path)) == "Image exported successfully!\n"
    assert run(root, "-q", "image", "export", "pub2", str(tmp_path)).stdout == ""
    backup = tmp_path / "c1.tar.gz"
    assert says("export", "c1", str(backup)) == "Backup exported successfully!\n"
    assert says("import", str(backup), "c1-copy") == ""  # lxc import says nothing


def test_network_messages(host: lxdlib.Host) -> None:
    root = host.paths.root
    a, b = f"lxw{secrets.token_hex(3)}", f"lxw{secrets.token_hex(3)}"
    try:
        assert run(root, "network", "create", a).stdout == f"Network {a} created\n"
        assert run(root, "network", "rename", a, b).stdout == f"Network {a} renamed to {b}\n"
        assert run(root, "network", "delete", b).stdout == f"Network {b} deleted\n"
    finally:
        for n in (a, b):
            if n in host.networks:
                host.networks[n].delete()


# -- progress on a terminal -----------------------------------------------------------------------

def test_progress_only_on_a_terminal(host: lxdlib.Host, tmp_path: Path) -> None:
    root = host.paths.root
    run(root, "launch", "busybox", "c1")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(48 * 1024 * 1024))  # random: gzip cannot make the export quick

    r = run(root, "file", "push", str(big), "c1/root/big", tty_stderr=True)
    assert f"Pushing {big} to /root/big: 100% (" in r.stderr, repr(r.stderr)
    assert run(root, "file", "push", str(big), "c1/root/big2").stderr == ""  # piped: nothing
    assert run(root, "-q", "file", "push", str(big), "c1/root/big3",
               tty_stderr=True).stderr == ""

    back = tmp_path / "back"
    r = run(root, "file", "pull", "c1/root/big", str(back), tty_stderr=True)
    assert f"Pulling {back} from /root/big: " in r.stderr and "MB/s)" in r.stderr
    assert back.read_bytes() == big.read_bytes()
    assert run(root, "file", "pull", "c1/root/big", str(back)).stderr == ""
    run(root, "file", "delete", "c1/root/big2", "c1/root/big3")  # one big file is enough below

    backup = tmp_path / "c1.tar.gz"
    r = run(root, "export", "c1", str(backup), tty_stderr=True)
    assert "Backing up instance: " in r.stderr and r.stdout == "Backup exported successfully!\n"
    r = run(root, "import", str(backup), "c1-copy", tty_stderr=True)
    assert "Importing instance: " in r.stderr and "%" in r.stderr, repr(r.stderr)
    assert run(root, "export", "c1", str(tmp_path / "b2.tar.gz")).stderr == ""

    run(root, "stop", "c1", "--force")
    r = run(root, "publish", "c1", "--alias", "pub", "--compression", "none", tty_stderr=True)
    assert "Publishing instance: " in r.stderr
    assert run(root, "image", "export", "pub", str(tmp_path)).stderr == ""


# -- image build NAME -----------------------------------------------------------------------------

def test_image_build_takes_the_alias_as_lxc_users_type_it(host: lxdlib.Host) -> None:
    root = host.paths.root
    out = run(root, "image", "build", "busybox", "bb2").stdout
    assert out.startswith("Image built with fingerprint: ")
    assert host.images.get("bb2").fingerprint == out.split(": ")[1].strip()
    r = run(root, "image", "build", "busybox", "bb3", "--alias", "bb4", check=False)
    assert r.returncode == 1 and "two aliases" in r.stderr


# -- a fresh root beside another root's lxdbr0 ----------------------------------------------------

def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [t for t in (line.split()[4] for line in f)
                if t == str(root) or t.startswith(str(root) + "/")]


def _new_root() -> Path:
    base = Path(tempfile.mkdtemp(prefix="lxdlib-test-", dir="/var/tmp"))
    base.chmod(0o711)
    (base / "root").mkdir()
    return base / "root"


def test_second_root_picks_a_free_default_bridge(root: Path) -> None:
    others = [_new_root(), _new_root()]
    second, third = others
    try:
        run(root, "init", "--auto", "--storage-create-loop", "1GiB")
        first_br = lxdlib.Host(root).profiles.get("default").devices["eth0"]["network"]
        assert Path(f"/sys/class/net/{first_br}").exists()

        # the second root finds the first one's bridge taken: it picks another and says so
        r = run(second, "init", "--auto", "--storage-create-loop", "1GiB")
        h2 = lxdlib.Host(second)
        second_br = h2.profiles.get("default").devices["eth0"]["network"]
        assert second_br != first_br and second_br.startswith("lxdbr")
        assert h2.networks.names() == [second_br]
        if second_br != "lxdbr0":
            assert f"default bridge is {second_br}" in r.stderr, r.stderr

        # a name taken by another root, asked for explicitly: refused before anything is made
        r = run(third, "init", "--auto", "--storage-create-loop", "1GiB", "--network-name",
                first_br, check=False)
        assert r.returncode == 1
        assert "--network-name" in r.stderr and "--preseed" in r.stderr, r.stderr
        h3 = lxdlib.Host(third)
        assert h3.pool_names() == [] and h3.networks.names() == []
        assert _mounts_under(third) == []
        preseed = {"storage_pools": [{"name": "default", "driver": "dir"}],
                   "networks": [{"name": first_br, "type": "bridge"}]}
        r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(third),
                            "init", "--preseed"], input=yaml.safe_dump(preseed), text=True,
                           capture_output=True, timeout=120)
        assert r.returncode == 1 and first_br in r.stderr, r.stderr
        assert lxdlib.Host(third).pool_names() == []

        # a bridge that cannot be made after the pool was: the pool goes again, unmounted
        r = run(third, "init", "--auto", "--storage-create-loop", "1GiB", "--network-name",
                "bad/name", check=False)
        assert r.returncode == 1
        assert lxdlib.Host(third).pool_names() == [] and _mounts_under(third) == []
    finally:
        for r_ in (root, *others):
            h = lxdlib.Host(r_)
            for name in h.networks.names():
                h.ctx.networks.delete(name)  # the driver's: the default profile still names it
        for r_ in others:
            teardown_root(r_)
            subprocess.run(["rm", "-rf", str(r_.parent)], check=False)


def test_config_metadata_and_templates(host: lxdlib.Host) -> None:
    """``config metadata show|edit`` and ``config template list|show|create|edit|delete``: a
    template added to one instance renders at its next start; bad names and metadata a start
    could not use are refused and change nothing; host users cannot read the templates."""
    root = host.paths.root
    run(root, "init", "busybox", "tp1")
    meta = yaml.safe_load(run(root, "config", "metadata", "show", "tp1").stdout)
    assert meta["architecture"] and isinstance(meta.get("templates", {}), dict)
    shipped = rows(run(root, "config", "template", "list", "tp1", "-f", "csv").stdout)
    assert shipped == [[n] for n in host.instances["tp1"].templates.names()]
    run(root, "config", "template", "create", "tp1", "hello.tpl")
    assert rows(run(root, "config", "template", "list", "tp1", "-f", "csv").stdout) == \
        sorted([*shipped, ["hello.tpl"]])
    assert run(root, "config", "template", "show", "tp1", "hello.tpl").stdout == ""
    r = run(root, "config", "template", "create", "tp1", "hello.tpl", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    run(root, "config", "template", "edit", "tp1", "hello.tpl",
        input="hello {{ instance.name }} {{ properties.who }}\n")
    meta.setdefault("templates", {})["/etc/hello"] = {
        "template": "hello.tpl", "when": ["start"], "properties": {"who": "there"}}
    run(root, "config", "metadata", "edit", "tp1", input=yaml.safe_dump(meta))
    before = run(root, "config", "metadata", "show", "tp1").stdout
    for bad in ({"template": "../../etc/shadow", "when": ["start"]},
                {"template": "hello.tpl", "when": ["boot"]},
                {"template": "hello.tpl", "when": ["start"], "create_only": "yes"}):
        wrong = {**meta, "templates": {**meta["templates"], "/etc/x": bad}}
        r = run(root, "config", "metadata", "edit", "tp1", input=yaml.safe_dump(wrong),
                check=False)
        assert r.returncode == 1 and r.stderr.startswith("Error: "), bad
    for bad_name in ("../x", "a/b", "."):
        r = run(root, "config", "template", "create", "tp1", bad_name, check=False)
        assert r.returncode == 1 and "invalid template name" in r.stderr, bad_name
    r = run(root, "config", "template", "edit", "tp1", "hello.tpl", input="", check=False)
    assert r.returncode == 1 and "empty" in r.stderr
    assert run(root, "config", "metadata", "show", "tp1").stdout == before
    assert run(root, "config", "template", "show", "tp1", "hello.tpl").stdout.startswith("hello")
    tdir = host.instances["tp1"].volume / "templates"
    denied = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "cat", str(tdir / "hello.tpl")], capture_output=True)
    assert denied.returncode != 0
    run(root, "start", "tp1")
    out = run(root, "exec", "tp1", "--", "cat", "/etc/hello").stdout
    assert out == "hello tp1 there\n"
    run(root, "config", "template", "delete", "tp1", "hello.tpl")
    assert rows(run(root, "config", "template", "list", "tp1", "-f", "csv").stdout) == shipped
    r = run(root, "config", "template", "show", "tp1", "hello.tpl", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ")
    run(root, "delete", "--force", "tp1")


def test_show_writes_yaml_as_lxd_does(host: lxdlib.Host) -> None:
    """`show` writes yaml.v2's YAML (recorded from LXD 5.0.2: `user.x: "y"`, `description: ""`,
    `volatile.idmap.base: "0"`), `profile show` in LXD's key order; `edit` takes it back."""
    root = host.paths.root
    run(root, "init", "busybox", "c1")
    run(root, "config", "set", "c1", "user.x", "y")
    run(root, "config", "set", "c1", "user.t", "true")
    shown = run(root, "config", "show", "c1").stdout
    for line in ('  user.t: "true"\n', '  user.x: "y"\n', '  volatile.idmap.base: "',
                 'description: ""\n'):
        assert line in shown
    run(root, "config", "edit", "c1", input=shown)
    assert run(root, "config", "show", "c1").stdout == shown
    run(root, "profile", "set", "default", "user.n", "n")
    text = run(root, "profile", "show", "default").stdout
    assert [ln.split(":")[0] for ln in text.splitlines() if not ln.startswith((" ", "-"))] == \
        ["config", "description", "devices", "name", "used_by"]
    assert '  user.n: "n"\n' in text
    run(root, "profile", "edit", "default", input=text)
    assert run(root, "profile", "show", "default").stdout == text
    run(root, "delete", "c1")


def test_gets_lists_and_formats_print_what_lxc_prints(host: lxdlib.Host) -> None:
    """Read off lxc 5.0.2 for the same lines (the trial of issue 13): a `get` of a pool's or a
    volume's key that is not set prints nothing (an instance's or profile's an empty line);
    `--format json` is Go's compact JSON; `list -f yaml` writes a stopped instance's nil lists
    and maps as `[]`/`{}` and Go times plain; `profile list -f yaml|json` is `profile show`'s
    object (API paths in `used_by`)."""
    root = host.paths.root
    host.create("busybox", "c2", config={"user.h": "<a&b>"})
    host.profiles.create("p1", {"user.a": "b"}, {})
    host.volumes.create("default/v1")
    assert run(root, "storage", "get", "default", "user.nothere").stdout == ""
    assert run(root, "storage", "volume", "get", "default", "v1", "size").stdout == ""
    run(root, "storage", "volume", "set", "default", "v1", "user.x", "y")
    assert run(root, "storage", "volume", "get", "default", "v1", "user.x").stdout == "y\n"
    assert run(root, "config", "get", "c2", "user.nothere").stdout == "\n"
    assert run(root, "profile", "get", "p1", "user.nothere").stdout == "\n"

    out = run(root, "list", "c2", "-f", "json").stdout
    assert out.startswith('[{"architecture":"x86_64","config":{"image.architecture":"x86_64",'
                          '"image.description":"busybox 1.35.0 (x86_64)","image.os":"busybox",'
                          '"image.release":"1.35.0","user.h":"\\u003ca\\u0026b\\u003e",'), out
    assert out.endswith('"network":null,"pid":0,"processes":0,"cpu":{"usage":0}},'
                        '"snapshots":null}]\n'), out
    assert json.loads(out)[0]["config"]["user.h"] == "<a&b>"

    lines = run(root, "list", "c2", "-f", "yaml").stdout.splitlines()
    for line in ("  last_used_at: 1970-01-01T00:00:00Z", "  backups: []", "    network: {}",
                 "  snapshots: []"):
        assert line in lines, (line, lines)
    created = next(x for x in lines if x.startswith("  created_at: "))
    assert created[len("  created_at: "):][:1].isdigit(), created  # plain, not quoted

    p1 = ('{"config":{"user.a":"b"},"description":"","devices":{},"name":"p1",'
          '"used_by":[]}')
    assert p1 in run(root, "profile", "list", "-f", "json").stdout
    assert ('- config:\n    user.a: b\n  description: ""\n  devices: {}\n  name: p1\n'
            '  used_by: []\n') in run(root, "profile", "list", "-f", "yaml").stdout
    host.create("busybox", "c3")
    assert "  used_by:\n  - /1.0/instances/c2\n  - /1.0/instances/c3\n" in \
        run(root, "profile", "list", "-f", "yaml").stdout


def test_storage_flag_snapshot_show_and_device_show_as_lxc(host: lxdlib.Host) -> None:
    """Read off lxc 5.0.2: `init -s <pool>` gives the instance its own root disk, also when a
    profile's is on that pool already (`config device show`: the device, its keys sorted);
    `config show c1/snap` is the API's InstanceSnapshot, in its order."""
    root = host.paths.root
    run(root, "init", "busybox", "c2", "-s", "default")
    want = "root:\n  path: /\n  pool: default\n  type: disk\n"
    assert run(root, "config", "device", "show", "c2").stdout == want
    assert run(root, "config", "device", "list", "c2").stdout == "root\n"
    # lxc takes its global flags anywhere on the line: -q after the names
    assert run(root, "init", "busybox", "c3", "-s", "default", "--no-profiles", "-q").stdout \
        == ""
    assert run(root, "config", "device", "show", "c3").stdout == want  # sorted keys
    run(root, "snapshot", "c2", "snap0")
    shown = run(root, "config", "show", "c2/snap0").stdout
    keys = [line.split(":")[0] for line in shown.splitlines() if line[:1].isalpha()]
    assert keys == ["expires_at", "architecture", "config", "created_at", "devices",
                    "ephemeral", "expanded_config", "expanded_devices", "last_used_at", "name",
                    "profiles", "stateful", "size"], shown
    for line in ("expires_at: 0001-01-01T00:00:00Z", "last_used_at: 0001-01-01T00:00:00Z",
                 "name: snap0", "stateful: false", "size: -1", "profiles:", "- default",
                 "ephemeral: false", "architecture: x86_64"):
        assert line in shown.splitlines(), (line, shown)
    assert "devices:\n  root:\n    path: /\n    pool: default\n    type: disk\n" in shown
