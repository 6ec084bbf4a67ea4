"""A hostile or compromised SSH remote, against the local side's CLI, through a real sshd on
127.0.0.1: the remote's ``--command`` is a script of this test's that plays the far lxdlib and
says what it likes (a ``migrate-send`` with crafted flags); and the commands that move a file
of this host (``file push``/``file pull``) read and write it here, not at the same path there.

The promise (docs/security.md, 2b and 2e): the other host is trusted with what it sends, not
with what this side does with it: it cannot make a copy replace or start an instance here."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from tests.integration.ssh_fixtures import SshServer, sshd_server

pytestmark = pytest.mark.root

__all__ = ["sshd_server"]

LXDLIB = str(Path(sys.executable).with_name("lxdlib"))

# The far side: answers `migrate-send NAME` with a one-file volume and the header flags the
# test asks for in $RRM_FLAGS (ssh passes no environment: read from a file beside it).
FAKE_SENDER = '''#!{python}
import io, json, os, sys, tarfile
from lxdlib import migrate
flags = json.loads(open({flags!r}).read())
raw = bytes.fromhex(flags.pop("raw", ""))  # said instead of the volume's data
ch = migrate.Channel(os.fdopen(0, "rb"), os.fdopen(1, "wb"))
name = sys.argv[sys.argv.index("migrate-send") + 1]
rec = {{"name": name, "architecture": "x86_64", "created_at": "2026-01-01T00:00:00+00:00",
        "pool": "default", "profiles": ["default"], "config": {{}}, "devices": {{}},
        "snapshots": []}}
ch.send({{"proto": migrate.PROTOCOL, "version": migrate.VERSION, "name": name, "record": rec,
          "snapshots": [], "driver": "dir", "disk_base": 0, "identities": {{}}, **flags}})
ch.receive()
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
    for path in ("./", "./rootfs", "./rootfs/dev", "./rootfs/sbin"):
        info = tarfile.TarInfo(path); info.type, info.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(info)
    for path, data, mode in (("./rootfs/marker", b"from the far side\\n", 0o644),
                             ("./rootfs/sbin/init", b"#!/bin/sh\\nexit 0\\n", 0o755),
                             ("./metadata.yaml", b"{{}}\\n", 0o644)):
        info = tarfile.TarInfo(path); info.mode, info.size = mode, len(data)
        tf.addfile(info, io.BytesIO(data))
ch.send({{"part": "live"}})
if raw:
    ch.out.write(raw)
    ch.flush()
    while os.read(0, 65536):  # open until the receiver hangs up (it must, on the bad frame)
        pass
    sys.exit(0)
ch.data(buf.getvalue())
ch.end_part()
ch.send({{"done": True}})
ch.receive()
'''


def _cli(root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([LXDLIB, "--root", str(root), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120, cwd=cwd)


@pytest.fixture
def evil(host: lxdlib.Host, sshd_server: SshServer, tmp_path: Path) -> Iterator[Path]:
    """A remote ``evil`` whose lxdlib is the fake sender; yields the file of its flags."""
    flags = tmp_path / "flags.json"
    script = tmp_path / "fake-lxdlib"
    script.write_text(FAKE_SENDER.format(python=sys.executable, flags=str(flags)))
    script.chmod(0o755)
    p = _cli(host.paths.root, "remote", "add", "evil", sshd_server.url("/srv/none"),
             "--ssh-config", str(sshd_server.ssh_config), "--command", str(script))
    assert p.returncode == 0, p.stderr
    yield flags


def test_a_remote_sender_cannot_replace_or_start_an_instance_here(host: lxdlib.Host,
                                                                  evil: Path) -> None:
    """``copy evil:web web`` with a ``web`` here must fail as AlreadyExists would: before, a
    sender that said ``refresh`` replaced this host's ``web`` (its files and its snapshots),
    and one that said ``start`` (or ``move``) had a plain copy started (or keep the far
    side's identity) here."""
    root = host.paths.root
    web = host.create("busybox", "rpweb")
    web.files.put("/root/precious", b"mine\n")
    web.snapshots.create("keep")
    try:
        for flags in ({"refresh": True}, {"refresh": True, "move": True}):
            evil.write_text(json.dumps(flags))
            p = _cli(root, "copy", "evil:rpweb", "rpweb")
            assert p.returncode == 1 and b"not asked" in p.stderr, (flags, p)
            assert web.files.get("/root/precious") == b"mine\n"
            assert web.snapshots.names() == ["keep"]
        for flags in ({"start": True}, {"move": True}, {"move": True, "start": True},
                      {"refresh": "yes"}):
            evil.write_text(json.dumps(flags))
            p = _cli(root, "copy", "evil:rpweb", "rpnew")
            assert p.returncode == 1 and p.stderr.startswith(b"Error: migration header"), \
                (flags, p)
            assert "rpnew" not in host.instances.names()
            assert not host.paths.instance_dir("rpnew").exists()
        # what the far side may do: send a plain copy, which arrives stopped
        evil.write_text("{}")
        p = _cli(root, "copy", "evil:rpweb", "rpnew")
        assert p.returncode == 0, p.stderr
        assert host.instances["rpnew"].state == "STOPPED"
        assert host.instances["rpnew"].files.get("/marker") == b"from the far side\n"
        # and a move it was asked for, started as the move asks
        evil.write_text('{"move": true}')
        p = _cli(root, "move", "evil:rpweb", "rpmoved")
        assert p.returncode == 0, p.stderr
        assert host.instances["rpmoved"].state == "STOPPED"
    finally:
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)


