"""Docker inside an lxdlib container, as the seed article's last section does it ("LXD runs
docker"): the seed's ``docker`` profile (overlay + nf_nat modules, ``security.nesting``, the
AppArmor mask disk device), a Debian image with ``docker.io`` installed by the host (the instance
never touches a network), ``dockerd`` started by systemd, ``docker import`` of a busybox rootfs the
test builds, ``docker run``, a port Docker publishes, Docker back after ``lxdlib restart``; then
the same with ``security.privileged=true``, the seed's second variant. Last, containers inside
an instance with ``security.nesting=true``: plain liblxc (``lxc-execute``), and lxdlib itself.

The image is built once per module (one debootstrap with ``--packages docker.io,lxc,…``) and
removed with its downloaded packages afterwards. The build is a background job
(tests/integration/background.py): it starts with the session and runs while the tests before
this module do. Every wait is bounded; a daemon that does not come up fails with its own journal
in the message.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from tests.cleanup import teardown_root
from tests.integration import background
from tests.integration.seed_profiles import DOCKER_PROFILE

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, chroot)"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap missing"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static missing"),
    # the first test also builds the image (~2.5 min here, downloads included)
    pytest.mark.timeout(900),
    pytest.mark.background("docker-image"),
]

#: Docker; liblxc and what lxdlib needs to run inside an instance (test_lxdlib_inside_lxdlib).
PACKAGES = ("docker.io", "lxc", "python3-lxc", "python3-yaml", "python3-attr", "python3-pyroute2",
            "python3-jinja2", "python3-btrfsutil", "busybox-static")


def cli(host: lxdlib.Host, *args: str, input: str | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                        str(host.paths.root), *args], capture_output=True, text=True,
                       input=input, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"lxdlib {' '.join(args)}: {r.stderr}")
    return r


#: The image build, run by the background job: the API call, and the time it took.
BUILD = """\
import sys, time
from lxdlib.imagestore.debootstrap import build_debian_image
t0 = time.monotonic()
image = build_debian_image(sys.argv[1], compression="zstd", packages=tuple(sys.argv[2:]))
print(f"{time.monotonic() - t0:.0f} s, {image.stat().st_size >> 20} MiB")
"""

background.define("docker-image", background.Spec(
    prefix="lxdlib-docker-",
    prepare=lambda base: background.Command(
        [sys.executable, "-c", BUILD, str(base / "debian-docker.tar.zst"), *PACKAGES],
        env=background.python_env()),
    ready=lambda: os.geteuid() == 0 and shutil.which("debootstrap") is not None))


@pytest.fixture(scope="module")
def image_file() -> Iterator[Path]:
    """``image build debian --packages docker.io,lxc`` through the API, once per module (in the
    background job that started with the session); the directory (image and the packages
    debootstrap downloaded) goes afterwards, also on failure."""
    job = background.take("docker-image")
    try:
        r = job.wait(timeout=900)
        assert r.returncode == 0, f"the image build failed:\n{r.stdout}{r.stderr[-6000:]}"
        print(f"\n[docker] image build with {','.join(PACKAGES)}: {r.stdout.strip()}")
        image = job.base / "debian-docker.tar.zst"
        assert [p.name for p in job.base.iterdir()] == ["debian-docker.tar.zst"]
        yield image
    finally:
        job.remove()


@pytest.fixture(scope="module")
def dhost(image_file: Path) -> Iterator[lxdlib.Host]:
    """One root for the module: a btrfs pool big enough for Docker's layers, the seed's docker
    profile created through the CLI, the image imported as ``debian-docker``."""
    base = Path(tempfile.mkdtemp(prefix="lxdlib-test-", dir="/var/tmp"))
    base.chmod(0o711)
    root = base / "root"
    root.mkdir()
    try:
        h = lxdlib.Host(root)
        h.create_pool("default", "btrfs", {"size": "4GiB"})
        h.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                   "pool": "default"}})
        h.images.import_file(image_file, aliases=["debian-docker"])
        img = h.images["debian-docker"]
        assert img.properties["packages"] == " ".join(PACKAGES)
        cli(h, "profile", "create", "docker")
        cli(h, "profile", "edit", "docker", input=DOCKER_PROFILE)
        yield h
    finally:
        teardown_root(root)
        shutil.rmtree(base, ignore_errors=True)


def busybox_rootfs() -> bytes:
    """A Docker image rootfs made here: the host's static busybox and the applets the test uses,
    plus a page for httpd."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "www"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "echo", "cat", "httpd", "hostname", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        page = b"hello from docker in lxdlib\n"
        info = tarfile.TarInfo("www/index.html")
        info.size, info.mode = len(page), 0o644
        tar.addfile(info, io.BytesIO(page))
    return buf.getvalue()


