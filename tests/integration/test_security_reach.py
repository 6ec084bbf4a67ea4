"""No host user reaches a file of any volume (issue 10, case 1), on btrfs, dir and zfs pools.

Instance volumes are stored unshifted on idmapped pools, so a file that is root's inside the
container is real uid 0's on disk: a host user who can walk to a setuid-root file planted by the
container's root (or shipped in an image) runs it as euid 0. Here host uid 1000 (``setpriv``,
no capabilities, no groups) tries every way in — a setuid file planted from inside a running
container, one shipped in an image (also in an instance never started), snapshots, a restored
volume, a copy, an imported backup, a published image's volume, a custom volume — and then a
walker lets it ``lstat`` every path lxdlib made under the root: nothing inside a volume, the
image store or the loop files may answer anything but EACCES.

The planted binary is the host's own ``id``: run as a setuid-root file it would print 0.
The probe execs through ``sh -c`` because ``setpriv`` itself still holds root's capabilities
when it looks up the program it is given.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib.storage.dir import SNAPSHOTS
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons  # noqa: F401

pytestmark = pytest.mark.root

USER = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
HOST_ID = Path("/usr/bin/id")
SHIPPED = "usr/bin/suid-id"

#: Run as the host user: lstat and open every path read from stdin, print the errno of each
#: (0 when it worked).
PROBE = r"""
import json, os, sys
out = {}
for path in json.load(sys.stdin):
    res = []
    for op in (lambda: os.lstat(path),
               lambda: os.close(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK))):
        try:
            op()
            res.append(0)
        except OSError as e:
            res.append(e.errno)
    out[path] = res
json.dump(out, sys.stdout)
"""


def as_user(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*USER, *argv], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def probe(paths: list[str]) -> dict[str, list[int]]:
    proc = as_user(["/usr/bin/python3", "-I", "-S", "-c", PROBE], json.dumps(paths))
    assert proc.returncode == 0, proc.stderr
    out: dict[str, list[int]] = json.loads(proc.stdout)
    return out


def suid_image(out: Path, busybox: Path) -> Path:
    """The busybox image plus a setuid-root copy of the host's ``id`` (an image is hostile
    input: it may ship any setuid file)."""
    raw = io.BytesIO()
    with tarfile.open(busybox, "r:gz") as src, tarfile.open(fileobj=raw, mode="w") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        data = HOST_ID.read_bytes()
        info = tarfile.TarInfo(f"rootfs/{SHIPPED}")
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o4755, 0, 0, 1
        dst.addfile(info, io.BytesIO(data))
    out.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return out


@pytest.fixture(params=["btrfs", "dir", "zfs"])
def pool(request: pytest.FixtureRequest, host: lxdlib.Host) -> Iterator[str]:
    """The pool under test: the host's btrfs one, or a dir / zfs-fuse pool made for it."""
    driver = request.param
    if driver == "btrfs":
        yield "default"
        return
    if driver == "zfs":
        request.getfixturevalue("zfs_daemon")
        host.create_pool("sr", "zfs", {"size": "512MiB",
                                       "zfs.pool_name": f"lxsr{secrets.token_hex(3)}"})
    else:
        host.create_pool("sr", "dir", {})
    try:
        yield "sr"
    finally:
        for inst in host.instances.list():
            inst.delete(force=True)
        vols = host.volumes.store  # the store: pool-first verbs
        for v in vols.names("sr"):
            vols.delete("sr", v)
        host.delete_pool("sr")


