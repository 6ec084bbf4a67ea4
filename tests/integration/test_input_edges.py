"""Issue 10 case 14: small input edges, each its own test — alias names, a device name with a
newline, pulling a FIFO, a killed import's temp files, unknown syscall names, exec environment
with a newline, a full disk."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib.errors import DiskFull, InvalidArgument, InvalidConfig, InvalidName
from tests.cleanup import teardown_root
from tests.integration.image_fixtures import good_members, make_image, reg

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def cli(root: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, input=input, timeout=120, cwd=REPO)


def refused(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1 and r.stderr.startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_alias_dot_parts_refused_slashes_kept(host: lxdlib.Host) -> None:
    root = host.paths.root
    for bad in ("..", ".", "a/../b", "a//b", "/a", "a/"):
        assert "may be empty" in refused(cli(root, "image", "alias", "create", bad, "busybox"))
        with pytest.raises(InvalidName):
            host.images.store.alias_create(bad, host.images["busybox"].fingerprint)
    # as LXD: slashes are fine; an alias is a key of aliases.yaml, never a path
    fp = host.images["busybox"].fingerprint
    assert cli(root, "image", "alias", "create", "a/b", fp[:12]).returncode == 0
    assert host.images["a/b"].fingerprint == host.images["busybox"].fingerprint
    assert not (host.paths.images / "a").exists()


def test_device_name_with_newline_gets_its_own_message(host: lxdlib.Host) -> None:
    c = host.create("busybox", "c1")
    for name in ("x\ny", "x/\n", "../x\n"):
        with pytest.raises(InvalidConfig, match="control characters") as e:
            c.update(devices={name: {"type": "disk", "source": "/tmp", "path": "/mnt"}})
        assert '"/"' not in str(e.value)
    err = refused(cli(host.paths.root, "config", "device", "add", "c1", "a/\nb", "disk",
                      "source=/tmp", "path=/mnt"))
    assert "control characters" in err


def test_pull_fifo_says_fifo(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    c.exec(["mkfifo", "/tmp/fifo"], check=True)
    for dest in ("-", str(host.paths.root.parent / "out")):
        err = refused(cli(host.paths.root, "file", "pull", "c1/tmp/fifo", dest))
        assert "is a FIFO, not a regular file" in err
    with pytest.raises(Exception, match="is a FIFO, not a regular file"):
        c.files.get("/tmp/fifo")


def test_file_host_paths_missing_are_one_line_and_push_nothing(host: lxdlib.Host,
                                                              tmp_path: Path) -> None:
    """A missing host file (push) or host directory (pull) is lxc's `open <path>: ...` line,
    and a push naming a good file then a missing one pushes neither (lxc opens all first)."""
    c = host.create("busybox", "c1")
    root = host.paths.root
    good = tmp_path / "good.txt"
    good.write_text("x")
    missing = tmp_path / "nosuch"
    err = refused(cli(root, "file", "push", str(good), str(missing), "c1/tmp/"))
    assert err == f"Error: open {missing}: no such file or directory\n"
    assert not c.files.exists("/tmp/good.txt")
    err = refused(cli(root, "file", "pull", "c1/etc/passwd", str(missing / "out")))
    assert err == f"Error: open {missing / 'out'}: no such file or directory\n"
    err = refused(cli(root, "file", "pull", "c1/etc/passwd", f"{good}/out"))
    assert err == f"Error: open {good}/out: not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.txt"]


def test_edit_reads_yaml_types_as_lxd(host: lxdlib.Host) -> None:
    """`null` in an edited config unsets the key (not the text "None"), a number or a bool is
    its text, a list or mapping (or a list as description) is refused naming the key and
    changes nothing; for instance, profile and network edits alike."""
    root = host.paths.root
    c = host.create("busybox", "c1")
    c.set_config("user.c", "keep")
    head = "devices: {}\nprofiles: [default]\n"
    r = cli(root, "config", "edit", "c1",
            input=head + "config: {user.c: null, user.n: 5, user.b: true}\n")
    assert r.returncode == 0, r.stderr
    assert c.record().config.get("user.c") is None
    assert (c.config["user.n"], c.config["user.b"]) == ("5", "true")
    for bad, key in (("config: {user.a: [1, 2]}\n", "user.a"),
                     ("config: {user.a: {x: 1}}\n", "user.a"),
                     ("config: {}\ndescription: [1]\n", "description")):
        err = refused(cli(root, "config", "edit", "c1", input=head + bad))
        assert f"'{key}': must be a string, not" in err
    assert c.config["user.n"] == "5" and c.record().description == ""
    host.profiles.create("p1", {"user.a": "x"})
    r = cli(root, "profile", "edit", "p1", input="config: {user.a: null, user.b: 1}\n")
    assert r.returncode == 0, r.stderr
    assert host.profiles["p1"].config == {"user.b": "1"}
    refused(cli(root, "profile", "edit", "p1", input="config: {}\ndescription: [1]\n"))
    assert host.profiles["p1"].config == {"user.b": "1"}
    net = f"lxe{os.urandom(3).hex()}"
    host.networks.create(net, {"ipv4.address": "none", "ipv6.address": "none",
                               "dns.domain": "example"})
    try:
        r = cli(root, "network", "edit", net, input="config: {ipv4.address: none, "
                "ipv6.address: none, dns.domain: null}\n")
        assert r.returncode == 0, r.stderr
        assert "dns.domain" not in host.networks[net].config
        refused(cli(root, "network", "edit", net, input="config: {user.x: [1]}\n"))
    finally:
        host.networks.delete(net)


def test_api_wrong_types_are_typed_errors_and_change_nothing(host: lxdlib.Host) -> None:
    """Through the Python API a value of the wrong type is InvalidArgument (or InvalidConfig),
    never AttributeError/TypeError, and nothing is stored: a config value with no text in
    LXD's config (None, bytes, a float) is refused, not stored as its str(); an int or a bool
    is stored as its text; ``files.put`` takes bytes, not text."""
    c = host.create("busybox", "c1")
    before = c.record().to_dict()
    bad: list[Any] = [
        lambda: c.set_config(None, "x"), lambda: c.set_config("user.n", 1.5),
        lambda: c.set_config("user.t", None), lambda: c.set_config("user.b", b"x"),
        lambda: c.update(config=["a"]), lambda: c.update(devices=["x"]),
        lambda: c.update(devices={"d": "x"}), lambda: c.update(description=5),
        lambda: c.update(profiles="default"), lambda: c.update(profiles=5),
        lambda: host.profiles.create("p", {}, devices=["x"]),
        lambda: host.profiles.create("p", {"user.a": None}),
        lambda: host.profiles.create("p", description=5),  # type: ignore[arg-type]
        lambda: host.create_pool("p2", "dir", {"user.x": None}),
        lambda: host.networks.create("lxebad0", ["x"]),
        lambda: host.launch("busybox", "c2", config=[("a", "b")]),
        lambda: c.files.put("/tmp/y", "text"),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(InvalidArgument):
            call()
        assert c.record().to_dict() == before, i
    assert "p" not in host.profiles and "c2" not in host.instances
    assert host.pool_names() == ["default"] and not host.networks.list()
    assert not c.files.exists("/tmp/y")
    c.set_config("user.n", 5)
    c.set_config("user.t", True)
    assert (c.config["user.n"], c.config["user.t"]) == ("5", "true")


def test_volatile_keys_and_ephemeral_are_refused_not_dropped(host: lxdlib.Host) -> None:
    """`config set` / `unset` / `edit` of a volatile key, and `config edit` turning
    `ephemeral` on, say so (exit 1) instead of answering 0 and changing nothing; an edit that
    repeats `config show` (volatile keys included) still goes through."""
    root = host.paths.root
    c = host.create("busybox", "c1")
    before = c.record().to_dict()
    uuid = c.record().config["volatile.uuid"]
    assert "volatile keys" in refused(cli(root, "config", "set", "c1", "volatile.uuid", "x"))
    assert "volatile keys" in refused(cli(root, "config", "unset", "c1", "volatile.uuid"))
    shown = cli(root, "config", "show", "c1").stdout
    assert "volatile.uuid" in shown
    assert "volatile keys" in refused(cli(root, "config", "edit", "c1",
                                          input=shown.replace(uuid, "x")))
    assert "ephemeral" in refused(cli(root, "config", "edit", "c1",
                                      input=shown.replace("ephemeral: false",
                                                          "ephemeral: true")))
    assert c.record().to_dict() == before
    r = cli(root, "config", "edit", "c1", input=shown.replace("config:\n",
                                                             "config:\n  user.x: y\n"))
    assert r.returncode == 0, r.stderr
    assert c.config["user.x"] == "y" and c.record().config["volatile.uuid"] == uuid


_KILLED_IMPORT = textwrap.dedent("""
    import os, signal, sys
    import lxdlib
    def progress(done, total):
        if done >= 1024 * 1024:
            os.kill(os.getpid(), signal.SIGKILL)
    lxdlib.Host(sys.argv[1]).images.import_file(sys.argv[2], progress=progress)
