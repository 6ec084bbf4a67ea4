"""Remotes: LXD's defaults, static ones, add/remove/rename/set-url/switch, reference parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdlib.errors import AlreadyExists, InvalidArgument, InvalidName, NotFound, WrongState
from lxdlib.imagestore.remotes import Remotes, split_ref, validate_url
from lxdlib.state import Paths


@pytest.fixture
def remotes(tmp_path: Path) -> Remotes:
    return Remotes(Paths.at(tmp_path))


def test_defaults(remotes: Remotes) -> None:
    got = {r.name: (r.addr, r.protocol, r.static) for r in remotes.list()}
    assert got == {
        "images": ("https://images.linuxcontainers.org", "simplestreams", False),
        "local": ("unix://", "lxd", True),
        "ubuntu": ("https://cloud-images.ubuntu.com/releases", "simplestreams", True),
        "ubuntu-daily": ("https://cloud-images.ubuntu.com/daily", "simplestreams", True),
    }
    assert remotes.default == "local" and remotes.get("local").is_local
    assert "images" in remotes and "nosuch" not in remotes


def test_add_rename_set_url_switch_remove(remotes: Remotes) -> None:
    remotes.add("mirror", "http://10.0.0.1:8000/")
    assert remotes.get("mirror").addr == "http://10.0.0.1:8000"
    with pytest.raises(AlreadyExists):
        remotes.add("mirror", "https://x.example")
    remotes.rename("mirror", "m2")
    remotes.set_url("m2", "https://mirror.example/streams")
    remotes.switch("m2")
    assert remotes.default == "m2" and remotes.get("m2").addr == "https://mirror.example/streams"
    with pytest.raises(WrongState, match="default remote"):
        remotes.remove("m2")
    remotes.rename("m2", "m3")  # the default follows a rename
    assert remotes.default == "m3"
    remotes.switch("local")
    remotes.remove("m3")
    with pytest.raises(NotFound):
        remotes.get("m3")
    remotes.remove("images")  # a default, but not static
    assert "images" not in remotes
    assert Remotes(remotes.paths).default == "local"  # persisted


@pytest.mark.parametrize(("verb", "name"), [
    ("remove", "local"), ("remove", "ubuntu"), ("remove", "ubuntu-daily"),
    ("rename", "local"), ("rename", "ubuntu"), ("rename", "ubuntu-daily"),
    ("set_url", "local"),
])
def test_static_remotes_cannot_change(remotes: Remotes, verb: str, name: str) -> None:
    args = {"remove": (name,), "rename": (name, "x"), "set_url": (name, "https://x.example")}
    with pytest.raises(WrongState, match="static"):
        getattr(remotes, verb)(*args[verb])


@pytest.mark.parametrize("name", ["ubuntu", "ubuntu-daily"])
def test_static_image_remotes_can_use_a_local_mirror(remotes: Remotes, name: str) -> None:
    default = remotes.get(name).addr
    remotes.set_url(name, "http://mirror.example/ubuntu")
    assert Remotes(remotes.paths).get(name).addr == "http://mirror.example/ubuntu"
    assert Remotes(remotes.paths).get(name).static
    assert any(r.name == name and r.addr.startswith("http://mirror") for r in remotes.list())
    remotes.set_url(name, default)  # back to the real server: the override disappears
    assert remotes.get(name).addr == default


@pytest.mark.parametrize("name", ["", "a:b", "a/b", "a b", "x\n"])
def test_bad_names(remotes: Remotes, name: str) -> None:
    with pytest.raises(InvalidName):
        remotes.add(name, "https://x.example")


@pytest.mark.parametrize("url", ["ftp://x.example", "file:///etc", "https://", "x.example",
                                 "https://u:p@x.example", "https://x.example/?q=1",
                                 "https://x.example/a b", "unix://"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_url(url)


def test_protocols(remotes: Remotes) -> None:
    with pytest.raises(InvalidArgument, match="simplestreams"):
        remotes.add("lxd", "https://x.example:8443", protocol="lxd")
    with pytest.raises(InvalidArgument, match="Invalid protocol"):
        remotes.add("x", "https://x.example", protocol="incus")
    with pytest.raises(AlreadyExists):
        remotes.add("ubuntu", "https://x.example")


@pytest.mark.parametrize(("ref", "expected"), [
    ("images:alpine/3.19", ("images", "alpine/3.19")),
    ("ubuntu:", ("ubuntu", "")),
    ("alpine", ("dflt", "alpine")),
    ("local:busybox", ("local", "busybox")),
    ("images:d2f4d8cc3f1a", ("images", "d2f4d8cc3f1a")),
])
def test_split_ref(ref: str, expected: tuple[str, str]) -> None:
    assert split_ref(ref, "dflt") == expected


@pytest.mark.parametrize("make", ["cut", "binary", "shape", "entry", "default", "mirrors",
                                  "directory", "symlink"])
def test_an_unreadable_remote_list_is_a_corrupt_record_and_never_written_over(
        remotes: Remotes, tmp_path: Path, make: str) -> None:
    """``remotes.yaml`` that is no record, or has one part of another shape, is a
    ``CorruptRecord`` naming the file for every verb (no traceback of the parser), and no
    change writes over it: a rewrite would drop what could not be read (a remote the user
    added and mistyped by hand)."""
    from lxdlib.errors import CorruptRecord
    remotes.add("mine", "https://example.com/streams", protocol="simplestreams")
    path = remotes.path
    path.unlink()
    text = {"cut": b'{"remotes": {', "binary": b"\xff\xfe\x00", "shape": b"[1]",
            "entry": b'{"remotes": {"mine": 5, "other": {"addr": "https://e.com"}}}',
            "default": b'{"default-remote": [1]}', "mirrors": b'{"mirrors": [1]}'}.get(make)
    if text is not None:
        path.write_bytes(text)
    elif make == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "elsewhere.yaml")
        (tmp_path / "elsewhere.yaml").write_text("{}")
    for verb in (remotes.list, lambda: remotes.get("mine"), lambda: remotes.default,
                 lambda: remotes.add("new", "https://example.org/s", protocol="simplestreams"),
                 lambda: remotes.remove("mine"), lambda: remotes.switch("local")):
        with pytest.raises(CorruptRecord, match=r"remotes\.yaml"):
            verb()
    assert path.is_dir() or path.is_symlink() or path.read_bytes() == text
