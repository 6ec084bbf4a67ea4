"""The SSH remote protocol without ssh: frames, hello, typed errors, the server's verb table,
ssh:// URLs, the ssh argv and the CLI's forwarding decision."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest

from lxdlib import errors, wire
from lxdlib.imagestore.remotes import Remote, Remotes, parse_ssh_url
from lxdlib.serve import VERBS, Server
from lxdlib.sshhost import ssh_command
from lxdlib.state import Paths


def test_frames_round_trip() -> None:
    buf = io.BytesIO()
    wire.write_json(buf, {"id": 1, "verb": "x"})
    wire.write_frame(buf, wire.DATA, b"abc")
    wire.write_frame(buf, wire.DATA, b"")
    buf.seek(0)
    assert wire.read_frame(buf) == (wire.JSON, b'{"id":1,"verb":"x"}')
    assert wire.read_frame(buf) == (wire.DATA, b"abc")
    assert wire.read_frame(buf) == (wire.DATA, b"")
    with pytest.raises(wire.ConnectionLost):
        wire.read_frame(buf)


def test_data_before_a_reply_goes_to_the_callback_and_is_refused_without_one() -> None:
    buf = io.BytesIO()
    wire.write_frame(buf, wire.STDOUT, b"out")
    wire.write_frame(buf, wire.STDERR, b"err")
    wire.write_json(buf, {"ok": True})
    got: list[tuple[bytes, bytes]] = []
    buf.seek(0)
    assert wire.read_json(buf, lambda k, d: got.append((k, d))) == {"ok": True}
    assert got == [(b"O", b"out"), (b"E", b"err")]
    buf.seek(0)
    with pytest.raises(wire.ProtocolError):
        wire.read_json(buf)


def test_truncated_and_oversized_and_unknown_frames() -> None:
    whole = io.BytesIO()
    wire.write_frame(whole, wire.DATA, b"0123456789")
    with pytest.raises(wire.ConnectionLost, match="after 3 of 10"):
        wire.read_frame(io.BytesIO(whole.getvalue()[:8]))
    with pytest.raises(wire.ProtocolError, match="over"):
        wire.read_frame(io.BytesIO(struct.pack(">cI", b"D", wire.MAX_FRAME + 1)))
    with pytest.raises(wire.ProtocolError, match="kind"):
        wire.read_frame(io.BytesIO(struct.pack(">cI", b"X", 0)))
    with pytest.raises(wire.ProtocolError, match="not a JSON object"):
        wire.read_json(io.BytesIO(struct.pack(">cI", b"J", 2) + b"[]"))


def test_version_negotiation() -> None:
    assert wire.pick_version(wire.hello("client")) == wire.PROTOCOL_VERSION
    with pytest.raises(wire.ProtocolError, match="no shared"):
        wire.pick_version({"hello": "lxdlib", "versions": [99]})
    with pytest.raises(wire.ProtocolError, match="hello"):
        wire.pick_version({"verb": "instances.names"})


def test_errors_keep_their_class_message_and_fields() -> None:
    e = wire.decode_error(wire.encode_error(errors.NotFound("instance", "c1")))
    assert type(e) is errors.NotFound and isinstance(e, LookupError)
    assert str(e) == "instance 'c1' not found" and e.kind == "instance" and e.name == "c1"
    e2 = wire.decode_error(wire.encode_error(errors.InvalidConfig("limits.cpu", "bad", "x")))
    assert type(e2) is errors.InvalidConfig and e2.key == "limits.cpu"
    e3 = wire.decode_error(wire.encode_error(errors.StorageError("pool broke")))
    assert type(e3) is errors.StorageError and str(e3) == "pool broke"


def test_foreign_exceptions_and_unknown_classes_become_plain_lxdlib_errors() -> None:
    e = wire.decode_error(wire.encode_error(KeyError("x")))
    assert type(e) is errors.LxdlibError and "KeyError" in str(e)
    # a reply cannot choose an arbitrary class, not even a builtin or a non-error
    for name in ("SystemExit", "Path", "__class__", "Protocol"):
        got = wire.decode_error({"class": name, "message": "m"})
        assert type(got) is errors.LxdlibError
    assert isinstance(wire.decode_error("garbage"), wire.ProtocolError)


class FakeInstances:
    def names(self) -> list[str]:
        return ["c1", "c2"]

    def get(self, name: str) -> Any:
        raise errors.NotFound("instance", name)


class FakeHost:
    instances = FakeInstances()
    paths = Paths.at("/nonexistent-root")


def _converse(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    inp = io.BytesIO()
    for m in messages:
        wire.write_json(inp, m)
        if m.get("upload"):  # the data the flag announces, then its end
            wire.write_frame(inp, wire.DATA, b"ignored")
            wire.write_frame(inp, wire.DATA, b"")
    inp.seek(0)
    out = io.BytesIO()
    Server(FakeHost(), inp, out).run()  # type: ignore[arg-type]
    out.seek(0)
    replies = []
    while True:
        try:
            replies.append(wire.read_json(out))
        except wire.ConnectionLost:
            return replies


def test_server_answers_known_verbs_and_refuses_the_rest() -> None:
    replies = _converse(
        wire.hello("client"),
        {"id": 1, "verb": "instances.names"},
        {"id": 2, "verb": "instance.start", "args": {"name": "nope"}},
        {"id": 3, "verb": "__import__", "args": {}},
        {"id": 4, "verb": "instance.start", "args": {"name": 5}},
        {"id": 5, "verb": "instance.start", "args": {"name": "c1", "extra": 1}},
        {"id": 6, "verb": "instance.start"},
        {"id": 7, "verb": "instances.names", "upload": True},
    )
    assert replies[0]["version"] == wire.PROTOCOL_VERSION and replies[0]["pid"] > 0
    assert replies[1] == {"id": 1, "ok": True, "result": ["c1", "c2"]}
    assert replies[2]["error"]["class"] == "NotFound"
    for r, why in zip(replies[3:], ("unknown verb", "must be str", "unknown arguments",
                                    "missing argument", "takes no upload"), strict=True):
        assert r["ok"] is False and r["error"]["class"] == "ProtocolError"
        assert why in r["error"]["message"]


def test_server_refuses_a_client_without_hello() -> None:
    replies = _converse({"id": 1, "verb": "instances.names"})
    assert len(replies) == 1 and replies[0]["error"]["class"] == "ProtocolError"


def test_verb_table_is_explicit() -> None:
    assert all("." in v and not v.startswith("_") for v in VERBS)
    assert "instance.exec" in VERBS and "file.put" in VERBS


def test_ssh_urls() -> None:
    a = parse_ssh_url("ssh://root@host2:2222/var/lib/x/")
    assert (a.user, a.host, a.port, a.root) == ("root", "host2", 2222, "/var/lib/x")
    b = parse_ssh_url("ssh://host2")
    assert (b.user, b.port, b.root) == (None, None, None)
    for bad in ("https://host2", "ssh://u:pw@h", "ssh://h/x?y=1", "ssh://-oProxyCommand=x",
                "ssh://h:99999", "ssh:///root", "ssh://h x"):
        with pytest.raises(errors.InvalidArgument):
            parse_ssh_url(bad)


def test_ssh_command_quotes_the_remote_words() -> None:
    r = Remote("h2", "ssh://root@host2:2222/var/lib/my%20root", "lxdlib",
               command="/opt/lxdlib/bin/lxdlib", identity="/k", ssh_config="/cfg",
               ssh_options=("ConnectTimeout=5",))
    argv = ssh_command(r, ["exec", "c1", "--", "sh", "-c", "echo $HOME; id"])
    assert argv[:2] == ["ssh", "-T"]
    assert argv[2:4] == ["-F", "/cfg"] and "BatchMode=yes" in argv
    assert argv[argv.index("-i") + 1] == "/k" and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "root" and "ConnectTimeout=5" in argv
    i = argv.index("host2")
    assert argv[i + 1] == "--"
    assert argv[i + 2:] == ["/opt/lxdlib/bin/lxdlib", "--root", "'/var/lib/my root'", "exec",
                            "c1", "--", "sh", "-c", "'echo $HOME; id'"]
    assert "StrictHostKeyChecking=no" not in argv
    with pytest.raises(errors.InvalidArgument):
        ssh_command(Remote("images", "https://x"))


def test_ssh_remotes_are_stored_with_their_options(tmp_path: Path) -> None:
    rs = Remotes(Paths.at(tmp_path))
    r = rs.add("h2", "ssh://root@host2/srv/lxd", command="sudo lxdlib", identity="/k",
               ssh_options=["Port=22"])
    assert r.is_ssh and r.protocol == "lxdlib"
    again = Remotes(Paths.at(tmp_path)).get("h2")
    assert again == r
    rs.rename("h2", "h3")
    rs.set_url("h3", "ssh://host3")
    assert rs.get("h3").addr == "ssh://host3" and rs.get("h3").command == "sudo lxdlib"
    with pytest.raises(errors.InvalidArgument):
        rs.set_url("h3", "https://example.org")  # an ssh remote stays one
    with pytest.raises(errors.InvalidArgument):
        rs.add("h4", "https://example.org", identity="/k")
    with pytest.raises(errors.InvalidArgument):
        rs.add("h5", "ssh://h", ssh_options=["-oProxyCommand=x"])
    rs.switch("h3")
    assert rs.default == "h3"


def test_forward_plan(tmp_path: Path) -> None:
    from lxdlib.cli.forward import maybe_forward, plan
    root = ["--root", str(tmp_path)]
    assert plan([*root, "list"]) is None
    rs = Remotes(Paths.at(tmp_path))
    rs.add("h2", "ssh://root@host2")
    p = plan([*root, "--debug", "launch", "images:alpine/3.19", "h2:c1", "-c", "a=b:c"])
    assert p is not None and p.remote.name == "h2"
    assert p.args == ["--no-forward", "--debug", "launch", "images:alpine/3.19", "c1", "-c",
                      "a=b:c"]
    p = plan([*root, "list", "h2:"])
    assert p is not None and p.args == ["--no-forward", "list"]
    p = plan([*root, "exec", "h2:c1", "--", "echo", "h2:x"])
    assert p is not None and p.args == ["--no-forward", "exec", "c1", "--", "echo", "h2:x"]
    assert plan([*root, "exec", "c1", "--", "echo", "h2:x"]) is None
    assert plan([*root, "remote", "list", "h2:"]) is None  # not an instance command
    assert plan([*root, "list", "local:"]) is None
    with pytest.raises(errors.InvalidArgument, match="several hosts"):
        plan([*root, "image", "copy", "local:bb", "h2:"])
    rs.switch("h2")
    p = plan([*root, "list"])
    assert p is not None and p.remote.name == "h2" and p.args == ["--no-forward", "list"]
    # what arrives on the far side runs there, whatever that root's default remote is
    assert plan([*root, "--no-forward", "list"]) is None
    assert maybe_forward([*root, "--no-forward", "list", "-f", "csv"]) == [
        *root, "list", "-f", "csv"]


def test_an_ssh_remote_is_no_image_server(tmp_path: Path) -> None:
    from lxdlib.context import Context
    from lxdlib.images import Images
    images = Images(Context.open(Paths.at(tmp_path)))
    images.remotes.add("h2", "ssh://root@host2")
    with pytest.raises(errors.InvalidArgument, match="not an image server"):
        images.resolve("h2:busybox")
    with pytest.raises(errors.InvalidArgument, match="not an image server"):
        images.remote_list("h2:")
    images.remotes.switch("h2")  # as the default, unprefixed images are this host's own
    assert images.resolve("busybox") == "busybox"


def test_forwarded_exec_terminal_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from lxdlib.cli import forward
    monkeypatch.setattr(forward.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(forward.sys.stdout, "isatty", lambda: True, raising=False)
    assert forward._terminal(["exec", "c1", "--", "sh"]) == "-t"
    assert forward._terminal(["exec", "-T", "c1", "--", "sh"]) == "-T"
    assert forward._terminal(["exec", "--mode=non-interactive", "c1"]) == "-T"
    assert forward._terminal(["exec", "c1", "--", "sh", "-T"]) == "-t"  # the command's own -T
    monkeypatch.setattr(forward.sys.stdout, "isatty", lambda: False, raising=False)
    assert forward._terminal(["exec", "c1", "--", "sh"]) == "-T"
    assert forward._terminal(["exec", "--mode", "interactive", "c1", "--", "sh"]) == "-tt"


def test_a_message_nested_too_deep_is_a_protocol_error() -> None:
    """A peer's JSON nested deeper than the parser goes raised RecursionError, out of
    lxdlib's classes (a hostile far side ended ``connect()`` with it)."""
    buf = io.BytesIO()
    wire.write_frame(buf, wire.JSON, b"[" * 100000)
    buf.seek(0)
    with pytest.raises(wire.ProtocolError):
        wire.read_json(buf)


@pytest.mark.parametrize("url", [
    "ssh://root@$(id>pwned)", "ssh://$(id>pwned)@host2", "ssh://a%3Bid%3Epwned@host2",
    "ssh://root@h`id`", "ssh://a%0Ab@host2", "ssh://root@h|x", "ssh://a%20b@host2",
])
def test_a_host_or_user_with_shell_characters_is_refused(url: str) -> None:
    """ssh hands the host and user to the commands of the user's config (``%h``/``%r`` in a
    ``ProxyCommand``, ``Match exec``), which a shell runs: refused at ``remote add`` and
    ``connect()``, as OpenSSH 9.6 refuses them, whatever ssh is installed."""
    with pytest.raises(errors.InvalidArgument):
        parse_ssh_url(url)
