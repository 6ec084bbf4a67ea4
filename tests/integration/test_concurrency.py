"""Concurrent changes to one object all land (issue 10, case 6).

N processes (the real ``lxdlib`` command, one root via ``LXDLIB_ROOT``) and N threads of one
process each make M changes to one instance, one profile, one network, one image and one custom
volume at the same time. Every read-modify-write must read the record under the object's lock,
so afterwards all N*M changes are in the record, and on a running instance the record and what
is mounted inside agree.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import lxdlib

pytestmark = pytest.mark.root

N, M = 8, 3
LXDLIB = str(Path(sys.executable).parent / "lxdlib")


def in_processes(host: lxdlib.Host, argv: Callable[[int, int], list[str]], n: int = N,
                 m: int = M) -> None:
    """Start ``n`` shells at once; shell ``i`` runs ``lxdlib <argv(i, j)>`` for j < ``m``."""
    env = {**os.environ, "LXDLIB_ROOT": str(host.paths.root)}
    procs = []
    for i in range(n):
        script = " && ".join(" ".join(["'" + LXDLIB + "'", *(f"'{a}'" for a in argv(i, j))])
                             for j in range(m))
        procs.append(subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            errors.append(err.strip())
    assert not errors, errors


def in_threads(work: Callable[[int, int], None], n: int = N, m: int = M) -> None:
    """``n`` threads at once; thread ``i`` calls ``work(i, j)`` for j < ``m``."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait()
            for j in range(m):
                work(i, j)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors


def expected(prefix: str, n: int = N, m: int = M) -> dict[str, str]:
    return {f"user.{prefix}{i}.{j}": f"{i}-{j}" for i in range(n) for j in range(m)}


def user_keys(cfg: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in cfg.items() if k.startswith(f"user.{prefix}")}


def test_instance_config_from_processes_and_threads(host: lxdlib.Host) -> None:
    c = host.create("busybox", "cc")
    in_processes(host, lambda i, j: ["config", "set", "cc", f"user.p{i}.{j}", f"{i}-{j}"])
    in_threads(lambda i, j: c.set_config(f"user.t{i}.{j}", f"{i}-{j}"))
    cfg = c.config
    assert user_keys(cfg, "p") == expected("p")
    assert user_keys(cfg, "t") == expected("t")
    # unsetting in parallel loses nothing either
    in_threads(lambda i, j: c.unset_config(f"user.t{i}.0"), m=1)
    assert user_keys(c.config, "t") == {k: v for k, v in expected("t").items()
                                         if not k.endswith(".0")}
    assert user_keys(c.config, "p") == expected("p")


def test_parallel_disk_adds_on_a_running_instance(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "cd")
    srcs = []
    for i in range(6):
        d = host.paths.root / f"src{i}"
        d.mkdir(mode=0o755)
        (d / "id").write_text(f"{i}\n")
        srcs.append(d)
    in_processes(host, lambda i, j: ["config", "device", "add", "cd", f"d{i}", "disk",
                                     f"source={srcs[i]}", f"path=/mnt/d{i}"], n=6, m=1)
    devs = c.devices
    assert {f"d{i}" for i in range(6)} <= set(devs)
    mounts = c.exec(["cat", "/proc/mounts"], check=True).text
    for i in range(6):
        assert f" /mnt/d{i} " in mounts
        assert c.exec(["cat", f"/mnt/d{i}/id"], check=True).text == f"{i}\n"
    # and six parallel removals from threads: none left recorded, none left mounted
    in_threads(lambda i, j: c.modify(lambda rec: rec.devices.pop(f"d{i}")), n=6, m=1)
    assert not {f"d{i}" for i in range(6)} & set(c.devices)
    mounts = c.exec(["cat", "/proc/mounts"], check=True).text
    assert not any(f" /mnt/d{i} " in mounts for i in range(6))


def test_profile_and_instance_devices_at_once_on_a_running_instance(host: lxdlib.Host) -> None:
    """Disks added to the instance and to its profile at the same time: all are recorded in
    the expanded view and all are mounted inside."""
    host.profiles.create("pd")
    c = host.launch("busybox", "cp", profiles=["default", "pd"])
    srcs = []
    for i in range(6):
        d = host.paths.root / f"src{i}"
        d.mkdir(mode=0o755)
        (d / "id").write_text(f"{i}\n")
        srcs.append(d)

    def add(i: int, j: int) -> None:
        dev = {"type": "disk", "source": str(srcs[i]), "path": f"/mnt/d{i}"}
        if i % 2:
            c.modify(lambda rec: rec.devices.update({f"d{i}": dev}))
        else:
            host.modify_profile("pd", lambda p: p.devices.update({f"d{i}": dev}))
    in_threads(add, n=6, m=1)
    assert {f"d{i}" for i in range(6)} <= set(c.expanded_devices)
    mounts = c.exec(["cat", "/proc/mounts"], check=True).text
    for i in range(6):
        assert f" /mnt/d{i} " in mounts
        assert c.exec(["cat", f"/mnt/d{i}/id"], check=True).text == f"{i}\n"