def sh(c: lxdlib.Instance, script: str, timeout: float = 60) -> str:
    """Run ``script`` in the instance, bounded by ``timeout``; fail with its output."""
    r = c.exec(["timeout", str(int(timeout)), "sh", "-c", script], timeout=timeout + 15)
    if r.returncode != 0:
        raise AssertionError(f"{script!r} exited {r.returncode}:\n{r.stdout.decode()}"
                             f"{r.stderr.decode()}")
    return r.stdout.decode()


def wait_dockerd(c: lxdlib.Instance, timeout: float = 90) -> float:
    """Seconds until ``docker info`` answers. A unit that fails (or never starts) ends the
    wait at once with systemd's status and the daemon's own last words."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    state = ""
    while time.monotonic() < deadline:
        if c.exec(["timeout", "10", "docker", "info"], timeout=25).returncode == 0:
            return time.monotonic() - t0
        state = c.exec(["systemctl", "is-active", "docker.service"], timeout=20).text.strip()
        if state == "failed":
            break
        time.sleep(0.3)
    journal = c.exec(["sh", "-c", "systemctl status --no-pager docker.service containerd.service;"
                      " journalctl --no-pager -n 40 -u docker -u containerd"], timeout=30).text
    raise AssertionError(f"dockerd not answering after {time.monotonic() - t0:.0f} s "
                         f"(docker.service {state or 'unknown'}):\n{journal}")


def docker_checks(c: lxdlib.Instance, port: int) -> dict[str, str]:
    """The seed's promise, shown: import, run, a published port answering inside the instance.
    Returns Docker's storage driver and the time of one ``docker run``."""
    if "bb:latest" not in sh(c, "docker images --format '{{.Repository}}:{{.Tag}}'"):
        r = c.exec(["timeout", "60", "docker", "import", "-", "bb"], input=busybox_rootfs(),
                   timeout=75)
        assert r.returncode == 0, r.stderr.decode()
    t0 = time.monotonic()
    assert sh(c, "docker run --rm bb echo hi") == "hi\n"
    run_s = time.monotonic() - t0
    # a Docker container is a nested namespace set of its own
    assert sh(c, "docker run --rm --hostname inner bb hostname") == "inner\n"
    name = f"web{port}"
    sh(c, f"docker run -d --name {name} -p 127.0.0.1:{port}:80 bb "
          "httpd -f -p 80 -h /www")
    try:
        # bash's /dev/tcp: the minbase image has no HTTP client, bash is enough
        get = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
               "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3")
        body = sh(c, f"for i in $(seq 100); do out=$(bash -c {shq(get)} 2>/dev/null) && "
                     f"[ -n \"$out\" ] && {{ printf '%s' \"$out\"; exit 0; }}; sleep 0.2; done; "
                     "exit 1", timeout=60)
        assert "200 OK" in body and "hello from docker in lxdlib" in body, body
    finally:
        sh(c, f"docker rm -f {name}")
    driver = sh(c, "docker info --format '{{.Driver}}'").strip()
    backing = sh(c, "docker info --format '{{json .DriverStatus}}'").strip()
    return {"driver": driver, "driver_status": backing, "run_s": f"{run_s:.2f}"}


