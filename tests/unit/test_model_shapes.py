"""One shape for every collection and every model (``lxdlib.model``), the public names, the exec
errors, and the process-tree kill behind exec's timeout: what needs no container."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib import proctree
from lxdlib.errors import ExecError, ExecTimeout, LxdlibError, NotFound, Timeout
from lxdlib.execresult import ExecResult

COLLECTIONS = ["Instances", "Images", "Profiles", "Networks", "Pools", "Volumes", "Snapshots"]
COLLECTION_API = ["get", "__getitem__", "__contains__", "__iter__", "__len__", "create", "list",
                  "names", "_ipython_key_completions_", "__repr__", "_repr_html_"]

# model -> attributes that must be read-only properties (read from disk when asked)
MODELS: dict[str, list[str]] = {
    "Instance": ["state", "status", "config", "devices", "profiles", "description",
                 "created_at", "expanded_config", "exists"],
    "Image": ["name", "fingerprint", "aliases", "properties", "architecture", "size", "public",
              "auto_update", "cached", "uploaded_at", "expires_at", "exists"],
    "Profile": ["name", "config", "devices", "description", "used_by", "exists"],
    "Network": ["name", "config", "description", "type", "managed", "used_by", "exists"],
    "Pool": ["name", "driver", "config", "description", "used_by", "volumes", "exists"],
    "Volume": ["name", "pool", "key", "config", "description", "used_by", "path", "exists"],
    "Snapshot": ["name", "instance", "created_at", "expires_at", "stateful", "description",
                 "config", "devices", "profiles", "exists"],
}
MODEL_API = ["record", "update", "delete", "__repr__", "_repr_html_"]


@pytest.mark.parametrize("name", COLLECTIONS)
def test_every_collection_has_the_one_shape(name: str) -> None:
    cls = getattr(lxdlib, name)
    missing = [m for m in COLLECTION_API if not callable(getattr(cls, m, None))]
    assert not missing, f"{name} lacks {missing}"
    assert name in lxdlib.__all__


@pytest.mark.parametrize(("name", "attributes"), MODELS.items())
def test_every_model_has_the_one_shape(name: str, attributes: list[str]) -> None:
    cls = getattr(lxdlib, name)
    missing = [m for m in MODEL_API if not callable(getattr(cls, m, None))]
    assert not missing, f"{name} lacks {missing}"
    for attr in attributes:
        prop = getattr(cls, attr, None)
        assert isinstance(prop, property), f"{name}.{attr} is not a property"
        assert prop.fset is None, f"{name}.{attr} can be assigned"
    assert name in lxdlib.__all__


def test_public_names_resolve_and_import_stays_cheap() -> None:
    for name in lxdlib.__all__:
        assert getattr(lxdlib, name).__name__ == name
    assert lxdlib.Instance.__module__ == "lxdlib.instances"
    code = "import sys, lxdlib; print(sorted(m for m in sys.modules if m.startswith('lxdlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out.replace("'", '"'))
    assert loaded == ["lxdlib", "lxdlib.errors", "lxdlib.version"], loaded


@pytest.mark.parametrize("create", [None, False])
def test_host_refuses_a_named_root_that_does_not_exist(tmp_path: Path,
                                                       create: bool | None) -> None:
    gone = tmp_path / "nope"
    with pytest.raises(lxdlib.NotFound, match="nope"):
        lxdlib.Host(gone, create=create)
    assert not gone.exists()


def test_host_makes_a_named_root_only_when_asked(tmp_path: Path) -> None:
    made = tmp_path / "made"
    lxdlib.Host(made, create=True)
    assert made.is_dir()
    lxdlib.Host(made)  # exists now: opened as it is


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "shown"), [
    (["sh", "-c", "exit 2"], "sh -c 'exit 2'"),
    ("echo hi", "echo hi"),
])
def test_exec_error_names_the_instance_and_the_command(command: Any, shown: str) -> None:
    err = ExecError(ExecResult(2, b"", b"it broke\n"), "web", command)
    assert str(err) == f"command {shown!r} in instance 'web' exited with status 2: it broke"
    assert isinstance(err, lxdlib.LXCError) and err.result.returncode == 2
    from lxdlib import runtime
    assert runtime.ExecError is ExecError  # still importable from where it was


def test_exec_result_check_raises_exec_error() -> None:
    with pytest.raises(ExecError, match=r"status 1$"):
        ExecResult(1, b"", b"").check()
    assert ExecResult(0, b"x", b"").check().text == "x"


@pytest.mark.parametrize("catch", [Timeout, TimeoutError, LxdlibError, ExecTimeout])
def test_exec_timeout_is_a_timeout_for_every_way_of_catching_it(catch: type) -> None:
    with pytest.raises(catch) as info:
        raise ExecTimeout(ExecResult(137, b"so far", b""), "web", ["sleep", "60"], 1.5)
    err = info.value
    assert str(err) == "command 'sleep 60' in instance 'web' ran longer than 1.5s and was killed"
    assert err.result.stdout == b"so far" and err.timeout == 1.5 and err.instance == "web"


# -- the process tree an exec timeout kills -------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _assert_killed_with(p: subprocess.Popen[bytes], tree: list[int]) -> None:
    """``kill_tree`` of ``p`` ends it (SIGKILL) and, within 10 s, every process of ``tree``."""
    proctree.kill_tree(p.pid)
    assert p.wait(timeout=10) == -9
    deadline = time.monotonic() + 10
    while any(_alive(q) for q in tree) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [q for q in tree if _alive(q)]


def test_kill_tree_ends_the_command_and_what_it_started() -> None:
    p = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 61 & (sleep 62; true) & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(proctree.descendants(p.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        tree = proctree.descendants(p.pid)
        assert len(tree) >= 4, tree  # three sleeps and the subshell
        _assert_killed_with(p, tree)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_kill_tree_never_signals_a_pid_that_is_not_in_the_tree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pid read from /proc as a descendant may be another process's by the time it is
    signalled (the first one ended, the kernel reused its pid): here /proc is made to report
    such a pid, a process outside the tree (a child of this test), beside the real ones."""
    p = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while not proctree.descendants(p.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        real = proctree.descendants
        monkeypatch.setattr(proctree, "descendants",
                            lambda pid: [bystander.pid, *real(pid)])
        _assert_killed_with(p, real(p.pid))
        assert bystander.poll() is None and _state(bystander.pid) in ("S", "R")  # not stopped
    finally:
        for proc in (p, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- collections and models on a root without containers ------------------------------------------
@pytest.fixture
def host(tmp_path: Path) -> lxdlib.Host:
    return lxdlib.Host(tmp_path / "root", create=True)


@pytest.mark.parametrize(("collection", "missing"), [
    ("instances", "c9"), ("profiles", "p9"), ("networks", "n9"), ("pools", "pool9"),
    ("volumes", "pool9/v9"), ("images", "img9"),
])
def test_an_empty_collection(host: lxdlib.Host, collection: str, missing: str) -> None:
    things = getattr(host, collection)
    assert len(things) == 0 and list(things) == [] and things.names() == []
    assert things.list() == [] and things._ipython_key_completions_() == []
    assert missing not in things and 42 not in things
    with pytest.raises(NotFound):
        things[missing]
    with pytest.raises(NotFound):
        things.get(missing)
    assert type(things).__name__ in repr(things)
    assert things._repr_html_().startswith("<table")


def test_profiles_collection_and_live_model(host: lxdlib.Host, tmp_path: Path) -> None:
    p = host.profiles.create("web", {"user.a": "1"}, {}, "first")
    assert isinstance(p, lxdlib.Profile) and p == host.profiles["web"] == host.profiles.get("web")
    assert "web" in host.profiles and "../web" not in host.profiles and "x/y" not in host.profiles
    assert host.profiles.names() == ["web"] and len(host.profiles) == 1
    assert [x.name for x in host.profiles] == ["web"] == host.profiles._ipython_key_completions_()
    assert repr(p) == "<Profile 'web'>" and "<table" in p._repr_html_()
    # another process (here: another Host on the same root) changes it: the model sees it
    lxdlib.Host(host.paths.root).profiles["web"].update(config={"user.b": "2"},
                                                         description="second")
    assert p.config == {"user.b": "2"} and p.description == "second"
    assert p.record().to_dict() == p.to_dict() == {
        "name": "web", "description": "second", "config": {"user.b": "2"}, "devices": {},
        "used_by": []}
    p.set_config("user.c", "3")
    p.unset_config("user.b")
    assert p.config == {"user.c": "3"} and p.used_by == []
    moved = p.rename("app")
    assert moved.name == "app" and not p.exists and moved.exists
    with pytest.raises(NotFound):
        p.config  # noqa: B018
    moved.delete()
    assert len(host.profiles) == 0
    with pytest.raises(lxdlib.InvalidArgument):
        host.profiles.create("default").delete()


@pytest.mark.skipif(os.geteuid() != 0, reason="a dir pool's volumes are owned by root")
def test_pools_and_volumes(host: lxdlib.Host) -> None:
    pool = host.pools.create("p1", "dir", description="scratch")
    assert isinstance(pool, lxdlib.Pool) and pool == host.pools["p1"] and "p1" in host.pools
    assert pool.driver == "dir" and pool.description == "scratch" and pool.used_by == []
    pool.update(description="changed")
    assert host.pools["p1"].description == "changed"
    with pytest.raises(lxdlib.InvalidConfig):
        pool.update(config={"source": "/elsewhere"})
    assert "<table" in pool._repr_html_() and "<table" in host.pools._repr_html_()

    vol = host.volumes.create("p1/data", {"user.k": "v"}, "d")
    assert isinstance(vol, lxdlib.Volume) and vol.key == "p1/data"
    assert vol == host.volumes["p1/data"] == pool.volumes["data"]
    assert "p1/data" in host.volumes and "data" in pool.volumes and "data" not in host.volumes
    assert host.volumes.names() == ["p1/data"] and pool.volumes.names() == ["data"]
    assert len(host.volumes) == 1 and [v.name for v in pool.volumes] == ["data"]
    with pytest.raises(lxdlib.InvalidName, match="<pool>/<name>"):
        host.volumes["data"]
    with pytest.raises(NotFound, match="in storage pool 'p1'"):
        host.volumes["p1/nope"]
    assert vol.path.is_dir() and vol.description == "d" and vol.used_by == []
    vol.update(config={"user.k": "w"}, description="e")
    vol.set_config("user.x", "y")
    assert pool.volumes["data"].config == {"user.k": "w", "user.x": "y"}
    assert vol.record()["description"] == "e" == vol.to_dict()["description"]
    assert repr(vol) == "<Volume p1/data>" and "<table" in vol._repr_html_()
    assert "<table" in host.volumes._repr_html_()
    with pytest.raises(lxdlib.InUse):
        pool.delete()  # a custom volume keeps the pool
    vol.delete()
    assert not vol.exists and len(pool.volumes) == 0
    pool.delete()
    assert "p1" not in host.pools and not pool.exists


def _tiny_image(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        meta = b"architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: tiny\n"
        info = tarfile.TarInfo("metadata.yaml")
        info.size = len(meta)
        tf.addfile(info, io.BytesIO(meta))
        d = tarfile.TarInfo("rootfs")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tf.addfile(d)
    return path


def test_images_collection_and_live_model(host: lxdlib.Host, tmp_path: Path) -> None:
    img = host.images.create(_tiny_image(tmp_path / "tiny.tar.gz"), aliases=["tiny"])
    assert isinstance(img, lxdlib.Image) and img == host.images["tiny"]
    assert img == host.images[img.fingerprint[:12]] and img.name == img.fingerprint
    assert "tiny" in host.images and img.name in host.images and "nope" not in host.images
    assert host.images.names() == [img.fingerprint] and len(host.images) == 1
    assert host.images._ipython_key_completions_() == ["tiny"]
    assert img.properties["os"] == "tiny" and not img.public
    img.update(public=True, expires_at=dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    img.set_properties({"extra": "1"})
    assert img.public and img.properties["extra"] == "1" and img.expires_at is not None
    assert img.record().public and img.to_dict()["public"] is True
    assert repr(img) == f"<Image {img.fingerprint[:12]} tiny>" and "<table" in img._repr_html_()
    img.delete()
    assert not img.exists and len(host.images) == 0
    with pytest.raises(NotFound):
        img.public  # noqa: B018


def test_models_compare_by_identity_not_content(host: lxdlib.Host) -> None:
    a = host.profiles.create("a")
    other_root = lxdlib.Host(Path(str(host.paths.root) + "-2"), create=True)
    b = other_root.profiles.create("a")
    assert a != b and len({a, host.profiles["a"], b}) == 2
    assert a != "a" and os.fspath(host.paths.root) in repr(host)