""")


def test_killed_import_temp_cleared_by_any_command(root: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "img.tar", good_members([reg("rootfs/big",
                                                               os.urandom(3 << 20))]),
                       compression="none")
    proc = subprocess.run([sys.executable, "-c", _KILLED_IMPORT, str(root), str(image)],
                          cwd=REPO, check=False)
    assert proc.returncode == -signal.SIGKILL

    def temps() -> list[str]:  # where today's imports and older versions keep temp files
        out = [n for n in os.listdir(root / "images") if n.startswith(".import")]
        with contextlib.suppress(FileNotFoundError):
            out += os.listdir(root / "run" / "image-imports")
        return out

    assert temps()  # the torn copy
    assert cli(root, "list").returncode == 0  # not an image command
    assert temps() == []


def test_unknown_syscall_name_refused(host: lxdlib.Host) -> None:
    c = host.create("busybox", "c1")
    with pytest.raises(InvalidConfig, match="Unknown syscall 'no_such_call'"):
        c.set_config("security.syscalls.deny", "kexec_load\nno_such_call")
    assert "Unknown syscall" in refused(cli(host.paths.root, "config", "set", "c1",
                                            "security.syscalls.deny", "reboot,frobnicate"))
    c.set_config("security.syscalls.deny", "kexec_load\nreboot")  # real names still work
    assert "security.syscalls.deny" in c.config


def test_exec_env_newline_refused(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1")
    for env in ({"A": "x\ny"}, {"A": "x\ry"}, {"A\nB": "1"}):
        with pytest.raises(InvalidArgument, match="newline"):
            c.exec(["true"], env=env)
    err = refused(cli(host.paths.root, "exec", "c1", "--env", "A=x\ny", "--", "true"))
    assert "newline" in err
    assert c.exec(["sh", "-c", "echo $A"], env={"A": "x y"}).text == "x y\n"


@pytest.fixture
def full_root(busybox_tarball: Path) -> Iterator[tuple[lxdlib.Host, Path]]:
    """A root on a small tmpfs with a dir pool, an image and an instance, then filled up."""
    base = Path(tempfile.mkdtemp(prefix="lxdlib-full-", dir="/var/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0711", "tmpfs", str(base)],
                   check=True)
    root = base / "root"
    try:
        root.mkdir()
        h = lxdlib.Host(root)
        h.create_pool("default", "dir", {})
        h.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                   "pool": "default"}})
        h.images.import_file(busybox_tarball, aliases=["busybox"])
        h.create("busybox", "c1")
        for name, chunk in (("fill", 1 << 20), ("fill2", 512)):
            with contextlib.suppress(OSError), open(base / name, "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * chunk)
        yield h, base
    finally:
        with contextlib.suppress(Exception):
            teardown_root(root)
        subprocess.run(["umount", "-l", str(base)], check=False)
        os.rmdir(base)


def test_full_disk_is_a_typed_error(full_root: tuple[lxdlib.Host, Path],
                                    busybox_tarball: Path, tmp_path: Path) -> None:
    h, _ = full_root
    big = "x" * 100_000
    before = h.paths.instance_record("c1").read_bytes()
    with pytest.raises(DiskFull, match="no space left"):
        h.instances["c1"].set_config("user.big", big)
    assert h.paths.instance_record("c1").read_bytes() == before
    err = refused(cli(h.paths.root, "config", "set", "c1", "user.big", big))
    assert "no space left" in err and str(h.paths.root) in err
    other = tmp_path / "other.tar.gz"  # another fingerprint: the copy itself must fail
    other.write_bytes(busybox_tarball.read_bytes() + b"\0" * 1024)
    err = refused(cli(h.paths.root, "image", "import", str(other), "--alias", "b2"))
    assert "no space left" in err
    with pytest.raises(DiskFull):
        h.images.import_file(other)
    assert [i.fingerprint for i in h.images.list()] == [h.images["busybox"].fingerprint]
    assert os.listdir(h.paths.run / "image-imports") == []
    assert not [n for n in os.listdir(h.paths.images) if n.startswith(".")]


def test_syscalls_deny_takes_effect(host: lxdlib.Host) -> None:
    """A name that is checked must also be enforced: the deny list reaches the policy."""
    c = host.launch("busybox", "c1", config={"security.syscalls.deny": "mkdir,mkdirat"})
    assert c.exec(["mkdir", "/tmp/x"]).returncode == 128 + signal.SIGSYS
    policy = (host.paths.instance_dir("c1") / "seccomp.policy").read_text()
    assert policy.splitlines()[-2:] == ["mkdir", "mkdirat"] and "kexec_load errno 38" in policy
    c.stop(force=True)
    c.unset_config("security.syscalls.deny")
    c.start()
    assert c.exec(["mkdir", "/tmp/x"]).returncode == 0
    assert f"lxc.seccomp.profile = {host.paths.root / 'seccomp.policy'}" in \
        (host.paths.instance_dir("c1") / "config").read_text()


def test_syscall_actions_that_are_taken_are_the_ones_liblxc_loads(host: lxdlib.Host) -> None:
    """What the check lets follow a name loads at start; what liblxc would refuse (and so fail
    every start) is refused when set, and nothing is saved."""
    deny = "mount errno 13\nswapon errno 4094\nacct kill\nkexec_load trap"
    c = host.launch("busybox", "c1", config={"security.syscalls.deny": deny})
    out = c.exec(["sh", "-c", "mount -t tmpfs x /tmp 2>&1; echo rc=$?"]).text
    assert "Permission denied" in out and "rc=0" not in out  # EACCES: the errno 13 asked for
    for bad in ("mount allow", "mount log", "mount errno 4095", "mount errno abc", "bpf notify"):
        with pytest.raises(lxdlib.InvalidConfig, match="Invalid action"):
            c.set_config("security.syscalls.deny", bad)
    assert c.config["security.syscalls.deny"] == deny
    c.restart(force=True)
    assert c.state == "RUNNING"


def test_bytes_that_are_not_utf8_are_refused_cleanly(host: lxdlib.Host) -> None:
    """A command-line word with a byte that is not UTF-8 is a lone surrogate in Python
    (``\\xff`` becomes ``\\udcff``), which no record, liblxc config or attach can take: it ended
    each of these commands with a traceback (``UnicodeEncodeError`` at the write, a
    ``SystemError`` from python3-lxc's attach). Now each is refused and writes nothing."""
    c = host.launch("busybox", "c1")
    bad = os.fsdecode(b"\xff")
    before = c.record().to_dict()
    for args in (("config", "set", "c1", "user.x", bad),
                 ("config", "set", "c1", "environment.A", bad),
                 ("config", "device", "add", "c1", "d1", "disk", "source=/tmp", f"path=/m{bad}"),
                 ("profile", "create", f"p{bad}"),
                 ("profile", "set", "default", "user.x", bad),
                 ("snapshot", "c1", f"s{bad}"),
                 ("storage", "create", f"p{bad}", "dir"),
                 ("launch", "busybox", "c2", "--description", bad),
                 ("exec", "c1", "--", "echo", bad),
                 ("exec", "c1", "--env", f"A={bad}", "--", "true")):
        refused(cli(host.paths.root, *args))
    assert c.record().to_dict() == before and c.snapshots.names() == []
    assert sorted(host.profiles.names()) == ["default"] and host.pool_names() == ["default"]
    assert "c2" not in host.instances and c.running
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        c.exec(["echo", bad])
    assert c.exec(["echo", "\u00e9"]).text == "\u00e9\n"  # text beyond ASCII is still text


RAW_POLICY = "2\ndenylist\n[all]\nkexec_load errno 38\n"


def test_rules_across_keys_and_devices_hold_with_the_profiles(host: lxdlib.Host) -> None:
    """An instance's deny list beside its profile's ``raw.seccomp`` (or allow list) was saved
    and then not applied (the render takes one policy: ``mkdir`` kept working); a profile edit
    could bring the same about, or put a second disk on a user's path. Each is refused, as
    LXD's check of the expanded config refuses it, and changes nothing."""
    host.profiles.create("raw", {"raw.seccomp": RAW_POLICY})
    host.profiles.create("deny", {"security.syscalls.deny": "mkdir"})
    c = host.launch("busybox", "c1", profiles=["default", "raw"])
    with pytest.raises(InvalidConfig, match="mutually exclusive"):
        c.set_config("security.syscalls.deny", "mkdir")
    with pytest.raises(InvalidConfig, match="mutually exclusive"):
        c.update(profiles=["default", "raw", "deny"])
    assert "security.syscalls.deny" not in c.expanded_config and c.profiles == ["default", "raw"]
    assert c.exec(["mkdir", "/tmp/x"]).returncode == 0 and c.running
    with pytest.raises(InvalidConfig, match="mutually exclusive"):
        host.create("busybox", "c2", profiles=["default", "raw"],
                    config={"security.syscalls.allow": "mkdir"})
    assert "c2" not in host.instances

    host.profiles.create("pa")
    c3 = host.create("busybox", "c3", profiles=["default", "pa"],
                     config={"security.syscalls.deny": "mkdir"},
                     devices={"d1": {"type": "disk", "source": "/var/tmp", "path": "/mnt"}})
    with pytest.raises(InvalidConfig, match="in instance 'c3'"):
        host.profiles["pa"].update(config={"raw.seccomp": RAW_POLICY})
    with pytest.raises(InvalidConfig, match="same path"):
        host.profiles["pa"].update(
            devices={"d2": {"type": "disk", "source": "/tmp", "path": "/mnt"}})
    assert host.profiles["pa"].config == {} and host.profiles["pa"].devices == {}
    assert c3.expanded_config["security.syscalls.deny"] == "mkdir"
    err = refused(cli(host.paths.root, "profile", "set", "pa", "security.syscalls.allow",
                      "mkdir"))
    assert "mutually exclusive" in err and host.profiles["pa"].config == {}


def test_an_instance_from_an_image_with_odd_properties_stays_editable(host: lxdlib.Host) -> None:
    """``image set-property`` (as a tarball's or a remote's metadata) takes any name; an
    instance made from it got ``image.a b`` and ``image.os<newline>x`` keys, and then every
    ``config set``, ``config edit`` and the import of its export was refused."""
    for key, value in (("a b", "c"), ("os\nx", "y"), ("description", "two\nlines")):
        assert cli(host.paths.root, "image", "set-property", "busybox", key,
                   value).returncode == 0
    c = host.create("busybox", "c1")
    assert {k for k in c.config if k.startswith("image.")} == \
        {"image.architecture", "image.os", "image.release"}
    c.set_config("user.x", "1")
    r = cli(host.paths.root, "config", "set", "c1", "user.y", "2")
    assert r.returncode == 0, r.stderr


def test_keys_no_config_can_hold_are_unset_one_by_one(host: lxdlib.Host) -> None:
    """An instance made before 49786b9 holds ``image.*`` keys that no config can hold now (an
    image property with a space or a line break in its name). Every change was refused while
    two of them were left, ``config unset`` of either one too (the other made the rest of
    the config invalid): only a ``config edit`` that dropped both at once repaired it. LXD
    takes any ``image.*`` key, and unsets it. A removal goes through now; setting one stays
    refused."""
    from lxdlib import record
    host.create("busybox", "c1")
    rec = record.load(host.paths, "c1")
    rec.config.update({"image.a b": "c", "image.os\nx": "y"})
    record.save(host.paths, rec)
    refused(cli(host.paths.root, "config", "set", "c1", "image.a b", "d"))
    refused(cli(host.paths.root, "config", "set", "c1", "user.y", "2"))
    assert host.instances["c1"].config["image.a b"] == "c"
    r = cli(host.paths.root, "config", "unset", "c1", "image.a b")
    assert r.returncode == 0, r.stderr
    assert host.instances["c1"].config.get("image.os\nx") == "y"  # the other one is kept
    host.instances["c1"].unset_config("image.os\nx")
    r = cli(host.paths.root, "config", "set", "c1", "user.y", "2")
    assert r.returncode == 0, r.stderr
    refused(cli(host.paths.root, "config", "set", "c1", "image.a b", "c"))
    assert not [k for k in host.instances["c1"].config if " " in k or "\n" in k]


def test_config_set_refuses_a_bare_word_among_key_values_as_lxc(host: lxdlib.Host) -> None:
    """``config set c1 user.a=1 b`` took ``user.a=1`` for a key and ``b`` for its value
    ("Invalid key name"); lxc 5.0 refuses the bare word among ``key=value`` words before it
    looks at the instance: ``Error: Invalid key=value configuration: b``, status 1."""
    host.create("busybox", "c1")
    for argv, word in ((("c1", "user.a=1", "b"), "b"), (("c1", "user.a=1", "user.b"), "user.b"),
                       (("nope", "user.a=1", "b"), "b"), (("c1", "b", "c", "user.a=1"), "b"),
                       (("user.a",), "user.a")):
        r = cli(host.paths.root, "config", "set", *argv)
        assert (r.returncode, r.stderr) == (1, f"Error: Invalid key=value configuration: {word}\n")
    assert "user.a" not in host.instances["c1"].config
    r = cli(host.paths.root, "config", "set", "c1", "user.a", "b=1")  # <key> <value>, as lxc
    assert r.returncode == 0, r.stderr
    assert host.instances["c1"].config["user.a"] == "b=1"


def test_an_id_map_the_host_refuses_is_not_kept_past_its_key(host: lxdlib.Host) -> None:
    """``security.idmap.base`` past root's ids (or past the last id) fails the start, as it
    must; but its map was recorded first, and once the key was unset a map outside the
    host's range was taken for an older host range and kept: the instance never started
    again (and was told to add ids beyond 2**32 to /etc/subuid)."""
    c = host.create("busybox", "c1")
    before = c.config["volatile.idmap.base"], c.config["volatile.idmap.size"]
    c.set_config("security.idmap.base", "4294967295")
    with pytest.raises(lxdlib.IdmapNotAllowed):
        c.start()
    assert (c.config["volatile.idmap.base"], c.config["volatile.idmap.size"]) == before
    c.unset_config("security.idmap.base")
    c.start()
    assert c.running


def test_api_flags_and_times_of_the_wrong_type_change_nothing(host: lxdlib.Host) -> None:
    """``ephemeral="false"`` is true to Python: it made an ephemeral instance, deleted with its
    files at its first stop. ``snapshots.create(reuse=True)`` deleted the snapshot it replaces
    before a string ``expires_at`` failed the record write; a naive one was stored, and its
    comparison with "now" ended every ``housekeeping`` pass with a TypeError. ``exec`` with
    ``env`` not a mapping was a TypeError."""
    for flag in ("false", "yes", 0):
        with pytest.raises(InvalidArgument, match="ephemeral"):
            host.create("busybox", "c1", ephemeral=flag)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="ephemeral"):
            host.launch_many(["c1"], image="busybox", ephemeral=flag)  # type: ignore[arg-type]
    assert "c1" not in host.instances
    c = host.create("busybox", "c1")
    with pytest.raises(InvalidArgument, match="ephemeral"):
        host.copy("c1", "c2", ephemeral="false")
    assert "c2" not in host.instances
    s0 = c.snapshots.create("s0")
    for at in ("tomorrow", dt.datetime(2030, 1, 1)):
        with pytest.raises(InvalidArgument, match="expires_at"):
            c.snapshots.create("s0", reuse=True, expires_at=at)  # type: ignore[arg-type]
        assert c.snapshots.names() == ["s0"] and c.snapshots["s0"].record() == s0.record()
    from lxdlib import housekeeping
    assert not housekeeping.run(host).skipped
    c.start()
    for env in (["A=1"], {"A": 1}):
        with pytest.raises(InvalidArgument, match="env"):
            c.exec(["true"], env=env)  # type: ignore[arg-type]