def shq(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def test_docker_unprivileged_then_privileged(dhost: lxdlib.Host) -> None:
    c = None
    try:
        t0 = time.monotonic()
        cli(dhost, "launch", "debian-docker", "dk", "-p", "default", "-p", "docker")
        c = dhost.instances["dk"]
        assert c.exec(["cat", "/proc/self/uid_map"]).text.split()[:2] != ["0", "0"]
        up = wait_dockerd(c)
        print(f"\n[docker] unprivileged: dockerd answering {time.monotonic() - t0:.1f} s "
              f"after launch ({up:.1f} s after start returned)")
        # the AppArmor mask: Docker sees AppArmor off (the seed's aadisable device)
        assert sh(c, "cat /sys/module/apparmor/parameters/enabled || true") == ""
        first = docker_checks(c, 8080)
        print(f"[docker] unprivileged: {first}")
        # Docker 20.10 tries btrfs first, and that driver accepts only a btrfs backing
        # filesystem: the instance's rootfs is a subvolume of the btrfs pool
        assert first["driver"] == "btrfs", first

        # Docker comes back after `lxdlib restart` (systemd stops it cleanly, starts it again)
        t0 = time.monotonic()
        cli(dhost, "restart", "dk", "--timeout", "60")
        up = wait_dockerd(c)
        print(f"[docker] after restart: dockerd answering {time.monotonic() - t0:.1f} s after "
              "the restart began")
        again = docker_checks(c, 8081)
        assert again["driver"] == first["driver"]

        # the seed's second variant: security.privileged=true
        cli(dhost, "config", "set", "dk", "security.privileged", "true")
        cli(dhost, "restart", "dk", "--timeout", "60")
        assert c.exec(["cat", "/proc/self/uid_map"]).text.split() == ["0", "0", "4294967295"]
        wait_dockerd(c)
        priv = docker_checks(c, 8082)
        print(f"[docker] privileged: {priv}")
        # Docker's btrfs driver made subvolumes inside the rootfs: delete takes them too
        import btrfsutil
        nested = list(btrfsutil.SubvolumeIterator(str(c.volume)))
        assert any("var/lib/docker/btrfs/subvolumes/" in p for p, _ in nested), nested
        c.delete(force=True)
        assert "dk" not in dhost.instances
    finally:
        if c is not None:
            with contextlib.suppress(Exception):
                c.delete(force=True)


def test_missing_kernel_module_is_named_at_start(dhost: lxdlib.Host) -> None:
    """A kernel without a module the docker profile asks for: the start fails at once, naming
    the module, and leaves the instance stopped, not a half-started Docker host."""
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                        str(dhost.paths.root), "launch", "debian-docker", "nomod", "-p",
                        "default", "-p", "docker", "-c",
                        "linux.kernel_modules=overlay,nf_nat,lxdlibnomod"],
                       capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode != 0 and "'lxdlibnomod'" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        if "nomod" in dhost.instances:
            assert dhost.instances["nomod"].state == "STOPPED"
    finally:
        with contextlib.suppress(Exception):
            dhost.instances["nomod"].delete(force=True)


def test_docker_overlay2_on_a_dir_pool(dhost: lxdlib.Host) -> None:
    """On a pool that is not btrfs (or zfs), Docker falls through to overlay2: the kernel
    (>= 5.11) lets an unprivileged user namespace mount overlayfs, on top of the idmapped
    rootfs mount lxdlib gives the instance."""
    if "dirp" not in dhost.pool_names():
        dhost.create_pool("dirp", "dir", {})
    c = None
    try:
        cli(dhost, "launch", "debian-docker", "dkdir", "-p", "default", "-p", "docker",
            "-s", "dirp")
        c = dhost.instances["dkdir"]
        assert c.exec(["cat", "/proc/self/uid_map"]).text.split()[:2] != ["0", "0"]
        up = wait_dockerd(c)
        got = docker_checks(c, 8090)
        print(f"\n[docker] dir pool: dockerd answering {up:.1f} s after start returned; {got}")
        assert got["driver"] == "overlay2", got
        c.delete(force=True)
        assert "dkdir" not in dhost.instances
    finally:
        if c is not None:
            with contextlib.suppress(Exception):
                c.delete(force=True)


#: The instance's own cgroup v1 hierarchies, mounted afresh in a private mount namespace (see
#: test_liblxc_inside_lxdlib). Each line of /proc/self/cgroup names one hierarchy.
CGROUP_MOUNTS = r"""
set -e
mount -t tmpfs -o mode=755 cgroups /sys/fs/cgroup
cd /sys/fs/cgroup
for c in $(awk -F: '$2 != "" {print $2}' /proc/self/cgroup); do
    d=${c#name=}
    mkdir -p "$d"
    case $c in
        name=*) mount -t cgroup -o "none,$c" cgroup "$d" ;;
        *) mount -t cgroup -o "$c" cgroup "$d" ;;
    esac
done
mkdir -p unified
mount -t cgroup2 cgroup2 unified
"""

INNER_CONFIG = """\
lxc.uts.name = inner
lxc.rootfs.path = dir:/srv/inner/rootfs
lxc.mount.auto = proc:mixed sys:ro cgroup:mixed
lxc.autodev = 1
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
"""


