"""disk devices against real containers: host paths (idmapped binds: ownership as seen inside and
as written back), read-only, recursive, a source the container's root could not reach, optional
and missing sources, hot-plug both ways, and custom volumes (create, attach, detach, in-use
refusal, delete) through the API and the CLI."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import lxdlib
import lxdlib.errors
from lxdlib import journal
from lxdlib.volumes import USERS_MAP
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons  # noqa: F401

pytestmark = pytest.mark.root


def owner(c: lxdlib.Instance, path: str) -> str:
    return c.exec(["stat", "-c", "%u:%g", path], check=True).text.strip()


@pytest.fixture
def src(host: lxdlib.Host) -> Path:
    """A host directory under the test root (removed with it), owned by host root."""
    d = host.paths.root / "src"
    d.mkdir(mode=0o755)
    (d / "hello").write_text("hi\n")
    return d


def test_host_path_disks(host: lxdlib.Host, src: Path) -> None:
    hidden = host.paths.root / "hidden" / "in"  # the container's root cannot search
    hidden.mkdir(parents=True)                   # "hidden": mounted by the hook
    hidden.parent.chmod(0o700)
    (hidden / "secret").write_text("s\n")
    nested = host.paths.root / "nested"  # a tmpfs below: flat binds go through the hook
    (nested / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "lxt", str(nested / "sub")],
                   check=True)
    (nested / "sub" / "inner").write_text("inner\n")
    c = host.launch("busybox", "c1", devices={
        "data": {"type": "disk", "source": str(src), "path": "/mnt/data", "shift": "true"},
        "ro": {"type": "disk", "source": str(src), "path": "/mnt/ro", "readonly": "true"},
        "rec": {"type": "disk", "source": str(nested), "path": "/mnt/rec", "recursive": "true",
                "shift": "true"},
        "flat": {"type": "disk", "source": str(nested), "path": "/mnt/flat"},
        "hid": {"type": "disk", "source": str(hidden), "path": "/srv/hidden", "shift": "true"},
        "opt": {"type": "disk", "source": str(src / "absent"), "path": "/mnt/opt",
                "required": "false"},
    })
    # shift=true: host root's files are the container root's; what it writes keeps its ids
    assert owner(c, "/mnt/data/hello") == "0:0"
    c.exec(["sh", "-c", "echo x > /mnt/data/by-root && "
                        "mkdir /mnt/data/u && chown 1000:1000 /mnt/data/u"], check=True)
    c.exec(["sh", "-c", "echo y > /mnt/data/u/by-1000"], user=1000, group=1000, check=True)
    st = os.stat(src / "by-root")
    assert (st.st_uid, st.st_gid) == (0, 0)
    st = os.stat(src / "u" / "by-1000")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert "idmapped" in c.exec(["grep", " /mnt/data ", "/proc/self/mountinfo"]).text

    r = c.exec(["sh", "-c", "echo z > /mnt/ro/nope"])
    assert r.returncode != 0 and "Read-only" in r.text + r.stderr.decode()
    assert owner(c, "/mnt/ro/hello") == "65534:65534"  # not shifted
    assert c.exec(["cat", "/mnt/rec/sub/inner"]).text == "inner\n"
    assert owner(c, "/mnt/rec/sub/inner") == "0:0"
    assert c.exec(["cat", "/mnt/flat/sub/inner"]).returncode != 0  # not recursive
    assert c.exec(["test", "-d", "/mnt/flat/sub"]).returncode == 0
    assert c.exec(["cat", "/srv/hidden/secret"]).text == "s\n"
    assert owner(c, "/srv/hidden/secret") == "0:0"
    assert c.exec(["test", "-e", "/mnt/opt"]).returncode != 0

    # the hook path and the liblxc path both hold across a restart
    c.restart(force=True)
    assert c.exec(["cat", "/srv/hidden/secret"]).text == "s\n"
    assert owner(c, "/mnt/data/hello") == "0:0"


def _check_unshifted(c: lxdlib.Instance, share: Path, inside: str, base: int) -> None:
    """A host directory bound without shift: host root's files are nobody's inside, the
    container's root is its mapped host uid there, and cannot make a setuid-root file."""
    assert owner(c, f"{inside}/hello") == "65534:65534"
    assert c.exec(["cat", f"{inside}/hello"]).text == "hi\n"
    assert c.exec(["sh", "-c", f"echo no >> {inside}/hello"]).returncode != 0  # host root's
    assert c.exec(["grep", f" {inside} ", "/proc/self/mountinfo"]).text.count("idmapped") == 0
    name = f"suid-{c.name}-{inside.rsplit('/', 1)[-1]}"
    c.exec(["sh", "-c", f"cp /bin/busybox {inside}/{name} && chown 0:0 {inside}/{name} && "
                        f"chmod 4755 {inside}/{name}"], check=True)
    st = os.stat(share / name)
    assert (st.st_uid, st.st_gid) == (base, base)  # the mapped root, never host root
    assert st.st_uid != 0
    assert st.st_mode & 0o4000  # the bit is kept: the file is setuid to the mapped root only
    c.exec(["sh", "-c", f"mkdir {inside}/u-{name} && chown 1000:1000 {inside}/u-{name}"],
           check=True)
    c.exec(["sh", "-c", f"echo y > {inside}/u-{name}/f"], user=1000, group=1000, check=True)
    st = os.stat(share / f"u-{name}" / "f")
    assert (st.st_uid, st.st_gid) == (base + 1000, base + 1000)