def test_ids_out_of_range_are_refused_not_taken_for_root(host: lxdlib.Host) -> None:
    """liblxc takes -1 for the attach's own id: ``exec --user -1`` ran the command as root
    (LXD's ``--user`` is a uint32 and refuses it); an id past uid_t ended ``exec`` with no
    word at all and ``file push --uid`` with the helper's OverflowError, after the file was
    made."""
    c = host.launch("busybox", "c1")
    for bad in (-1, 2**32 - 1, 2**40):
        with pytest.raises(InvalidArgument, match="an id is"):
            c.exec(["id", "-u"], user=bad)
        with pytest.raises(InvalidArgument, match="an id is"):
            c.exec(["id", "-g"], group=bad)
    assert "an id is" in refused(cli(host.paths.root, "exec", "c1", "--user", "-1", "--", "id"))
    with pytest.raises(InvalidArgument, match="an id is"):
        c.files.put("/tmp/f", b"x", uid=2**40)
    assert not c.files.exists("/tmp/f")
    assert "an id is" in refused(cli(host.paths.root, "file", "push", "/etc/hostname",
                                     "c1/tmp/f", "--uid", str(2**40)))
    assert not c.files.exists("/tmp/f")
    c.files.put("/tmp/f", b"x", uid=-1)  # LXD's "unchanged"
    assert c.exec(["id", "-u"], user=1000).text == "1000\n"
    # a word that is no string (a path object): typed as the other bad words, not an
    # AttributeError from the check of its bytes
    with pytest.raises(InvalidArgument, match="is not text"):
        c.exec(["ls", Path("/")])  # type: ignore[list-item]