def test_liblxc_inside_lxdlib(dhost: lxdlib.Host) -> None:
    """With ``security.nesting=true`` an unprivileged lxdlib instance runs containers of its own
    with liblxc, the library lxdlib drives: ``lxc-execute`` (Debian's lxc, installed by the
    image builder) of a busybox rootfs, with its own pid and uts namespaces.

    On a cgroup v1 host whose ``cpu`` and ``cpuacct`` are separate hierarchies (this CI machine),
    the instance's systemd leaves both unmounted: it only knows them co-mounted as
    ``cpu,cpuacct`` and liblxc, with a cgroup namespace, leaves the mounting to the container's
    init. liblxc inside then refuses to start ("Failed to open …/cpuacct"); the test mounts the
    instance's own hierarchies in a private mount namespace first, as an admin would."""
    name = f"nest{secrets.token_hex(2)}"
    c = dhost.launch("debian-docker", name, config={"security.nesting": "true"})
    try:
        c.exec(["mkdir", "-p", "/srv/inner/rootfs"], check=True)
        r = c.exec(["tar", "-x", "-C", "/srv/inner/rootfs"], input=busybox_rootfs())
        assert r.returncode == 0, r.stderr
        c.exec(["sh", "-c", "cat > /srv/inner/config"], input=INNER_CONFIG.encode(), check=True)
        mounted = c.exec(["sh", "-c", "grep -c ' - cgroup ' /proc/self/mountinfo"]).text.strip()
        print(f"\n[nested] cgroup v1 hierarchies systemd mounted: {mounted}; "
              f"the instance is in {len(c.exec(['cat', '/proc/self/cgroup']).text.split())} "
              "(with the v2 line)")
        script = CGROUP_MOUNTS + (
            "exec timeout 60 lxc-execute -n inner -P /srv -f /srv/inner/config -- "
            "/bin/sh -c 'echo pid=$$ host=$(hostname) init=$(cat /proc/1/comm)'")
        r = c.exec(["unshare", "-m", "sh", "-c", script], timeout=90)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        # pid 1 is liblxc's init (lxc-execute), the command its child
        assert r.text.split() == ["pid=2", "host=inner", "init=lxc-execute"], r.text
    finally:
        with contextlib.suppress(Exception):
            c.delete(force=True)


LXDLIB_INSIDE = r"""
set -e
mkdir -p /srv/lx
L="python3 -m lxdlib.cli.main --root /srv/lx"
$L storage create default dir
$L profile create default
$L profile device add default root disk path=/ pool=default
$L image build busybox --alias busybox
$L launch busybox inner1 -c security.privileged=true
$L exec inner1 -- sh -c 'echo host=$(hostname) pid1=$(cat /proc/1/comm)'
$L list -c ns -f csv
$L delete -f inner1
test -z "$($L list -c n -f csv)" && echo inner-deleted
"""


def test_lxdlib_inside_lxdlib(dhost: lxdlib.Host) -> None:
    """lxdlib, run inside an unprivileged lxdlib instance with ``security.nesting=true``, makes a
    dir pool, builds its busybox image and launches, execs in and deletes a container of its own.

    The inner container is ``security.privileged=true`` from the inner lxdlib's point of view:
    it shares the outer instance's user namespace, so on the host it is as unprivileged as the
    outer one. An inner *unprivileged* container is refused at its start: the dir pool's
    idmapped rootfs mount needs privilege over the outer filesystem, which a user namespace lacks
    (liblxc: "Failed to create detached idmapped mount"). The cgroup mounts are the same
    host-specific step as in test_liblxc_inside_lxdlib."""
    name = f"outer{secrets.token_hex(2)}"
    c = dhost.launch("debian-docker", name, config={"security.nesting": "true"})
    try:
        # lxdlib's own package, as installed on the host, where the instance's python3 finds it
        c.files.push_tree(Path(lxdlib.__file__).parent,
                          "/usr/local/lib/python3.11/dist-packages/lxdlib", parents=True,
                          owner=False)
        r = c.exec(["unshare", "-m", "sh", "-c", CGROUP_MOUNTS + LXDLIB_INSIDE], timeout=240)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode()
        assert "host=inner1 pid1=init" in out, out
        assert "inner1,RUNNING" in out, out
        assert out.rstrip().endswith("inner-deleted"), out
    finally:
        with contextlib.suppress(Exception):
            c.delete(force=True)