def test_host_path_disk_not_shifted_by_default(host: lxdlib.Host, src: Path) -> None:
    """Issue 10 case 3: without shift=true a shared host directory keeps host ids, at start (by
    liblxc and by the start-host hook) and on hot-plug."""
    src.chmod(0o777)  # writable for the container's mapped root, as a shared dir would be
    hidden = host.paths.root / "hidden" / "in"  # below a 0700 dir: mounted by the hook
    hidden.mkdir(parents=True)
    hidden.chmod(0o777)
    hidden.parent.chmod(0o700)
    (hidden / "hello").write_text("hi\n")
    nested = host.paths.root / "nested"  # recursive (and a propagation) still mount
    (nested / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "lxu", str(nested / "sub")],
                   check=True)
    (nested / "sub" / "inner").write_text("inner\n")
    base = host.facts().idmap.base
    c = host.launch("busybox", "c1", devices={
        "data": {"type": "disk", "source": str(src), "path": "/mnt/data"},
        "rec": {"type": "disk", "source": str(nested), "path": "/mnt/rec", "recursive": "true",
                "propagation": "rslave"},
        "hid": {"type": "disk", "source": str(hidden), "path": "/srv/hidden",
                "shift": "false"},
    })
    _check_unshifted(c, src, "/mnt/data", base)
    _check_unshifted(c, hidden, "/srv/hidden", base)
    assert c.exec(["cat", "/mnt/rec/sub/inner"]).text == "inner\n"
    assert owner(c, "/mnt/rec/sub/inner") == "65534:65534"
    assert c.exec(["sh", "-c", "echo x > /mnt/rec/new"]).returncode != 0  # host root's dir
    assert "idmapped" not in c.exec(["grep", " /mnt/rec", "/proc/self/mountinfo"]).text
    c.restart(force=True)  # both paths again at the next start
    assert owner(c, "/mnt/data/hello") == owner(c, "/srv/hidden/hello") == "65534:65534"
    c.update(devices={**c.devices, "hot": {"type": "disk", "source": str(src),
                                           "path": "/mnt/hot"}})
    _check_unshifted(c, src, "/mnt/hot", base)
    # shift=true on the live device switches to the idmapped bind
    c.update(devices={**c.devices, "hot": {"type": "disk", "source": str(src),
                                           "path": "/mnt/hot", "shift": "true"}})
    assert owner(c, "/mnt/hot/hello") == "0:0"
    assert "idmapped" in c.exec(["grep", " /mnt/hot ", "/proc/self/mountinfo"]).text
    # shift=true where no idmapped mount is possible is refused, not silently left unshifted
    before = c.devices
    with pytest.raises(lxdlib.StorageError, match="idmapped"):
        c.update(devices={**before, "proc": {"type": "disk", "source": "/proc/sys/kernel",
                                             "path": "/mnt/proc", "shift": "true"}})
    assert c.devices == before
    with pytest.raises(lxdlib.InvalidConfig, match="shift"):
        c.update(devices={**c.devices, "bad": {"type": "disk", "source": str(src),
                                               "path": "/mnt/bad", "shift": "maybe"}})