def refused(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "Permission denied" in proc.stderr and proc.stdout == ""


def test_host_user_reaches_no_volume_file(host: lxdlib.Host, pool: str, busybox_tarball: Path,
                                          tmp_path: Path) -> None:
    root_disk = {"root": {"type": "disk", "path": "/", "pool": pool}}
    drv = host.pool(pool)
    suid = host.images.import_file(suid_image(tmp_path / "suid.tar.gz", busybox_tarball),
                                   aliases=["suid"])
    host.create("suid", "never", pool=pool, devices=root_disk)  # (b) never started

    # (a) planted by the container's root; isolated, so a copy gets another map
    c1 = host.launch("busybox", "c1", pool=pool, devices=root_disk,
                     config={"security.idmap.isolated": "true"})
    c1.files.put("/planted", HOST_ID.read_bytes(), mode=0o755)
    c1.exec(["sh", "-c", "chown 0:0 /planted && chmod 4755 /planted"], check=True)
    vols = host.volumes.store  # the store: pool-first verbs
    vols.create(pool, "cv")
    vols.attach(pool, "cv", "c1", "/srv/cv")  # an attached custom volume still works
    c1.exec(["sh", "-c", "cp /planted /srv/cv/planted && chmod 4755 /srv/cv/planted"],
            check=True)
    vols.detach(pool, "cv", "c1")  # on zfs a copy with another map could not mount it
    c1.snapshots.create("s0")
    c1.exec(["rm", "/planted"], check=True)
    c1.snapshots.restore("s0")
    assert c1.exec(["test", "-u", "/planted"]).returncode == 0
    cp = host.copy("c1", "cp1")
    cp.start()  # its own map: the volume follows it, and liblxc still gets through
    assert cp.config["volatile.idmap.base"] != c1.config["volatile.idmap.base"]
    host.import_backup(host.export_backup("c1", tmp_path / "b.tar.gz"), "imp", pool=pool)
    pub = host.images.publish("never", aliases=["pub"])
    host.create("pub", "frompub", pool=pool, devices=root_disk)
    if pool == "default":  # btrfs: an optimized backup too (received streams)
        host.import_backup(host.export_backup("c1", tmp_path / "o.tar.gz", optimized=True),
                           "impo", pool=pool)
        with_planted, with_shipped = ["c1", "cp1", "imp", "impo"], ["never", "frompub"]
    else:  # moved here from the btrfs pool (shifted on the way to zfs)
        host.create("suid", "mv")
        host.move("mv", pool=pool)
        with_planted, with_shipped = ["c1", "cp1", "imp"], ["never", "frompub", "mv"]

    def vol(name: str) -> Path:
        return drv.volume_path("containers", name)

    planted = [vol(n) / "rootfs/planted" for n in with_planted]
    planted += [vol(n) / "rootfs" / SHIPPED for n in with_shipped]
    planted += [drv.volume_path("images", fp) / "rootfs" / SHIPPED
                for fp in (suid.fingerprint, pub.fingerprint)]
    planted += [drv.volume_path("custom", "cv") / "planted"]
    snaps = [drv.volume_path(SNAPSHOTS, f"{n}/s0") / "rootfs/planted" for n in with_planted]
    planted += [p for p in snaps if p.exists()]  # zfs-fuse shows no snapshot directory
    for p in planted:
        assert p.stat().st_mode & 0o4000, p
        run = as_user(["/bin/sh", "-c", 'exec "$0" -u', str(p)])
        assert refused(run), (p, run)
        read = as_user(["/bin/cat", str(p)])
        assert refused(read), (p, read)

    # every volume's volume directory: closed (0100), the instances' owned by their root
    for n in with_planted + with_shipped:
        st = os.lstat(vol(n))
        want = int(host.instances.get(n).config["volatile.idmap.base"])
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o100, want, 0), n

    walk_as_host_user(host, drv.volume_path("containers", "x").parent.parent)


def walk_as_host_user(host: lxdlib.Host, base: Path) -> None:
    """lstat every path under the root as the host user: inside a volume, the image store or
    the loop-file directory, each must be refused (EACCES); nothing else may be readable but
    the files listed here (the liblxc configs and records are closed too)."""
    root = host.paths.root
    everything: list[str] = []
    for top, dirs, files in os.walk(root):
        everything += [os.path.join(top, n) for n in (*dirs, *files)]
    answers = probe(everything)

    def closed(p: Path) -> bool:
        for kind, depth in (("containers", 2), ("images", 1), ("custom", 1), (SNAPSHOTS, 1)):
            try:
                rel = p.relative_to(base / kind)
            except ValueError:
                continue
            return len(rel.parts) >= depth
        for d in (host.paths.images, host.paths.disks, host.paths.profiles,
                  host.paths.networks, host.paths.locks):
            if p.is_relative_to(d) and p != d:
                return True
        return p.is_relative_to(host.paths.lxcpath) and len(p.relative_to(
            host.paths.lxcpath).parts) >= 2

    inside = {p for p in everything if closed(Path(p))}
    assert len(inside) > 1000  # the walk saw the volumes' contents
    reached = {p: a for p, a in answers.items() if p in inside and a != [errno.EACCES] * 2}
    assert reached == {}
    readable = sorted(os.path.relpath(p, root) for p, (st, op) in answers.items()
                      if op == 0 and not os.path.isdir(p))
    assert readable == ["seccomp.policy"], readable
    # nor a directory listable: its names would say which volumes, snapshots, profiles…
    listable = sorted(os.path.relpath(p, root) for p, (st, op) in answers.items()
                      if op == 0 and os.path.isdir(p))
    assert listable == [], listable


