"""A profile, network or volume deleted (or renamed) while an instance takes it on.

An instance change checks that what it names exists under the instance's lock only; the delete
holds the object's lock. The window between the instance's check and its record's save is
widened here: the save (``record.save``, patched in this process) starts the competing
``lxdlib`` delete in a subprocess and lets the save go on only once the delete has withdrawn its
object (or finished, as it did before the fix). Either the change or the delete must lose:
never an instance naming something that no longer exists.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

import lxdlib
import lxdlib.record as recmod
from tests.integration import invariants

pytestmark = pytest.mark.root

LXDLIB = str(Path(sys.executable).parent / "lxdlib")


def _run(host: lxdlib.Host, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LXDLIB, *argv], env={**os.environ, "LXDLIB_ROOT":
                                                str(host.paths.root), **env},
                          capture_output=True, text=True, timeout=120)


@contextmanager
def _racing(host: lxdlib.Host, when: Callable[[recmod.InstanceRecord], bool],
            argv: list[str], withdrawn: Callable[[], bool], patience: float = 60
            ) -> Iterator[list[tuple[int, str]]]:
    """While the body runs, the first instance record save that ``when`` picks starts
    ``lxdlib <argv>`` and waits until ``withdrawn()`` (the delete took its object away and now
    waits for this change) or the command ended, at most ``patience`` seconds (a change that
    holds the object's lock keeps the delete from withdrawing it at all). Yields the
    command's (returncode, stderr), there once the body is done."""
    orig, orig_prepare = recmod.save, recmod.prepare_save
    procs: list[subprocess.Popen[str]] = []

    def race(rec: recmod.InstanceRecord) -> None:
        if not procs and when(rec):
            p = subprocess.Popen([LXDLIB, *argv], env={**os.environ, "LXDLIB_ROOT":
                                                       str(host.paths.root)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            deadline = time.monotonic() + patience
            while p.poll() is None and not withdrawn() and time.monotonic() < deadline:
                time.sleep(0.005)

    def save(paths: object, rec: recmod.InstanceRecord, *a: object, **k: object) -> None:
        race(rec)
        orig(paths, rec, *a, **k)  # type: ignore[arg-type]

    # a new instance's record is written before it is named (create, copy)
    def prepare_save(paths: object, rec: recmod.InstanceRecord) -> recmod.PreparedSave:
        race(rec)
        return orig_prepare(paths, rec)  # type: ignore[arg-type]

    recmod.save = save  # type: ignore[assignment]
    recmod.prepare_save = prepare_save  # type: ignore[assignment]
    results: list[tuple[int, str]] = []
    try:
        yield results
    finally:
        recmod.save, recmod.prepare_save = orig, orig_prepare
        for p in procs:
            _, err = p.communicate(timeout=120)
            results.append((p.returncode, err))


def _away(host: lxdlib.Host, directory: Path, name: str) -> Callable[[], bool]:
    return lambda: any(e.startswith(f".{name}.") and e.endswith(".away")
                       for e in os.listdir(directory))


# -- profiles --------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["delete", "rename"])
def test_profile_delete_or_rename_loses_to_profile_add(host: lxdlib.Host, verb: str) -> None:
    c = host.create("busybox", "pa")
    host.profiles.create("px", {"user.x": "1"})
    argv = ["profile", "delete", "px"] if verb == "delete" else ["profile", "rename", "px", "py"]
    # the add holds px's lock (it takes the locks of the profiles it adds): the delete waits
    # for it rather than withdrawing px, and then finds pa using it
    with _racing(host, lambda rec: "px" in rec.profiles, argv,
                 _away(host, host.paths.profiles, "px"), patience=3) as procs:
        c.modify(lambda r: r.profiles.append("px"))  # = `lxdlib profile add pa px`
    assert procs and procs[0][0] != 0, "the delete won while the instance took px on"
    assert "in use" in procs[0][1].lower()
    fresh = lxdlib.Host(host.paths.root)
    assert "px" in fresh.profiles.names() and "py" not in fresh.profiles.names()
    assert fresh.instances["pa"].profiles == ["default", "px"]
    assert fresh.instances["pa"].expanded_config["user.x"] == "1"
    invariants.check(fresh)


def test_profile_delete_loses_to_launch_with_it(host: lxdlib.Host) -> None:
    host.profiles.create("pl", {"user.l": "1"})
    with _racing(host, lambda rec: "pl" in rec.profiles, ["profile", "delete", "pl"],
                 _away(host, host.paths.profiles, "pl")) as procs:
        host.create("busybox", "pb", profiles=["default", "pl"])  # = `launch -p pl`
    assert procs and procs[0][0] != 0, procs
    assert "pl" in lxdlib.Host(host.paths.root).profiles.names()


def test_instance_naming_a_missing_profile_stays_repairable(host: lxdlib.Host) -> None:
    """Defence in depth: a record naming a profile that is gone (deleted by hand, or by an
    older version in the race above) can still drop it, and be deleted, with force or not."""
    host.profiles.create("pm", {"user.m": "1"})
    for name in ("pc", "pd", "pe"):
        host.create("busybox", name, profiles=["default", "pm"])
    (host.paths.profiles / "pm.yaml").unlink()
    r = _run(host, "config", "set", "pc", "user.y", "1")
    assert r.returncode != 0 and "profile remove pc pm" in r.stderr, r.stderr
    r = _run(host, "profile", "remove", "pc", "pm")
    assert r.returncode == 0, r.stderr
    assert host.instances["pc"].profiles == ["default"]
    host.instances["pc"].set_config("user.y", "1")
    r = _run(host, "profile", "assign", "pd", "default")
    assert r.returncode == 0, r.stderr
    for argv in (["delete", "pd"], ["delete", "-f", "pe"]):
        r = _run(host, *argv)
        assert r.returncode == 0, r.stderr
    assert host.instances.names() == ["pc"]
    invariants.check(host)


@pytest.mark.parametrize("point", ["profile.withdrawn", "profile.renamed"])
def test_profile_rename_killed_leaves_old_or_new(host: lxdlib.Host, point: str) -> None:
    host.profiles.create("ka", {"user.k": "1"})
    r = _run(host, "profile", "rename", "ka", "kb", LXDLIB_CRASHPOINT=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    fresh = lxdlib.Host(host.paths.root)
    r = _run(host, "recover")
    assert r.returncode == 0, r.stderr
    want = "ka" if point == "profile.withdrawn" else "kb"
    assert [n for n in fresh.profiles.names() if n.startswith("k")] == [want]
    assert sorted(os.listdir(host.paths.profiles)) == ["default.yaml", f"{want}.yaml"]
    assert fresh.profiles.get(want).to_dict()["name"] == want
    assert fresh.profiles.get(want).config == {"user.k": "1"}
    fresh.profiles.rename(want, "kc")  # and it goes on working
    assert "kc" in fresh.profiles.names()


def test_profile_delete_killed_puts_it_back(host: lxdlib.Host) -> None:
    host.profiles.create("kd", {"user.k": "1"})
    r = _run(host, "profile", "delete", "kd", LXDLIB_CRASHPOINT="profile.withdrawn")
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = _run(host, "recover")
    assert r.returncode == 0 and "profile:kd" in r.stdout, r.stdout + r.stderr
    assert "kd" in lxdlib.Host(host.paths.root).profiles.names()
    # the next look-up puts it back as well, without `recover`
    r = _run(host, "profile", "delete", "kd", LXDLIB_CRASHPOINT="profile.withdrawn")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert lxdlib.Host(host.paths.root).profiles.get("kd").config == {"user.k": "1"}
    lxdlib.Host(host.paths.root).profiles.delete("kd")
    assert "kd" not in lxdlib.Host(host.paths.root).profiles.names()


# -- networks --------------------------------------------------------------------------------------

def _network(host: lxdlib.Host) -> str:
    name = "lkd" + secrets.token_hex(3)
    host.networks.create(name, {"ipv4.address": "none", "ipv6.address": "none"})
    return name


@pytest.mark.parametrize("verb", ["delete", "rename"])
def test_network_delete_or_rename_loses_to_nic_add(host: lxdlib.Host, verb: str) -> None:
    net = _network(host)
    c = host.create("busybox", "na")
    nic = {"type": "nic", "network": net, "name": "eth9"}
    argv = ["network", "delete", net] if verb == "delete" else \
        ["network", "rename", net, net + "r"]
    try:
        with _racing(host, lambda rec: "eth9" in rec.devices, argv,
                     _away(host, host.paths.networks, net)) as procs:
            c.modify(lambda r: r.devices.__setitem__("eth9", nic))  # = `network attach`
        assert procs and procs[0][0] != 0, "the delete won while a nic was added"
        assert "in use" in procs[0][1].lower(), procs
        fresh = lxdlib.Host(host.paths.root)
        assert net in fresh.networks.names() and net + "r" not in fresh.networks.names()
        assert fresh.instances["na"].devices["eth9"] == nic
        fresh.instances["na"].start()  # its network is there to plug into
        fresh.instances["na"].stop(force=True)
    finally:
        c.delete(force=True)
        for n in (net, net + "r"):
            if n in host.networks.names():
                host.networks.delete(n)


def test_network_users_count_an_instance_whose_profile_is_gone(host: lxdlib.Host) -> None:
    net = _network(host)
    host.profiles.create("nm", {"user.m": "1"})
    host.create("busybox", "nb", profiles=["default", "nm"],
                devices={"eth0": {"type": "nic", "network": net, "name": "eth0"}})
    (host.paths.profiles / "nm.yaml").unlink()
    try:
        assert host.networks[net].used_by == ["nb"]
        r = _run(host, "network", "delete", net)
        assert r.returncode != 0 and "in use" in r.stderr.lower(), r.stderr
        assert net in host.networks.names()
    finally:
        host.instances["nb"].delete(force=True)
        host.networks.delete(net)


def test_network_delete_killed_puts_it_back(host: lxdlib.Host) -> None:
    net = _network(host)
    try:
        r = _run(host, "network", "delete", net, LXDLIB_CRASHPOINT="network.withdrawn")
        assert r.returncode == -signal.SIGKILL, r.stderr
        fresh = lxdlib.Host(host.paths.root)
        assert net in fresh.networks.names()  # the next listing puts it back
        assert not [e for e in os.listdir(host.paths.networks) if e.endswith(".away")]
    finally:
        if net in host.networks.names():
            host.networks.delete(net)
    assert net not in lxdlib.Host(host.paths.root).networks.names()


# -- volumes ---------------------------------------------------------------------------------------

def test_volume_delete_loses_to_attach(host: lxdlib.Host) -> None:
    host.volumes.create("default/va")
    host.create("busybox", "vc")
    with _racing(host, lambda rec: "dv" in rec.devices,
                 ["storage", "volume", "delete", "default", "va"],
                 _away(host, host.paths.root / "storage-volumes" / "default", "va")) as procs:
        host.volumes.get("default/va").attach("vc", "/mnt/v", "dv")
    assert procs and procs[0][0] != 0, "the delete won while the volume was attached"
    assert "in use" in procs[0][1].lower(), procs
    fresh = lxdlib.Host(host.paths.root)
    assert "default/va" in fresh.volumes.names()
    assert fresh.instances["vc"].devices["dv"]["source"] == "va"
    fresh.instances["vc"].start()  # its volume is there to mount
    fresh.instances["vc"].stop(force=True)
    invariants.check(fresh)


def test_volume_delete_killed_puts_it_back(host: lxdlib.Host) -> None:
    host.volumes.create("default/vk")
    path = host.volumes.get("default/vk").path
    (path / "keep").write_text("data\n")
    r = _run(host, "storage", "volume", "delete", "default", "vk",
             LXDLIB_CRASHPOINT="volume.withdrawn")
    assert r.returncode == -signal.SIGKILL, r.stderr
    fresh = lxdlib.Host(host.paths.root)
    assert "default/vk" in fresh.volumes.names()  # the listing put it back, data and all
    assert (fresh.volumes.get("default/vk").path / "keep").read_text() == "data\n"
    fresh.volumes.get("default/vk").delete()
    assert "default/vk" not in lxdlib.Host(host.paths.root).volumes.names()


# -- images ----------------------------------------------------------------------------------------

class _ImageDelete:
    """Called (from inside a launch), starts ``lxdlib image delete busybox`` once and waits
    until it ended or ``patience`` seconds passed (it may wait for a lock the launch holds)."""

    def __init__(self, host: lxdlib.Host, patience: float) -> None:
        self.host = host
        self.patience = patience
        self.proc: subprocess.Popen[str] | None = None

    def __call__(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen([LXDLIB, "image", "delete", "busybox"],
                                     env={**os.environ, "LXDLIB_ROOT": str(self.host.paths.root)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(self.patience)

    def check_gone(self) -> None:
        """The delete ran and ended well; the image and every volume of it are gone, nothing
        is half-made."""
        assert self.proc is not None, "the launch never reached the hook"
        _, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        fresh = lxdlib.Host(self.host.paths.root)
        assert "busybox" not in fresh.images
        assert fresh.pool("default").list_volumes("images") == []  # type: ignore[attr-defined]
        invariants.check(fresh)


def test_image_delete_during_the_unpack_of_a_launch(host: lxdlib.Host,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An image deleted by another process while a launch unpacked it into the pool: the
    delete pulled the file from under the unpack, and the launch failed with a bare
    ``FileNotFoundError`` ("No such file or directory"), no typed error. The unpack holds the
    image's lock now: the delete waits for it, then removes the new volume with the image; the
    launch either made its instance first or fails with ``NotFound`` of the image."""
    from lxdlib.imagestore import tarball
    delete = _ImageDelete(host, 3)
    real = tarball.unpack

    def unpack(*a: object, **k: object) -> None:
        delete()
        real(*a, **k)  # type: ignore[arg-type]
    monkeypatch.setattr(tarball, "unpack", unpack)
    try:
        host.create("busybox", "ic")
    except lxdlib.NotFound as e:
        assert e.kind == "image", e
    monkeypatch.undo()
    for inst in host.instances.list():
        inst.delete()  # made before the delete: an instance outlives its image, as in LXD
    delete.check_gone()


def test_image_delete_before_the_clone_of_a_launch(host: lxdlib.Host) -> None:
    """The image volume is in the pool already and the image is deleted (with the volume)
    between the launch's look-up and its clone: the launch failed with ``NotFound`` of an
    "image volume" (``lxdlib`` printed that sentence, not LXD's "Image not found"). It is the
    image's ``NotFound`` now, and nothing is left."""
    host.create("busybox", "ip").delete()  # the image's volume stays in the pool
    pool = host.pool("default")
    delete = _ImageDelete(host, 60)
    real = pool.create_instance_volume

    def clone(name: str, image: str | None = None) -> Path:
        delete()
        return real(name, image)
    pool.create_instance_volume = clone  # type: ignore[method-assign]
    try:
        with pytest.raises(lxdlib.NotFound) as err:
            host.create("busybox", "iq")
    finally:
        del pool.create_instance_volume
    assert err.value.kind == "image", err.value
    assert host.instances.names() == []
    delete.check_gone()