def _try_to_write(c: lxdlib.Instance, inside: str, is_dir: bool = True) -> None:
    """The container's root remounts ``inside`` read-write and writes through it."""
    target = f"{inside}/planted" if is_dir else inside
    out = c.exec(["sh", "-c", f"mount -o remount,bind,rw {inside}; echo rc=$?; "
                              f"echo pwned > {target}; echo wrote=$?"]).text
    assert "rc=0" not in out, f"{inside}: remounted read-write ({out!r})"
    assert "wrote=0" not in out, f"{inside}: written through ({out!r})"
    line = c.exec(["grep", f" {inside} ", "/proc/self/mountinfo"], check=True).text
    assert line.split()[5].split(",")[0] == "ro", line


def test_read_only_disk_cannot_be_made_writable_inside(host: lxdlib.Host, src: Path) -> None:
    """``readonly=true`` holds against the container's root, who owns its mount namespace and
    so may remount what it did not get locked: at start (a source others may reach, one they
    may not, a file, shifted), hot-plugged, and after a restart. Before,
    ``mount -o remount,bind,rw`` inside made each one writable (the shifted one as host root)."""
    src.chmod(0o777)  # others may write: only the mount's flag stands in the way
    (src / "hello").chmod(0o666)
    hidden = host.paths.root / "hidden" / "in"
    hidden.mkdir(parents=True)
    hidden.chmod(0o777)
    hidden.parent.chmod(0o700)
    afile = host.paths.root / "afile"
    afile.write_text("orig\n")
    afile.chmod(0o666)
    ro = {"type": "disk", "readonly": "true"}
    c = host.launch("busybox", "c1", devices={
        "plain": {**ro, "source": str(src), "path": "/mnt/plain"},
        "hid": {**ro, "source": str(hidden), "path": "/mnt/hid"},
        "file": {**ro, "source": str(afile), "path": "/mnt/file"},
        "shifted": {**ro, "source": str(src), "path": "/mnt/shifted", "shift": "true"},
    })

    def attempt_all(points: list[str]) -> None:
        for inside in points:
            _try_to_write(c, inside, is_dir=inside != "/mnt/file")
        assert sorted(p.name for p in src.iterdir()) == ["hello"]
        assert (src / "hello").read_text() == "hi\n"
        assert not list(hidden.iterdir())
        assert afile.read_text() == "orig\n"

    points = ["/mnt/plain", "/mnt/hid", "/mnt/file", "/mnt/shifted"]
    attempt_all(points)
    c.update(devices={**c.devices, "hot": {**ro, "source": str(src), "path": "/mnt/hot"},
                      "hotf": {**ro, "source": str(afile), "path": "/mnt/hotf"}})
    _try_to_write(c, "/mnt/hot")
    _try_to_write(c, "/mnt/hotf", is_dir=False)
    c.restart(force=True)
    attempt_all([*points, "/mnt/hot"])
    # read-only still means readable, and the container may still take the mount away
    assert c.exec(["cat", "/mnt/plain/hello"]).text == "hi\n"
    c.exec(["umount", "/mnt/hot"], check=True)
    assert sorted(p.name for p in src.iterdir()) == ["hello"]