def test_a_network_shows_a_host_user_only_what_dnsmasq_must_read(host: lxdlib.Host) -> None:
    """A managed network's files: the user's ``raw.dnsmasq`` options and the lease file are
    host root's alone (dnsmasq opens both as root, before it drops its privileges); only the
    static hosts directory stays open, because the unprivileged dnsmasq re-reads it — MACs,
    addresses and names the host's neighbour table and process list show any user anyway."""
    net = f"lxs{secrets.token_hex(3)}"
    host.networks.create(net, {"ipv4.address": "auto", "ipv4.nat": "false",
                               "raw.dnsmasq": "dhcp-option=252,a-token-of-the-admin"})
    c = host.launch("busybox", "c1", devices={"eth0": {"type": "nic", "name": "eth0",
                                                       "network": net}})
    assert c.wait_for(lambda: any("." in a for a in c.addresses()), timeout=30)
    run = host.paths.run / "networks" / net
    mac = c.config["volatile.eth0.hwaddr"]
    assert mac in (run / "dnsmasq.leases").read_text()  # dnsmasq still writes its leases
    host.volumes.store.create("default", "v1")
    answers = probe([str(p) for p in (run / "dnsmasq.raw", run / "dnsmasq.leases",
                                      host.paths.root / "storage-volumes")])
    assert all(op == errno.EACCES for _, op in answers.values()), answers
    hosts = probe([str(run / "hosts.d")])
    assert list(hosts.values()) == [[0, 0]]  # what dnsmasq lists as its own user


def test_volume_owner_follows_the_id_map(host: lxdlib.Host) -> None:
    """The volume directory belongs to the container root's host uid, whatever the map
    becomes: isolated, privileged (root), unprivileged again — and the instance starts each
    time."""
    c = host.launch("busybox", "own", config={"security.idmap.isolated": "true"})

    def owner() -> tuple[int, int, int]:
        st = os.lstat(c.volume)
        return st.st_mode & 0o7777, st.st_uid, st.st_gid

    base = int(c.config["volatile.idmap.base"])
    assert base != host.facts().idmap.base
    assert owner() == (0o100, base, 0)
    c.stop(force=True)
    c.set_config("security.privileged", "true")
    c.start()
    assert owner() == (0o100, 0, 0)
    assert c.exec(["true"]).returncode == 0
    c.stop(force=True)
    c.unset_config("security.privileged")
    c.start()
    assert owner() == (0o100, base, 0)
    assert as_user(["/bin/ls", str(c.volume / "rootfs")]).returncode != 0


def test_a_root_made_open_is_closed_again(host: lxdlib.Host) -> None:
    """A root and pool left with the old modes (or opened by hand) are closed by the next
    ``Host`` on it, and the instance's volume at its next start."""
    c = host.launch("busybox", "old")
    c.stop(force=True)
    base = host.pool("default").volume_path("containers", "old").parent.parent
    opened = [host.paths.images, host.paths.disks, base / "images", base / SNAPSHOTS]
    for d in opened:
        os.chmod(d, 0o755)
    os.chmod(c.volume, 0o711)
    again = lxdlib.Host(host.paths.root)
    again.pool("default")
    assert {str(d): os.lstat(d).st_mode & 0o777 for d in opened} == \
        {str(d): 0o700 for d in opened}
    again.instances.get("old").start()
    assert os.lstat(c.volume).st_mode & 0o7777 == 0o100


def test_a_custom_snapshot_read_for_a_copy_stays_closed(host: lxdlib.Host,
                                                        zfs_daemon: ZfsDaemons  # noqa: F811
                                                        ) -> None:
    """zfs-fuse has no ``.zfs``: a copy of a custom volume's snapshots to another pool reads
    each from a clone mounted for the time of the copy. Its mount point is in every user's
    ``/proc/self/mountinfo`` and its top directory is the volume's (searchable: 0711), so it
    must lie under a directory host users cannot search (``custom/``, not ``containers/``);
    a setuid-root file in the volume (a privileged container's, or one no map shifted yet)
    stays out of their reach throughout."""
    from lxdlib import transfer
    from lxdlib.storage.dir import CUSTOM_SNAPSHOTS
    host.create_pool("srz", "zfs", {"size": "512MiB",
                                    "zfs.pool_name": f"lxsr{secrets.token_hex(3)}"})
    vols = host.volumes.store
    try:
        vols.create("srz", "cv")
        planted = vols.path("srz", "cv") / "planted"
        planted.write_bytes(HOST_ID.read_bytes())
        os.chmod(planted, 0o4755)
        vols.create_snapshot("srz", "cv", "s0")
        drv = host.pool("srz")
        with transfer.readable_snapshot(drv, "cv", "s0", CUSTOM_SNAPSHOTS) as held:
            assert (held / "planted").stat().st_mode & 0o4000
            shown = as_user(["/bin/cat", "/proc/self/mountinfo"]).stdout
            assert str(held) in shown  # a host user learns where it is…
            run = as_user(["/bin/sh", "-c", 'exec "$0" -u', str(held / "planted")])
            assert refused(run), run  # …and reaches nothing there
            assert probe([str(held), str(held / "planted")]) == {
                str(held): [errno.EACCES] * 2, str(held / "planted"): [errno.EACCES] * 2}
        vols.copy("srz", "cv", "default", "cv2")  # the copy still works
        assert [s["name"] for s in vols.snapshots("default", "cv2")] == ["s0"]
        vols.delete("default", "cv2")
    finally:
        for v in vols.names("srz"):
            vols.delete("srz", v)
        host.delete_pool("srz")