def test_profile_from_processes_and_threads(host: lxdlib.Host) -> None:
    host.profiles.create("pp")
    in_processes(host, lambda i, j: ["profile", "set", "pp", f"user.p{i}.{j}", f"{i}-{j}"])
    assert user_keys(host.profiles.get("pp").config, "p") == expected("p")

    def set_key(i: int, j: int) -> None:
        host.modify_profile("pp", lambda p: p.config.update({f"user.t{i}.{j}": f"{i}-{j}"}))
    in_threads(set_key)
    in_processes(host, lambda i, j: ["profile", "device", "add", "pp", f"u{i}", "none"], m=1)
    p = host.profiles.get("pp")
    assert user_keys(p.config, "p") == expected("p")
    assert user_keys(p.config, "t") == expected("t")
    assert set(p.devices) == {f"u{i}" for i in range(N)}


def test_network_from_processes_and_threads(host: lxdlib.Host) -> None:
    name = "lk2" + secrets.token_hex(3)
    host.networks.create(name, {"ipv4.address": "none", "ipv6.address": "none"})
    in_processes(host, lambda i, j: ["network", "set", name, f"user.p{i}.{j}", f"{i}-{j}"])
    assert user_keys(host.networks.get(name)["config"], "p") == expected("p")
    in_threads(lambda i, j: host.networks.modify(
        name, lambda cfg: cfg.update({f"user.t{i}.{j}": f"{i}-{j}",
                                      **({"bridge.mtu": "1400"} if (i, j) == (0, 0) else {})})))
    cfg = host.networks.get(name)["config"]
    assert user_keys(cfg, "p") == expected("p")
    assert user_keys(cfg, "t") == expected("t")
    assert cfg["bridge.mtu"] == "1400"  # record and live state agree
    assert Path(f"/sys/class/net/{name}/mtu").read_text().strip() == "1400"


def test_image_properties_aliases_and_volume(host: lxdlib.Host) -> None:
    fp = host.images.get("busybox").fingerprint
    in_processes(host, lambda i, j: ["image", "set-property", "busybox", f"p{i}.{j}",
                                     f"{i}-{j}"])
    in_threads(lambda i, j: host.images.store.alias_create(f"a{i}.{j}", fp))
    props = host.images.get("busybox").properties
    assert {k: v for k, v in props.items() if k.startswith("p")} == {
        f"p{i}.{j}": f"{i}-{j}" for i in range(N) for j in range(M)}
    assert {f"a{i}.{j}" for i in range(N) for j in range(M)} <= set(host.images.store.aliases())

    vol = host.volumes.create("default/vv")
    in_processes(host, lambda i, j: ["storage", "volume", "set", "default", "vv",
                                     f"user.p{i}.{j}", f"{i}-{j}"])
    in_threads(lambda i, j: vol.set_config(f"user.t{i}.{j}", f"{i}-{j}"))
    cfg = host.pools["default"].volumes["vv"].config
    assert user_keys(cfg, "p") == expected("p")
    assert user_keys(cfg, "t") == expected("t")