def test_mount_points_are_made_inside_whatever_the_container_planted(
        host: lxdlib.Host, src: Path) -> None:
    """The container's root makes the parents of its disks' mount points links to the
    world-writable ``/var/tmp`` (absolute, relative, through a chain); at the next start the
    mount points are made in its own rootfs, never on the host. Before, liblxc's ``create=dir``
    and ``create=file`` followed the links from the host's root: ``/var/tmp/<x>-d…`` and
    ``/var/tmp/<x>-f…`` appeared on the host, owned by the container's root (and the start
    failed)."""
    (src / "f").write_text("f\n")
    tag = f"lxdlib-planted-{secrets.token_hex(4)}"
    c = host.launch("busybox", "c1")
    try:
        c.exec(["sh", "-c", "mkdir -p /var/tmp /mnt && ln -s /var/tmp /mnt/abs && "
                            "ln -s ../../../../../var/tmp /mnt/rel && ln -s /mnt/abs /mnt/chain"],
               check=True)
        devices = {**c.devices}
        for link in ("abs", "rel", "chain"):
            devices[f"d{link}"] = {"type": "disk", "source": str(src),
                                   "path": f"/mnt/{link}/{tag}-d{link}"}
            devices[f"f{link}"] = {"type": "disk", "source": str(src / "f"),
                                   "path": f"/mnt/{link}/{tag}-f{link}"}
        c.update(devices=devices)  # hot-plugged: made inside
        c.stop(force=True)
        failed: lxdlib.LXCError | None = None
        try:
            c.start()  # the rootfs keeps the links: the mount points are needed again
        except lxdlib.LXCError as e:
            failed = e
        assert not list(Path("/var/tmp").glob(f"{tag}*"))  # nothing landed on the host
        assert failed is None
        listing = c.exec(["ls", "/var/tmp"], check=True).text.split()
        assert sorted(x.removeprefix(f"{tag}-") for x in listing if x.startswith(tag)) == [
            "dabs", "dchain", "drel", "fabs", "fchain", "frel"]
        assert c.exec(["cat", f"/var/tmp/{tag}-drel/hello", f"/mnt/chain/{tag}-fchain"]
                      ).text == "hi\nf\n"
    finally:
        for entry in Path("/var/tmp").glob(f"{tag}*"):
            (entry.rmdir if entry.is_dir() and not entry.is_symlink() else entry.unlink)()


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def test_a_mount_made_inside_reaches_no_host_path(host: lxdlib.Host) -> None:
    """The source of a disk sits on a shared mount, as every mount of a systemd host is; the
    container's root mounts a tmpfs below each of its disks of it (at start, hot-plugged, with
    no propagation, ``rslave`` and ``shared``). Nothing appears on the host. Before, the disk was
    a peer of the host's mount and the container's tmpfs covered the host's directory there.
    ``rslave`` still brings the host's later mounts in."""
    shared = host.paths.root / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "lxsh", str(shared)],
                   check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    for sub in ("a", "b", "c", "d", "host"):
        (shared / sub).mkdir(mode=0o777)
    c = host.launch("busybox", "c1", devices={
        "plain": {"type": "disk", "source": str(shared), "path": "/mnt/plain"},
        "slave": {"type": "disk", "source": str(shared), "path": "/mnt/slave",
                  "propagation": "rslave"},
    })
    c.update(devices={**c.devices,
                      "hot": {"type": "disk", "source": str(shared), "path": "/mnt/hot"},
                      "shr": {"type": "disk", "source": str(shared), "path": "/mnt/shr",
                              "propagation": "shared"}})
    for inside, sub in (("/mnt/plain", "a"), ("/mnt/slave", "b"), ("/mnt/hot", "c"),
                        ("/mnt/shr", "d")):
        c.exec(["mount", "-t", "tmpfs", "-o", "size=1m", "planted", f"{inside}/{sub}"],
               check=True)
        c.exec(["sh", "-c", f"echo planted > {inside}/{sub}/x"], check=True)
    assert _mounts_below(shared) == []
    assert not any((shared / sub / "x").exists() for sub in "abcd")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fromhost", str(shared / "host")],
                   check=True)
    (shared / "host" / "y").write_text("y\n")
    assert c.exec(["cat", "/mnt/slave/host/y"]).text == "y\n"  # host → instance still flows
    assert c.exec(["cat", "/mnt/plain/host/y"]).returncode != 0


