"""``inst.files`` and ``lxdlib file`` against real containers: LXD's filemanip scenarios, path
escapes (symlinks, ``..``) for running and stopped instances, ownership, modes, trees, streams,
and ``Instance.popen``."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib.files import Session
from lxdlib.fstree import remove_any_depth, walk_lstat
from lxdlib.popen import STDOUT

pytestmark = pytest.mark.root


@pytest.fixture
def c1(host: lxdlib.Host) -> lxdlib.Instance:
    inst = host.launch("busybox", "c1")
    assert inst.wait_ready(10)
    return inst


@pytest.fixture
def host_secret() -> Iterator[Path]:
    """A host file and directory a container must never reach (names unique to this test)."""
    d = Path("/var/tmp") / f"lxdlib-secret-{secrets.token_hex(4)}"
    d.mkdir(mode=0o700)
    (d / "shadow").write_text("HOST SECRET\n")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sh(inst: lxdlib.Instance, cmd: str) -> str:
    return inst.exec(cmd, check=True).text


def test_put_get_owner_mode_and_layout(c1: lxdlib.Instance) -> None:
    f = c1.files
    f.put("/root/hello", b"hi\n")
    assert f.get("/root/hello") == b"hi\n"
    st = f.stat("/root/hello")
    assert (st.type, st.mode, st.uid, st.gid, st.size) == ("file", 0o644, 0, 0, 3)
    assert f.exists("/root/hello") and not f.exists("/root/nope")
    # ids are the container's: uid 1000 inside, host base+1000 as seen from the host
    f.put("/root/owned", b"x", uid=1000, gid=1001, mode=0o600)
    assert sh(c1, "stat -c '%u %g %a' /root/owned").split() == ["1000", "1001", "600"]
    base = int(c1.config["volatile.idmap.base"])
    host_view = os.stat(f"/proc/{c1.pid}/root/root/owned")
    assert (host_view.st_uid, host_view.st_gid) == (base + 1000, base + 1001)
    # an existing file keeps owner and mode unless told (LXD's modify-perm), content replaced
    f.put("/root/owned", b"new")
    assert sh(c1, "stat -c '%u %g %a' /root/owned; cat /root/owned").split() == \
        ["1000", "1001", "600", "new"]
    f.put("/root/owned", b"new", mode=0o640, uid=0)
    assert sh(c1, "stat -c '%u %g %a' /root/owned").split() == ["0", "1001", "640"]
    # -p: parents 0750, the mode only on the leaf
    f.put("/opt/a/b/c.txt", b"deep", mode=0o604, parents=True)
    assert sh(c1, "stat -c '%a' /opt/a /opt/a/b /opt/a/b/c.txt").split() == \
        ["750", "750", "604"]
    with pytest.raises(lxdlib.NotFound):
        f.put("/nonexistent/dir/file", b"x")
    with pytest.raises(lxdlib.NotFound, match="c1/etc/missing"):
        f.get("/etc/missing")
    with pytest.raises(lxdlib.InvalidArgument):
        f.get("/etc")
    # a FIFO is refused at once, never waited on
    sh(c1, "mkfifo /root/fifo")
    with pytest.raises(lxdlib.InvalidArgument, match="not a regular file"):
        f.get("/root/fifo")
    # mkdir, listdir, symlink, delete
    f.mkdir("/srv/x/y", mode=0o711, parents=True)
    assert sh(c1, "stat -c '%a' /srv/x/y").strip() == "711"
    with pytest.raises(lxdlib.AlreadyExists):
        f.mkdir("/srv/x/y")
    f.symlink("/srv/link", "x/y")
    assert f.stat("/srv/link", follow=False).target == "x/y"
    assert f.listdir("/srv") == ["link", "x"]
    with pytest.raises(lxdlib.InvalidArgument):
        f.delete("/srv/x")  # not empty
    f.delete("/srv/x", recursive=True)
    f.delete("/srv/link")
    assert f.listdir("/srv") == []
    # the container's own mounts are seen: /run is a tmpfs over the rootfs
    f.put("/run/on-tmpfs", b"mounted")
    assert sh(c1, "cat /run/on-tmpfs") == "mounted"
    assert not (c1.volume / "rootfs/run/on-tmpfs").exists()
    # no temporary files left behind
    assert ".lxdlib-" not in sh(c1, "ls -a /root /opt/a/b /run")
    # a frozen instance's files are reachable too
    c1.pause()
    f.put("/root/frozen", b"ice")
    assert f.get("/root/frozen") == b"ice"
    c1.start()


def test_paths_never_reach_the_host(c1: lxdlib.Instance, host_secret: Path,
                                    tmp_path: Path) -> None:
    """filemanip.sh: a symlink to /tmp in the container leads to the container's /tmp; absolute
    and relative symlinks and '..' never read or write host files — running and stopped."""
    f = c1.files
    marker = f"lxdlib-escape-{secrets.token_hex(4)}"
    sh(c1, "ln -s /tmp/ /tmp/outside")
    f.put(f"/tmp/outside/{marker}", b"inside")
    assert sh(c1, f"cat /tmp/{marker}") == "inside"
    assert not Path("/tmp", marker).exists()
    secret = host_secret / "shadow"
    sh(c1, f"ln -s {secret} /root/abs; ln -s ../../../../../../..{secret} /root/rel;"
           f"ln -s {host_secret} /root/dirlink")
    for running in (True, False):
        if not running:
            c1.stop(force=True)
        for path in ("/root/abs", "/root/rel", f"/../../../../..{secret}",
                     "/root/dirlink/shadow"):
            with pytest.raises(lxdlib.NotFound):
                f.get(path)
        # writes through the same links land in the container (or fail), never on the host
        with pytest.raises(lxdlib.NotFound):
            f.put("/root/dirlink/planted", b"x")
        with pytest.raises(lxdlib.NotFound):  # the link's directory is not in the container
            f.put("/root/abs", b"x")
        # once the container has that path, the link leads there: written and read inside
        f.mkdir(str(host_secret), parents=True)
        f.put("/root/abs", b"written through the link")
        assert f.get(str(secret)) == b"written through the link"
        assert f.get("/root/rel") == b"written through the link"
        assert secret.read_text() == "HOST SECRET\n"
        assert sorted(p.name for p in host_secret.iterdir()) == ["shadow"]
        f.delete(str(host_secret), recursive=True)
    c1.start()
    # a pulled tree keeps links as links; a later pull never follows them on the host
    sh(c1, f"mkdir -p /root/tree && ln -s {host_secret} /root/tree/evil")
    dest = tmp_path / "pulled"
    f.pull_tree("/root/tree", dest)
    assert os.readlink(dest / "evil") == str(host_secret)
    sh(c1, "rm /root/tree/evil && mkdir /root/tree/evil && echo pwn > /root/tree/evil/pwned")
    f.pull_tree("/root/tree", dest)
    assert (dest / "evil").is_dir() and not (dest / "evil").is_symlink()
    assert (dest / "evil/pwned").read_text() == "pwn\n"
    assert sorted(p.name for p in host_secret.iterdir()) == ["shadow"]


def _make_tree(src: Path) -> None:
    (src / "sub dir").mkdir(parents=True)
    (src / "sub dir/file with spaces.txt").write_text("spaces\n")
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o750)
    (src / "secret").write_text("s")
    (src / "secret").chmod(0o600)
    (src / "sub dir").chmod(0o751)
    (src / "rel-link").symlink_to("sub dir/file with spaces.txt")
    (src / "abs-link").symlink_to("/etc/hostname")
    os.chown(src / "secret", 1000, 1000)


def _snapshot(d: Path) -> dict[str, tuple[str, int, str]]:
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        kind = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
        extra = os.readlink(p) if kind == "l" else p.read_text() if kind == "f" else ""
        out[str(p.relative_to(d))] = (kind, stat.S_IMODE(st.st_mode) if kind != "l" else 0,
                                      extra)
    return out


def test_trees_keep_modes_links_and_names(c1: lxdlib.Instance, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src)
    assert c1.files.push_tree(src, "/root/copy") == 7
    listing = sh(c1, "cd /root/copy && stat -c '%n %a %u' * 'sub dir'/*; readlink rel-link; "
                     "readlink abs-link; ./run.sh")
    assert "run.sh 750 0" in listing and "secret 600 1000" in listing
    assert "sub dir 751 0" in listing and "sub dir/file with spaces.txt 644 0" in listing
    assert "sub dir/file with spaces.txt\n/etc/hostname\nran\n" in listing
    back = tmp_path / "back"
    c1.files.pull_tree("/root/copy", back)
    want = _snapshot(src)
    assert _snapshot(back) == want
    c1.files.pull_tree("/root/copy", back)  # idempotent
    assert _snapshot(back) == want


def test_streams_and_aborted_writes(c1: lxdlib.Instance) -> None:
    payload = os.urandom(3 << 20) + b"tail"
    with c1.files.open("/root/stream", "wb", file_mode=0o640) as w:
        for i in range(0, len(payload), 100_000):
            w.write(payload[i:i + 100_000])
    assert sh(c1, "stat -c %a /root/stream").strip() == "640"
    with c1.files.open("/root/stream") as r:
        assert r.read(10) == payload[:10]
        assert r.read() == payload[10:]
    # an exception inside the block leaves the old file and no temporary file
    with pytest.raises(RuntimeError), c1.files.open("/root/stream", "wb") as w:
        w.write(b"half")
        raise RuntimeError("boom")
    assert hashlib.sha256(c1.files.get("/root/stream")).digest() == \
        hashlib.sha256(payload).digest()
    assert sh(c1, "ls -a /root | grep -c lxdlib || true").strip() == "0"
    # a reader closed early ends its helper; the next call works
    r = c1.files.open("/root/stream")
    r.read(1)
    r.close()
    assert c1.files.stat("/root/stream").size == len(payload)


def test_stopped_and_privileged_ownership(host: lxdlib.Host) -> None:
    c = host.create("busybox", "cold")
    c.files.put("/root/cold", b"cold", uid=1000, gid=1000, mode=0o600)
    # idmapped rootfs: on disk the container's own ids
    st = os.stat(c.volume / "rootfs/root/cold")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o600)
    assert c.files.stat("/root/cold").uid == 1000
    c.start()
    assert sh(c, "stat -c '%u %a' /root/cold; cat /root/cold").split() == ["1000", "600", "cold"]
    p = host.launch("busybox", "priv", config={"security.privileged": "true"})
    p.files.put("/root/p", b"p", uid=1234)
    assert sh(p, "stat -c %u /root/p").strip() == "1234"
    assert os.stat(f"/proc/{p.pid}/root/root/p").st_uid == 1234


def test_shifted_rootfs_offsets_ids(tmp_path: Path) -> None:
    """A FUSE pool's rootfs is shifted on disk: the stopped-instance helper maps ids both ways."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    base = 1_000_000
    with Session(None, rootfs=rootfs, offset=base) as s:
        s.put("/etc/a", b"a", force=())
        s.put("/etc/b", b"b", uid=1000, gid=5)
        s.mkdir("/srv")
        s.symlink("/srv/l", "/etc/a")
        assert s.stat("/etc/b").uid == 1000 and s.stat("/etc/a").uid == 0
    assert (rootfs / "etc/a").stat().st_uid == base
    assert ((rootfs / "etc/b").stat().st_uid, (rootfs / "etc/b").stat().st_gid) == \
        (base + 1000, base + 5)
    assert (rootfs / "srv").stat().st_uid == base
    assert os.lstat(rootfs / "srv/l").st_uid == base