def test_isolated_creates_at_once_get_their_own_id_blocks(host: lxdlib.Host) -> None:
    """Two isolated instances made at once (here: a second ``lxdlib init`` run while the first
    create is about to write its record) never share an id block: each chooses its block
    before its record says so, so the choice must count the other's."""
    import lxdlib.record as recmod
    iso = {"security.idmap.isolated": "true"}
    env = {**os.environ, "LXDLIB_ROOT": str(host.paths.root)}
    orig = recmod.prepare_save
    others: list[subprocess.CompletedProcess[str]] = []

    # a new record is written (prepare_save) before it is named: the other create runs then
    def prepare_save(paths: object, rec: recmod.InstanceRecord) -> recmod.PreparedSave:
        if rec.name in ("ia", "ic") and not os.path.exists(host.paths.instance_record(rec.name)):
            other = "ib" if rec.name == "ia" else "id"
            others.append(subprocess.run([LXDLIB, "init", "busybox", other, "-c",
                                          "security.idmap.isolated=true"], env=env,
                                         capture_output=True, text=True, timeout=120))
        return orig(paths, rec)  # type: ignore[arg-type]

    recmod.prepare_save = prepare_save  # type: ignore[assignment]
    try:
        host.create("busybox", "ia", config=iso)
        host.copy("ia", "ic")  # a copy chooses a block too
    finally:
        recmod.prepare_save = orig
    assert [p.returncode for p in others] == [0, 0], [p.stderr for p in others]
    blocks = {n: int(host.instances.get(n).config["volatile.idmap.base"])
              for n in ("ia", "ib", "ic", "id")}
    assert len(set(blocks.values())) == 4, blocks
    assert host.instances.get("ia").config["volatile.idmap.base"] != str(
        host.ctx.facts().idmap.base)
    # what liblxc is given agrees with the records
    for n, base in blocks.items():
        assert f"lxc.idmap = u 0 {base} 65536" in (host.paths.instance_dir(n) / "config"
                                                   ).read_text()


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "pause", "resume"])
def test_lifecycle_verb_on_an_instance_gone_meanwhile_is_not_found(host: lxdlib.Host,
                                                                   verb: str) -> None:
    """A verb whose instance another process deleted (or renamed, or moved) after the caller
    looked it up, before the verb took its lock, says the instance is not found: not a stray
    ``FileNotFoundError`` (start) or that the instance is not running (liblxc's view of a
    name without a directory), and it leaves nothing under that name."""
    c = host.create("busybox", "cg")
    other = lxdlib.Host(host.paths.root)
    other.instances.get("cg").rename("cg2")
    with pytest.raises(lxdlib.errors.NotFound):
        getattr(c, verb)()
    assert not host.paths.instance_dir("cg").exists()
    assert other.instances.get("cg2").state == "STOPPED"


def test_profile_edit_while_a_running_instance_takes_it_on(host: lxdlib.Host) -> None:
    """``profile set`` of a profile while a running instance is given it (``profile add``):
    here the edit runs while the add is about to save the record that names the profile.
    The instance runs with the profile's new content — in its liblxc config and in its
    cgroup — never with the content the add read before the edit."""
    import lxdlib.record as recmod
    from lxdlib import runtime
    host.profiles.create("pe")
    c = host.launch("busybox", "ce")
    env = {**os.environ, "LXDLIB_ROOT": str(host.paths.root)}
    orig = recmod.save
    edits: list[subprocess.Popen[str]] = []

    def save(paths: object, rec: recmod.InstanceRecord, *a: object, **k: object) -> None:
        if rec.name == "ce" and "pe" in rec.profiles and not edits:
            p = subprocess.Popen([LXDLIB, "profile", "set", "pe", "limits.processes", "123"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            edits.append(p)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=3)  # done at once unless it waits for this change
        orig(paths, rec, *a, **k)  # type: ignore[arg-type]

    recmod.save = save  # type: ignore[assignment]
    try:
        c.modify(lambda rec: rec.profiles.append("pe"))
    finally:
        recmod.save = orig
        for p in edits:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    assert edits
    assert host.profiles.get("pe").config["limits.processes"] == "123"
    assert "lxc.cgroup.pids.max = 123" in (host.paths.instance_dir("ce") / "config").read_text()
    assert runtime.cgroup_get(c.handle(), "pids.max").strip() == "123"


def test_isolated_create_beside_a_rename_of_an_isolated_instance(host: lxdlib.Host) -> None:
    """An isolated instance renamed while another isolated create reads the records for a
    free block (here: between the listing and the reading of that record) keeps its block
    to itself: the vanished record is looked for again, under its new name."""
    import lxdlib.record as recmod
    host.create("busybox", "ra", config={"security.idmap.isolated": "true"})
    env = {**os.environ, "LXDLIB_ROOT": str(host.paths.root)}
    orig = recmod.names
    renames: list[subprocess.CompletedProcess[str]] = []

    def names(paths: object) -> list[str]:
        listed = orig(paths)  # type: ignore[arg-type]
        if not renames and sys._getframe(1).f_code.co_name in ("choose_idmap",
                                                               "_recorded_idmaps"):
            renames.append(subprocess.run([LXDLIB, "rename", "ra", "rb"], env=env,
                                          capture_output=True, text=True, timeout=120))
        return listed

    recmod.names = names  # type: ignore[assignment]
    try:
        host.create("busybox", "rc", config={"security.idmap.isolated": "true"})
    finally:
        recmod.names = orig
    assert [r.returncode for r in renames] == [0], [r.stderr for r in renames]
    bases = {n: host.instances.get(n).config["volatile.idmap.base"] for n in ("rb", "rc")}
    assert bases["rb"] != bases["rc"], bases