def test_a_disk_keeps_what_the_host_covered(host: lxdlib.Host) -> None:
    """The source of a disk has a directory and a file with mounts over them, and a file of
    the host's below each. A recursive disk brings those mounts along, and the container's root
    may not unmount one (the kernel's rule for mounts a less privileged namespace is given); a
    disk that is not recursive shows an empty read-only directory and file there, which it may
    not unmount either. Before, ``umount`` inside uncovered the host's files of a recursive disk
    (hot-plugged), and a flat one showed them at once. The disk itself may still be
    unmounted."""
    src = host.paths.root / "covered"
    (src / "secret").mkdir(parents=True)
    (src / "secret" / "s").write_text("under the mount\n")
    (src / "secret" / "s").chmod(0o644)
    (src / "f").write_text("under the mount\n")
    (src / "f").chmod(0o644)
    (src / "open").mkdir()
    (src / "open" / "v").write_text("visible\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "lxcover", str(src / "secret")],
                   check=True)
    subprocess.run(["mount", "--bind", "/etc/hostname", str(src / "f")], check=True)
    rec = {"type": "disk", "source": str(src), "recursive": "true"}
    flat = {"type": "disk", "source": str(src)}
    c = host.launch("busybox", "c1", devices={"rec": {**rec, "path": "/mnt/rec"},
                                              "flat": {**flat, "path": "/mnt/flat"}})
    c.update(devices={**c.devices, "hrec": {**rec, "path": "/mnt/hrec"},
                      "hflat": {**flat, "path": "/mnt/hflat"}})
    for inside in ("/mnt/rec", "/mnt/hrec", "/mnt/flat", "/mnt/hflat"):
        out = c.exec(["sh", "-c", f"for m in secret f; do umount {inside}/$m; "
                                  f"umount -l {inside}/$m; done; "
                                  f"cat {inside}/secret/s {inside}/f"]).text
        assert "under the mount" not in out, inside
        assert c.exec(["cat", f"{inside}/open/v"]).text == "visible\n"
    assert c.exec(["sh", "-c", "echo x > /mnt/flat/f"]).returncode != 0
    assert c.exec(["ls", "/mnt/flat/secret"]).text == ""
    c.exec(["umount", "-l", "/mnt/hflat"], check=True)
    c.exec(["umount", "-l", "/mnt/hrec"], check=True)


def test_disk_hotplug_and_refusals(host: lxdlib.Host, src: Path) -> None:
    c = host.launch("busybox", "c1")
    devs = c.devices
    c.update(devices={**devs, "data": {"type": "disk", "source": str(src), "path": "/mnt/d",
                                       "shift": "true"}})
    assert c.exec(["cat", "/mnt/d/hello"]).text == "hi\n"
    assert owner(c, "/mnt/d/hello") == "0:0"
    # changed live: now read-only
    c.update(devices={**devs, "data": {"type": "disk", "source": str(src), "path": "/mnt/d",
                                       "readonly": "true"}})
    assert c.exec(["sh", "-c", "echo > /mnt/d/x"]).returncode != 0
    # a change the instance refuses (a directory onto a file) leaves the old mount in place
    ro = c.devices
    with pytest.raises(lxdlib.LxdlibError, match="not a directory"):
        c.update(devices={**devs, "data": {"type": "disk", "source": str(src),
                                           "path": "/etc/passwd"}})
    assert c.devices == ro
    assert c.exec(["cat", "/mnt/d/hello"]).text == "hi\n"
    assert c.exec(["sh", "-c", "grep -c ' /etc/passwd ' /proc/self/mountinfo"]).text == "0\n"
    c.update(devices=devs)
    assert c.exec(["test", "-e", "/mnt/d/hello"]).returncode != 0

    # a missing source is refused with the device named, and nothing is kept
    with pytest.raises(lxdlib.NotFound, match="'gone'"):
        c.update(devices={**devs, "gone": {"type": "disk", "source": str(src / "nope"),
                                           "path": "/mnt/g"}})
    assert c.devices == devs
    # a mount the running instance refuses (a directory onto a file) is not kept either
    with pytest.raises(lxdlib.LxdlibError, match="not a directory"):
        c.update(devices={**devs, "bad": {"type": "disk", "source": str(src),
                                          "path": "/etc/passwd"}})
    assert c.devices == devs
    with pytest.raises(lxdlib.InvalidConfig, match=r"'data'.*path"):
        c.update(devices={**devs, "data": {"type": "disk", "source": str(src)}})