def test_metadata_and_image_verbs_refuse_bad_input_cleanly(host: lxdlib.Host,
                                                            tmp_path: Path) -> None:
    """``config metadata edit`` kept any value for the fields LXD types (``creation_date:
    x``, a list for the architecture, ``properties: x``) and ``publish`` failed on them later;
    an edit that leaves the architecture empty (LXD's publish takes the instance's) made
    ``publish`` fail with "Missing architecture". ``image export`` into a directory that does
    not exist ended in a FileNotFoundError traceback, and an unknown option of ``publish`` or
    ``image import`` was "Error: 2"."""
    host.create("busybox", "c1")
    root = host.paths.root
    before = cli(root, "config", "metadata", "show", "c1").stdout
    for doc in ("creation_date: x", "architecture: [1]", "expiry_date: true",
                "properties: x", "properties: {a: [1]}"):
        refused(cli(root, "config", "metadata", "edit", "c1", input=doc + "\n"))
        assert cli(root, "config", "metadata", "show", "c1").stdout == before
    r = cli(root, "config", "metadata", "edit", "c1", input="creation_date: 0\n")
    assert r.returncode == 0, r.stderr
    r = cli(root, "publish", "c1", "--alias", "pub1")
    assert r.returncode == 0, r.stderr
    assert host.images.get("pub1").architecture == host.instances["c1"].architecture
    err = refused(cli(root, "image", "export", "pub1", str(tmp_path / "no" / "such" / "x")))
    assert "directory" in err and "not found" in err and not list(tmp_path.iterdir())
    assert "unknown flag: --nope" in refused(cli(root, "publish", "c1", "k=v", "--nope"))
    assert "pub1" in host.images and len(host.images.list()) == 2