def test_file_push_and_pull_move_files_of_this_host(host: lxdlib.Host, sshd_server: SshServer,
                                                    tmp_path: Path) -> None:
    """``file push ./f h2:c/…`` reads ``./f`` here and ``file pull h2:c/… ./d/`` writes here.
    Before, the whole command line ran there, so the far side read and wrote its own files at
    those paths (the far lxdlib runs in another directory in this test, so a relative path
    tells them apart). The pulled file is made beside its destination under a random name
    (``O_EXCL``): a link a host user planted in a directory of theirs is not followed."""
    root = host.paths.root
    far_cwd = tmp_path / "far-cwd"
    far_cwd.mkdir()
    wrapper = tmp_path / "far-lxdlib"
    wrapper.write_text(f"#!/bin/sh\ncd {far_cwd} && exec {LXDLIB} \"$@\"\n")
    wrapper.chmod(0o755)
    here = tmp_path / "here"
    here.mkdir()
    p = _cli(root, "remote", "add", "h2", sshd_server.url(root), "--ssh-config",
             str(sshd_server.ssh_config), "--command", str(wrapper))
    assert p.returncode == 0, p.stderr
    host.create("busybox", "rpfile")
    drop = Path("/var/tmp") / f"rpdrop-{os.getpid()}"
    victim = tmp_path / "victim"
    try:
        (here / "only-here").write_bytes(b"local bytes\n")
        (here / "only-here").chmod(0o640)
        p = _cli(root, "file", "push", "only-here", "h2:rpfile/root/pushed", cwd=here)
        assert p.returncode == 0, p.stderr
        assert host.instances["rpfile"].files.get("/root/pushed") == b"local bytes\n"
        assert host.instances["rpfile"].files.stat("/root/pushed").mode & 0o777 == 0o640

        p = _cli(root, "file", "pull", "h2:rpfile/root/pushed", "pulled", cwd=here)
        assert p.returncode == 0, p.stderr
        assert (here / "pulled").read_bytes() == b"local bytes\n"
        assert not (far_cwd / "pulled").exists()

        # a host user's directory, with a link where a fixed temporary name would be
        victim.write_bytes(b"root's\n")
        drop.mkdir(mode=0o755)
        os.chown(drop, 65534, 65534)
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh",
                        "-c", f"ln -s {victim} {drop}/.pushed.lxdlib-pull"], check=True)
        p = _cli(root, "file", "pull", "h2:rpfile/root/pushed", f"{drop}/")
        assert p.returncode == 0, p.stderr
        assert victim.read_bytes() == b"root's\n"
        assert (drop / "pushed").read_bytes() == b"local bytes\n"
        assert not (drop / "pushed").is_symlink()
        assert sorted(os.listdir(drop)) == [".pushed.lxdlib-pull", "pushed"]
    finally:
        with contextlib.suppress(Exception):
            host.instances["rpfile"].delete(force=True)
        for f in (drop / "pushed", drop / ".pushed.lxdlib-pull"):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        with contextlib.suppress(FileNotFoundError):
            drop.rmdir()