def test_custom_volumes(host: lxdlib.Host) -> None:
    vols = host.volumes.store  # the store: pool-first verbs
    vols.create("default", "vol1", {"size": "64MiB", "user.note": "x"}, "first")
    with pytest.raises(lxdlib.AlreadyExists):
        vols.create("default", "vol1")
    with pytest.raises(lxdlib.InvalidConfig, match=r"zfs\.blocksize"):
        vols.create("default", "vol2", {"zfs.blocksize": "8k"})
    assert not vols.exists("default", "vol2")
    shown = vols.get("default", "vol1")
    assert shown["config"] == {"size": "64MiB", "user.note": "x"}
    assert shown["description"] == "first" and shown["used_by"] == []

    c = host.launch("busybox", "c1")
    vols.attach("default", "vol1", "c1", "/srv/vol")  # hot-plugged
    c.exec(["sh", "-c", "echo data > /srv/vol/f"], check=True)
    assert owner(c, "/srv/vol/f") == "0:0"
    assert (vols.path("default", "vol1") / "f").read_text() == "data\n"
    assert vols.get("default", "vol1")["used_by"] == ["/1.0/instances/c1"]
    with pytest.raises(lxdlib.InUse):
        vols.delete("default", "vol1")

    # mounted again at the next start (by the start-host hook: the pool is not searchable)
    c.stop(force=True)
    c.start()
    assert c.exec(["cat", "/srv/vol/f"]).text == "data\n"

    vols.detach("default", "vol1", "c1")
    assert c.exec(["test", "-e", "/srv/vol/f"]).returncode != 0
    with pytest.raises(lxdlib.NotFound):
        vols.detach("default", "vol1", "c1")
    with pytest.raises(lxdlib.NotFound, match="'v'"):
        c.update(devices={**c.devices, "v": {"type": "disk", "pool": "default",
                                             "source": "nosuch", "path": "/x"}})
    vols.set("default", "vol1", "size", "128MiB")
    assert vols.get("default", "vol1")["config"]["size"] == "128MiB"
    vols.delete("default", "vol1")
    assert vols.names("default") == []
    assert not host.pool("default").volume_exists("custom", "vol1")


def test_custom_volume_leftover_is_cleaned(host: lxdlib.Host) -> None:
    """A create killed between the volume and its record leaves debris the next call removes."""
    host.pool("default").create_custom_volume("debris")
    vols = host.volumes.store  # the store: pool-first verbs
    assert vols.names("default") == []
    assert not host.pool("default").volume_exists("custom", "debris")
    vols.create("default", "debris")
    assert vols.names("default") == ["debris"]