def test_big_file_streams_without_memory(c1: lxdlib.Instance, tmp_path: Path) -> None:
    """256 MiB through a child process whose peak RSS must stay far below the file size."""
    size_mib = 256
    script = textwrap.dedent(f"""
        import hashlib, os, sys, time
        sys.path.insert(0, {str(Path(lxdlib.__file__).parents[1])!r})
        import lxdlib
        inst = lxdlib.Host({str(c1.ctx.paths.root)!r}).instances["c1"]
        src = {str(tmp_path / "src")!r}
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range({size_mib}):
                f.write(block)
        t = time.perf_counter()
        with open(src, "rb") as f:
            inst.files.put("/root/big", f)
        push = {size_mib} * 1.048576 / (time.perf_counter() - t)
        t = time.perf_counter()
        with open(src + ".out", "wb") as f:
            inst.files.get_to("/root/big", f)
        pull = {size_mib} * 1.048576 / (time.perf_counter() - t)
        same = open(src, "rb").read(1 << 20) == open(src + ".out", "rb").read(1 << 20)
        # VmHWM, not ru_maxrss: Linux keeps in ru_maxrss the RSS the process had before its
        # exec, i.e. the forking pytest's, which grows as the suite runs
        hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
                   if line.startswith("VmHWM:"))
        print(push, pull, hwm // 1024, same, os.path.getsize(src + ".out"))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=240, check=True)
    push, pull, rss, same, got = r.stdout.split()
    print(f"\nfile push {float(push):.0f} MB/s, pull {float(pull):.0f} MB/s, "
          f"peak RSS {rss} MiB for {size_mib} MiB")
    assert same == "True" and int(got) == size_mib << 20
    assert int(rss) < size_mib // 2


def test_popen_streams(c1: lxdlib.Instance) -> None:
    with c1.popen(["cat"]) as p:
        assert p.stdin is not None and p.stdout is not None
        for word in (b"one\n", b"two\n"):
            p.stdin.write(word)
            p.stdin.flush()
            assert p.stdout.readline() == word  # answered while still running
        assert p.poll() is None
        p.stdin.close()
        assert p.wait(10) == 0
    p = c1.popen("echo out; echo err >&2; exit 7", stderr=STDOUT)
    out, err = p.communicate()
    assert (out, err, p.returncode) == (b"out\nerr\n", None, 7)
    p = c1.popen(["sleep", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 stdin=subprocess.DEVNULL)
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 143
    p = c1.popen(["sh", "-c", "read x; echo got $x"], env={"A": "1"})
    assert p.communicate(b"data\n", timeout=10)[0] == b"got data\n"


def cli(host: lxdlib.Host, *args: str, input: bytes | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    env = {**os.environ, "PYTHONPATH": str(Path(lxdlib.__file__).parents[1])}
    r = subprocess.run(cmd, capture_output=True, input=input, timeout=120, cwd=cwd, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr.decode()}")
    return r


def test_cli_file_commands(c1: lxdlib.Instance, tmp_path: Path) -> None:
    host = c1.ctx
    sh(c1, "echo 127.0.0.1 localhost > /etc/hosts; echo one > /root/1.txt")
    assert cli(host, "file", "pull", "c1/etc/hosts", "-").stdout == b"127.0.0.1 localhost\n"
    cli(host, "file", "pull", "c1/root/1.txt", ".", cwd=tmp_path)
    assert (tmp_path / "1.txt").read_text() == "one\n"
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("A")
    b.write_text("B")
    a.chmod(0o640)
    cli(host, "file", "push", str(a), "c1/root/")
    assert sh(c1, "stat -c %a /root/a.txt; cat /root/a.txt").split() == ["640", "A"]
    cli(host, "file", "push", str(a), str(b), "c1/srv/new/", "-p", "--mode", "0600",
        "--uid", "33")
    assert sh(c1, "stat -c '%n %a %u' /srv/new/*").split() == \
        ["/srv/new/a.txt", "600", "33", "/srv/new/b.txt", "600", "33"]
    cli(host, "file", "push", "-", "c1/root/from-stdin", input=b"piped")
    assert sh(c1, "cat /root/from-stdin") == "piped"
    cli(host, "file", "push", str(b), "c1/root")  # an existing directory: the file goes in it
    assert sh(c1, "cat /root/b.txt") == "B"
    tree = tmp_path / "tree"
    _make_tree(tree)
    cli(host, "file", "push", "-r", str(tree), "c1/root/")
    assert sh(c1, "cat '/root/tree/sub dir/file with spaces.txt'") == "spaces\n"
    out = tmp_path / "out"
    cli(host, "file", "pull", "-r", "-p", "c1/root/tree", str(out) + "/")
    assert _snapshot(out / "tree") == _snapshot(tree)
    # as lxc: with -r a missing destination is made and the directory lands in it by name
    cli(host, "file", "pull", "-r", "c1/root/tree", str(tmp_path / "fresh"))
    assert _snapshot(tmp_path / "fresh" / "tree") == _snapshot(tree)
    r = cli(host, "file", "pull", "c1/root/tree", str(tmp_path), check=False)
    assert (r.returncode, r.stderr) == (1, b"Error: Can't pull a directory without --recursive\n")
    cli(host, "file", "edit", "c1/root/owned-edit", input=b"first\n")
    sh(c1, "chown 5:6 /root/owned-edit; chmod 604 /root/owned-edit")
    cli(host, "file", "edit", "c1/root/owned-edit", input=b"second\n")
    assert sh(c1, "stat -c '%u %g %a' /root/owned-edit; cat /root/owned-edit").split() == \
        ["5", "6", "604", "second"]
    cli(host, "file", "mkdir", "-p", "c1/var/x/y", "--mode", "0700")
    assert sh(c1, "stat -c %a /var/x/y").strip() == "700"
    cli(host, "file", "delete", "c1/root/a.txt", "c1/root/b.txt")
    cli(host, "file", "delete", "-r", "c1/var/x")
    assert "a.txt" not in sh(c1, "ls /root").split() and "x" not in sh(c1, "ls /var").split()
    r = cli(host, "file", "pull", "c1/root/missing", "-", check=False)
    assert r.returncode == 1 and r.stderr.decode().strip() == "Error: Not Found"  # as lxc
    r = cli(host, "file", "pull", "nosuch/etc/hosts", "-", check=False)
    assert r.returncode == 1 and r.stderr == b"Error: Instance not found\n"


def test_pull_tree_of_any_depth_with_few_fds(c1: lxdlib.Instance, tmp_path: Path) -> None:
    """A tree 1,200 directories deep, made inside in a second (``mkdir d; cd d``), pulls whole:
    the helper's walk recursed once per level (``RecursionError`` past ~1,000, a typed error
    that did not say why) and both ends held one fd per level. Here the process's fd limit is
    256, below the depth, and each level also has a file and a symlink after its directory, so
    the walk must get back to every level to copy them."""
    depth = 1200
    sh(c1, f"mkdir /root/deep && cd /root/deep && i=0; while [ $i -lt {depth} ]; do "
           "mkdir d; echo $i > z; ln -s ../z l; cd d; i=$((i+1)); done; echo bottom > f")
    try:
        _check_deep_pull(c1, tmp_path, depth)
    finally:  # pytest's own removal of tmp_path recurses per level: RecursionError
        for made in (tmp_path / "deep", tmp_path / "cli"):
            if os.path.lexists(made):
                remove_any_depth(made)


def _check_deep_pull(c1: lxdlib.Instance, tmp_path: Path, depth: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the helper inherits it too
    try:
        count = c1.files.pull_tree("/root/deep", tmp_path / "deep")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert count == 1 + 3 * depth + 1
    fd = os.open(tmp_path / "deep", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            with open(os.open("z", os.O_RDONLY, dir_fd=fd)) as z:
                assert z.read() == f"{level}\n"
            assert os.readlink("l", dir_fd=fd) == "../z"
            down = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = down
        with open(os.open("f", os.O_RDONLY, dir_fd=fd)) as f:
            assert f.read() == "bottom\n"
        assert sorted(os.listdir(fd)) == ["f"]
    finally:
        os.close(fd)
    # the command line too (its own process, its own helper)
    r = cli(c1.ctx, "file", "pull", "-r", "c1/root/deep", str(tmp_path / "cli"))
    assert r.returncode == 0
    assert sum(not stat.S_ISDIR(st.st_mode)  # a loop: os.walk recurses per level too
               for _, st in walk_lstat(tmp_path / "cli")) == 2 * depth + 1


def test_pull_tree_names_the_entry_that_vanished(c1: lxdlib.Instance, tmp_path: Path) -> None:
    """A running instance renames directories while ``file pull -r`` copies them: the error
    named the root the user asked for ("file 'c1/root/t' not found"), as if it were missing.
    It names the entry that vanished, below what was asked, and what was copied before it is
    whole (each file written beside and renamed): no temporary file, no short file."""
    n = 300
    sh(c1, f"mkdir /root/t && cd /root/t && for i in $(seq {n}); do mkdir s$i; "
           "echo data$i > s$i/f; done")
    loop = c1.popen(f"cd /root/t; while :; do for i in $(seq {n}); do mv s$i x$i; done; "
                    f"for i in $(seq {n}); do mv x$i s$i; done; done",
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    try:
        errors: list[str] = []
        for attempt in range(20):
            dest = tmp_path / f"api{attempt}"
            try:
                c1.files.pull_tree("/root/t", dest)
            except lxdlib.NotFound as e:
                errors.append(str(e))
                assert re.fullmatch(r"file 'c1/root/t/[sx]\d+(/f)?' not found: it was removed "
                                    r"or renamed while the tree was copied", str(e)), str(e)
                for got in dest.rglob("*"):
                    assert ".lxdlib-" not in got.name
                    if got.is_file():
                        assert got.read_text() == f"data{got.parent.name[1:]}\n"
                if len(errors) >= 2:
                    break
        assert errors, "no pull met a renamed entry"
        for attempt in range(20):
            r = cli(c1.ctx, "file", "pull", "-r", "c1/root/t", str(tmp_path / f"cli{attempt}"),
                    check=False)
            if r.returncode != 0:
                assert re.fullmatch(rb"Error: file 'c1/root/t/[sx]\d+(/f)?' not found: it was "
                                    rb"removed or renamed while the tree was copied\n",
                                    r.stderr), r.stderr
                break
        else:
            raise AssertionError("no command-line pull met a renamed entry")
    finally:
        loop.kill()
        loop.wait(10)


@pytest.mark.parametrize("verb", ["restore", "restart", "stop", "stop-graceful", "delete"])
def test_stop_restore_restart_delete_end_a_held_popen(host: lxdlib.Host, verb: str) -> None:
    """A process holding an ``inst.popen`` (pipes open, not waited for) stops the instance
    itself: a snapshot restore, a restart, a stop (forced or not) and ``delete --force`` hung
    for ever in liblxc's stop (the graceful stop until its timeout). The popen is this
    process's child, and the container's dying init waits until it has been reaped
    (``zap_pid_ns_processes``), the monitor waits for init and ``stop`` for the monitor. Run in
    a process of its own, so that a hang is a timeout: the verb completes, the popen is killed
    as any process of the instance (137, or 143 from init's SIGTERM on a graceful stop) and its
    pipe reads EOF."""
    inst = host.launch("busybox", "c1")
    assert inst.wait_ready(10)
    inst.snapshots.create("s0")
    script = textwrap.dedent(f"""
        import lxdlib
        inst = lxdlib.Host({str(host.paths.root)!r}).instances.get("c1")
        p = inst.popen(["sh", "-c", "echo up; exec sleep 1000"])
        assert p.stdout.readline() == b"up\\n"
        verb = {verb!r}
        if verb == "restore":
            inst.snapshots.restore("s0")
        elif verb == "restart":
            inst.restart(force=True)
        elif verb == "stop":
            inst.stop(force=True)
        elif verb == "stop-graceful":
            inst.stop(timeout=30)
        else:
            inst.delete(force=True)
        print(p.wait(10), p.stdout.read() == b"", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    code, eof = r.stdout.split()
    assert code in ("137", "143") and eof == "True"
    if verb == "delete":
        assert "c1" not in host.instances.names()
    else:
        assert inst.state == ("RUNNING" if verb in ("restore", "restart") else "STOPPED")


def test_popens_let_go_without_a_wait_are_reaped(host: lxdlib.Host) -> None:
    """Popens dropped without a wait (a loop in a notebook) each kept a zombie and a pidfd
    until their instance stopped: the next attach reaps those that have ended, keeping their
    codes, so the process's descriptors do not grow with them."""
    inst = host.launch("busybox", "c1")
    assert inst.wait_ready(10)
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
             "stderr": subprocess.DEVNULL}
    first = inst.popen(["true"], **quiet)
    first.wait(10)  # the attach machinery's own descriptors are open from here on
    before = len(os.listdir("/proc/self/fd"))
    kept = [inst.popen(["true"], **quiet) for _ in range(30)]
    def running(pid: int) -> bool:
        try:
            return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(running(p.pid) for p in kept):
        time.sleep(0.05)  # all 30 ended (zombies), none waited for
    last = inst.popen(["true"], **quiet)
    assert last.wait(10) == 0
    assert len(os.listdir("/proc/self/fd")) <= before + 2
    assert [p.wait(1) for p in kept] == [0] * 30  # their codes kept for a later wait


def test_stop_in_one_thread_ends_exec_and_popen_of_another(host: lxdlib.Host) -> None:
    """A stop in one thread while another runs an ``exec`` or keeps starting popens on the same
    instance. liblxc's stop holds the GIL until the container's init has died, and init waits
    until this process has reaped its attached children: an exec's child (reaped by its pid,
    unknown to the stop) or a popen attached between the stop's kill of the attached processes
    and liblxc's stop was a zombie no thread could reap any more, and the whole process hung for
    ever. Run in a process of its own, so that a hang is a timeout: the stop completes, the
    exec returns 137 (killed, as LXD says) and every popen that started is 137 too."""
    inst = host.launch("busybox", "c1")
    assert inst.wait_ready(10)
    script = textwrap.dedent(f"""
        import threading, time
        import lxdlib
        inst = lxdlib.Host({str(host.paths.root)!r}).instances.get("c1")
        got = []
        t = threading.Thread(target=lambda: got.append(inst.exec(["sleep", "1000"])))
        t.start()
        time.sleep(0.5)
        inst.stop(force=True)
        t.join(10)
        print(got[0].returncode, flush=True)
        for _ in range(3):
            inst.start()
            done, started = threading.Event(), []
            def spawn():
                while not done.is_set():
                    try:
                        started.append(inst.popen(["sleep", "1000"], stdin=None,
                                                  stdout=None, stderr=None))
                    except lxdlib.errors.WrongState:  # stopped: no more
                        time.sleep(0.001)
            s = threading.Thread(target=spawn)
            s.start()
            time.sleep(0.2)
            inst.stop(force=True)
            done.set()
            s.join(10)
            print(sorted({{p.wait(5) for p in started}}), bool(started), flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["137", *["[137] True"] * 3, ""], r.stdout
    assert inst.state == "STOPPED"