def test_a_relative_ssh_file_is_not_looked_up_where_each_command_runs(
        host: lxdlib.Host, sshd_server: SshServer, tmp_path: Path) -> None:
    """``remote add h2 … --ssh-config cfg`` keeps the file it named, not the name: before,
    ``cfg`` was stored as it was and each later command handed ssh the ``cfg`` of its own
    directory, so ``lxdlib list h2:`` run from a host user's directory ran that user's
    ``ProxyCommand`` as root. A relative path already in a remote list is refused."""
    root = host.paths.root
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    (mine / "cfg").write_text(sshd_server.ssh_config.read_text())
    witness = tmp_path / "proxy-ran"
    (theirs / "cfg").write_text(f"Host *\n    ProxyCommand id > {witness}\n")
    p = _cli(root, "remote", "add", "h2", sshd_server.url(root), "--ssh-config", "cfg",
             "--identity", str(sshd_server.dir / "user_key"), "--command", LXDLIB, cwd=mine)
    assert p.returncode == 0, p.stderr
    assert host.images.remotes.get("h2").ssh_config == str(mine / "cfg")
    p = _cli(root, "list", "h2:", "-f", "csv", "-c", "n", cwd=theirs)
    assert p.returncode == 0, p.stderr
    assert not witness.exists()

    text = (root / "remotes.yaml").read_text().replace(str(mine / "cfg"), "cfg")
    (root / "remotes.yaml").write_text(text)  # as an older lxdlib stored it
    p = _cli(root, "list", "h2:", cwd=theirs)
    assert p.returncode == 1 and b"relative path" in p.stderr, p
    assert not witness.exists()


@pytest.mark.parametrize("frame", [
    (b"J", b"[]"),  # a message that is no object, inside the volume's data
    (b"J", b"{x"),  # no JSON
    (b"J", b"{}"),  # an object that is no error
    (b"J", None),  # a length of almost 4 GiB: refused before it is read
    (b"J", b"[" * 100000),  # nesting deeper than the parser goes (RecursionError)
], ids=["list", "not-json", "no-error", "huge", "deep"])
def test_a_malformed_message_mid_volume_is_a_typed_error(host: lxdlib.Host, evil: Path,
                                                          frame: tuple[bytes, bytes | None]
                                                          ) -> None:
    """Before, a ``J`` frame among a volume's data was parsed without the checks of the
    others: a list or bad JSON ended ``lxdlib copy`` with a Python traceback
    (AttributeError, JSONDecodeError), and its length was read whatever it said."""
    kind, payload = frame
    head = struct.pack(">cI", kind, 0xFFFFFFF0 if payload is None else len(payload))
    evil.write_text(json.dumps({"raw": (head + (payload or b"")).hex()}))
    p = _cli(host.paths.root, "copy", "evil:rpweb", "rpbad")
    assert p.returncode == 1 and p.stderr.startswith(b"Error: migration stream: "), p
    assert b"Traceback" not in p.stderr
    assert "rpbad" not in host.instances.names()
    assert not host.paths.instance_dir("rpbad").exists()


FAKE_SERVE = '''#!{python}
import json, os, sys
from lxdlib import wire
hello, reply = json.loads(open({script!r}).read())
inp, out = os.fdopen(0, "rb"), os.fdopen(1, "wb")
wire.read_json(inp)
wire.write_json(out, hello)
while True:
    try:
        msg = wire.read_json(inp)
    except wire.ConnectionLost:
        break
    while msg.get("upload") and wire.read_frame(inp)[1]:
        pass
    wire.write_json(out, {{"id": msg["id"], **reply}})
'''


@pytest.mark.parametrize("hello,reply", [
    ({"hello": "lxdlib", "version": "one", "pid": 1}, {}),
    ({"hello": "lxdlib", "version": 1, "pid": [1]}, {}),
    ({"hello": "lxdlib", "version": 1, "pid": 1}, {"ok": True, "result": ["no", "code"]}),
    ({"hello": "lxdlib", "version": 1, "pid": 1}, {"ok": True, "result": {"returncode": "0"}}),
], ids=["version", "pid", "exec-list", "exec-code"])
def test_a_malformed_serve_reply_is_a_protocol_error(sshd_server: SshServer, tmp_path: Path,
                                                      hello: dict[str, object],
                                                      reply: dict[str, object]) -> None:
    """``lxdlib.connect()`` to a far side that answers what it likes: before, a hello whose
    version or pid was no number raised ValueError/TypeError, and an exec reply without an
    integer exit status a KeyError or TypeError, out of lxdlib's own error classes."""
    script = tmp_path / "answers.json"
    script.write_text(json.dumps([hello, reply]))
    fake = tmp_path / "fake-serve"
    fake.write_text(FAKE_SERVE.format(python=sys.executable, script=str(script)))
    fake.chmod(0o755)
    with pytest.raises(lxdlib.LxdlibError) as err, lxdlib.connect(
            sshd_server.url("/srv/none"), ssh_config=sshd_server.ssh_config,
            command=str(fake)) as far:
        far.instances["any"].exec(["true"])
    assert type(err.value).__name__ == "ProtocolError", err.value