def cli(host: lxdlib.Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def test_storage_volume_cli(host: lxdlib.Host) -> None:
    host.create("busybox", "c1")
    cli(host, "storage", "volume", "create", "default", "v1", "size=32MiB")
    cli(host, "storage", "volume", "set", "default", "v1", "user.k", "v")
    assert cli(host, "storage", "volume", "get", "default", "v1", "user.k").stdout == "v\n"
    cli(host, "storage", "volume", "attach", "default", "v1", "c1", "data", "/mnt/v")
    listed = cli(host, "storage", "volume", "list", "default", "-f", "csv").stdout
    assert "custom,v1,,filesystem,1" in listed and "container,c1" in listed
    shown = yaml.safe_load(cli(host, "storage", "volume", "show", "default", "v1").stdout)
    assert shown["used_by"] == ["/1.0/instances/c1"] and shown["config"]["size"] == "32MiB"
    assert host.instances["c1"].devices["data"] == {"type": "disk", "pool": "default",
                                                    "source": "v1", "path": "/mnt/v"}
    r = cli(host, "storage", "volume", "delete", "default", "v1", check=False)
    assert r.returncode != 0 and r.stderr.startswith("Error: ") and "in use" in r.stderr
    cli(host, "storage", "volume", "detach", "default", "v1", "c1")
    cli(host, "storage", "volume", "unset", "default", "v1", "user.k")
    cli(host, "storage", "volume", "delete", "default", "custom/v1")
    assert "v1" not in cli(host, "storage", "volume", "list", "default").stdout


@pytest.fixture
def zp(host: lxdlib.Host, zfs_daemon: ZfsDaemons) -> Iterator[str]:  # noqa: F811
    """A zfs-fuse pool ``zp`` of the host's root; the instances and volumes a test made go
    with it afterwards."""
    zpool = f"lxdz{secrets.token_hex(3)}"
    host.create_pool("zp", "zfs", {"size": "512MiB", "zfs.pool_name": zpool})
    try:
        yield "zp"
    finally:
        for inst in host.instances.list():
            inst.delete(force=True)
        vols = host.volumes.store
        for v in vols.names("zp"):
            vols.delete("zp", v)
        host.delete_pool("zp")


def test_custom_volume_on_zfs_is_shifted(host: lxdlib.Host, zp: str) -> None:
    """zfs-fuse has no idmapped mounts: the volume's files are shifted on disk to the map of the
    instance that mounts it, once."""
    vols = host.volumes.store  # the store: pool-first verbs
    vols.create("zp", "zv")
    (vols.path("zp", "zv") / "from-host").write_text("h\n")
    c = host.launch("busybox", "c1", devices={
        "zv": {"type": "disk", "pool": "zp", "source": "zv", "path": "/srv/zv"}})
    base = host.facts().idmap.base
    assert owner(c, "/srv/zv/from-host") == "0:0"
    c.exec(["sh", "-c", "echo c > /srv/zv/from-inside"], check=True)
    assert os.stat(vols.path("zp", "zv") / "from-inside").st_uid == base
    assert vols.get("zp", "zv")["config"]["volatile.idmap.last"] == str(base)
    c.restart(force=True)  # already shifted: nothing changes
    assert owner(c, "/srv/zv/from-inside") == "0:0"


def test_a_volume_is_shared_only_by_instances_of_one_id_map(host: lxdlib.Host) -> None:
    """A custom volume is mounted with the id map of each instance that uses it (idmapped on
    btrfs): what one container's root makes there as its root is the other's root's. Two
    instances with different maps (isolated, privileged) cannot both use one volume, as in
    LXD ('idmaps ... are not identical'): before, an isolated container's root planted a
    setuid file that another isolated container saw as its own root's (a privileged one: as
    host root's). Instances of one map share it; once the other user lets go, it is handed
    over."""
    vols = host.volumes.store
    vols.create("default", "sv")
    dev = {"sv": {"type": "disk", "pool": "default", "source": "sv", "path": "/srv/sv"}}
    a = host.launch("busybox", "hvoa", config={"security.idmap.isolated": "true"}, devices=dev)
    a.exec(["sh", "-c", "touch /srv/sv/f && chown 0:0 /srv/sv/f && chmod 4755 /srv/sv/f"],
           check=True)
    # another map at create, at start, hot-plugged: refused, and nothing recorded
    for n, cfg in (("hvob", {"security.idmap.isolated": "true"}),
                   ("hvop", {"security.privileged": "true"})):
        with pytest.raises(lxdlib.errors.WrongState, match="different id map"):
            host.launch("busybox", n, config=cfg, devices=dev)
        with pytest.raises(lxdlib.errors.NotFound):
            host.instances.get(n)
    b = host.launch("busybox", "hvob", config={"security.idmap.isolated": "true"})
    with pytest.raises(lxdlib.errors.WrongState, match="different id map"):
        vols.attach("default", "sv", "hvob", "/srv/sv")
    assert "sv" not in b.devices
    assert b.exec(["test", "-e", "/srv/sv/f"]).returncode != 0
    with pytest.raises(lxdlib.errors.WrongState, match="different id map"):
        host.launch("busybox", "hvoc", devices=dev)  # the host's range is a map too
    # the same map shares it (two instances of the host's range)
    a.delete(force=True)
    c = host.launch("busybox", "hvoc", devices=dev)
    d = host.launch("busybox", "hvod", devices=dev)
    c.exec(["touch", "/srv/sv/g"], check=True)
    assert owner(d, "/srv/sv/g") == "0:0"
    # handed over: once no instance of another map uses it
    c.delete(force=True)
    d.delete(force=True)
    vols.attach("default", "sv", "hvob", "/srv/sv")
    assert owner(b, "/srv/sv/g") == "0:0"



def test_two_hot_plugs_of_one_volume_at_once_give_it_one_map(host: lxdlib.Host) -> None:
    """Two running instances of two maps given one volume at the same moment: each update
    checks the other users when it renders (neither record names the volume yet then), and
    the hot-plug checks again after its record is saved, under the volume's lock. Whichever
    order the steps take, one of them is refused and nothing of it is kept: the volume is
    never mounted with two maps. Here B has rendered (the volume's record names B's map) and
    waits before saving while A goes through whole; B, let go, is refused."""
    vols = host.volumes.store
    vols.create("default", "rv")
    a = host.launch("busybox", "hvra", config={"security.idmap.isolated": "true"})
    b = host.launch("busybox", "hvrb", config={"security.idmap.isolated": "true"})
    rendered, go = threading.Event(), threading.Event()
    real = journal.crashpoint

    def pausing(name: str) -> None:
        if name == "update.config-written" and threading.current_thread().name == "plug-b":
            rendered.set()
            assert go.wait(60)
        real(name)

    outcome: dict[str, BaseException | None] = {}

    def plug_b() -> None:
        try:
            lxdlib.Host(host.paths.root).volumes.store.attach("default", "rv", "hvrb", "/srv/rv")
            outcome["b"] = None
        except BaseException as e:  # handed to the test's thread
            outcome["b"] = e

    journal.crashpoint = pausing
    try:
        t = threading.Thread(target=plug_b, name="plug-b")
        t.start()
        assert rendered.wait(60)
        claimed = yaml.safe_load((host.paths.volume_records / "default" / "rv.yaml").read_text())
        assert claimed[USERS_MAP] == b.config["volatile.idmap.base"]  # B's, not saved
        vols.attach("default", "rv", "hvra", "/srv/rv")  # B's record does not name it yet
        go.set()
        t.join(120)
    finally:
        go.set()
        journal.crashpoint = real
    assert isinstance(outcome["b"], lxdlib.errors.WrongState), outcome
    assert "different id map" in str(outcome["b"])
    assert "rv" in host.instances["hvra"].devices
    assert "rv" not in host.instances["hvrb"].devices
    a.exec(["touch", "/srv/rv/f"], check=True)
    assert b.exec(["test", "-e", "/srv/rv"]).returncode != 0  # unplugged again
    assert owner(a, "/srv/rv/f") == "0:0"


_KILLED_ATTACH = """
import os, signal, sys
import lxdlib, lxdlib.volumes as v
if sys.argv[3] == "commit":  # killed as the shift's new map is written (any lxdlib has it)
    real = v.write_record
    def dying(path, data, **kw):
        if (data.get("config") or {}).get(v.IDMAP_LAST, "0") != "0":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data, **kw)
    v.write_record = dying
lxdlib.Host(sys.argv[1]).volumes.store.attach("zp", sys.argv[2], "hvoz", "/srv/zv")
"""


def test_a_killed_shift_of_a_zfs_volume_is_finished_not_repeated(host: lxdlib.Host,
                                                                  zp: str) -> None:
    """zfs-fuse: the shift of a volume's files to an instance's map, killed (-9) after its
    files moved and before the new map was recorded, or between its two steps: the next verb
    finishes it. Before, the record still named the old map and the next attach shifted every
    file again — the container's root owned nothing of its volume, its files sat in another
    instance's block (a setuid one too)."""
    vols = host.volumes.store
    base = host.facts().idmap.base
    host.create("busybox", "hvoz")
    for i, how in enumerate(("commit", "volume.shift.parked", "volume.shift.moved")):
        vol = f"zv{i}"
        vols.create("zp", vol)
        top = vols.path("zp", vol)
        (top / "d").mkdir()
        (top / "d" / "s").write_text("s\n")
        os.chown(top / "d" / "s", 0, 0)
        os.chmod(top / "d" / "s", 0o4755)  # after the chown, which clears it
        os.chown(top / "d", 5, 5)
        env = {**os.environ, "LXDLIB_CRASHPOINT": how}
        proc = subprocess.run([sys.executable, "-c", _KILLED_ATTACH, str(host.paths.root),
                               vol, how], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == -9, (how, proc.returncode, proc.stderr)
        assert vol not in host.instances["hvoz"].devices
        vols.attach("zp", vol, "hvoz", "/srv/zv")  # finishes the shift
        st, sd = os.lstat(top / "d" / "s"), os.lstat(top / "d")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (base, base, 0o4755), how
        assert (sd.st_uid, sd.st_gid) == (base + 5, base + 5), how
        assert vols.get("zp", vol)["config"]["volatile.idmap.last"] == str(base)
        c = host.instances["hvoz"]
        c.start()
        assert owner(c, "/srv/zv/d/s") == "0:0" and owner(c, "/srv/zv/d") == "5:5"
        c.stop(force=True)
        vols.detach("zp", vol, "hvoz")
