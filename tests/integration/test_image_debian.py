"""The debootstrap builder: a Debian image that boots systemd as init in an unprivileged
container, gets DHCP on eth0 from a bridge the test made, and carries LXD's hostname templates.

One debootstrap per session: the session fixture builds with a cache directory, and the CLI test
reuses that cache (``--cache-dir``), so the CLI still runs the whole customise-and-pack path. The
build is a background job (tests/integration/background.py): it starts with the session and runs
while the tests before this module do.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import lxdlib
from lxdlib.errors import ImageError, InvalidArgument
from lxdlib.imagestore.debootstrap import build_debian_image
from tests.integration import background

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, chroot)"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap missing"),
]


class Built:
    def __init__(self, image: Path, cache: Path) -> None:
        self.image, self.cache = image, cache


#: The build, run by the background job: the API call; its progress steps go to stdout.
BUILD = """\
import json, sys
from pathlib import Path
from lxdlib.imagestore.debootstrap import build_debian_image
base = Path(sys.argv[1])
steps = []
build_debian_image(base / "debian.tar.zst", compression="zstd", progress=steps.append,
                   cache_dir=base / "cache")
print(json.dumps(steps))
"""

background.define("debian-image", background.Spec(
    prefix="lxdlib-debian-",
    prepare=lambda base: background.Command([sys.executable, "-c", BUILD, str(base)],
                                            env=background.python_env()),
    ready=lambda: os.geteuid() == 0 and shutil.which("debootstrap") is not None))


@pytest.fixture(scope="session")
def debian() -> Iterator[Built]:
    job = background.take("debian-image")
    try:
        r = job.wait(timeout=900)
        assert r.returncode == 0, f"the image build failed:\n{r.stdout}{r.stderr[-6000:]}"
        steps = json.loads(r.stdout)
        assert any("debootstrap" in s for s in steps), steps
        base = job.base
        assert sorted(p.name for p in base.iterdir()) == ["cache", "debian.tar.zst"]
        yield Built(base / "debian.tar.zst", base / "cache")
    finally:
        job.remove()


@pytest.fixture
def net(host: lxdlib.Host) -> str:
    name = f"lxt{secrets.token_hex(3)}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false"})
    p = host.profiles.get("default")
    host.update_profile("default", devices={**p.devices, "eth0": {
        "type": "nic", "name": "eth0", "network": name}})
    return name


def _tar(image: Path, *args: str) -> str:
    return subprocess.run(["tar", "--zstd", *args, "-f", str(image)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.background("debian-image")
def test_tarball_layout(debian: Built) -> None:
    listing = _tar(debian.image, "-tv", "--numeric-owner").splitlines()
    names = {line.split()[-1].rstrip("/") for line in listing if " -> " not in line}
    meta = yaml.safe_load(_tar(debian.image, "-xO", "metadata.yaml"))
    network = _tar(debian.image, "-xO", "rootfs/etc/systemd/network/eth0.network")
    machine_id = next(line for line in listing if line.endswith(" rootfs/etc/machine-id"))
    assert {"metadata.yaml", "templates/hostname.tpl", "templates/hosts.tpl",
            "rootfs/usr/bin/apt-get"} <= names
    assert not [n for n in names if n.startswith("rootfs/dev/")]
    assert not [n for n in names if n.startswith("rootfs/var/cache/apt/archives/")
                and n.endswith(".deb")]
    assert machine_id.startswith("-") and machine_id.split()[2] == "0", machine_id
    assert "Name=eth0" in network and "DHCP=ipv4" in network
    arch = os.uname().machine
    props = meta["properties"]
    assert meta["architecture"] == arch and isinstance(meta["creation_date"], int)
    assert (props["os"], props["release"], props["variant"]) == ("debian", "bookworm", "minbase")
    assert props["description"].startswith(f"Debian bookworm ({arch}) (")
    assert set(meta["templates"]) == {"/etc/hostname", "/etc/hosts"}


def test_refuses_bad_arguments(tmp_path: Path) -> None:
    for kw in ({"compression": "zip"}, {"release": "../x"}, {"mirror": "ftp://x"},
               {"include": ("a,b",)}, {"packages": ("docker.io\nx",)},
               {"packages": ("--no-check-gpg",)}, {"packages": ("Docker",)},
               {"packages": ("",)}, {"packages": "docker.io"}):
        with pytest.raises(InvalidArgument):
            build_debian_image(tmp_path / "x", **kw)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_failed_debootstrap_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="debootstrap failed"):
        build_debian_image(tmp_path / "x.tar", mirror=f"file:{tmp_path}/no-mirror",
                           compression="none")
    assert list(tmp_path.iterdir()) == []


def system_state(c: lxdlib.Instance) -> str:
    """``systemctl is-system-running --wait``, retried while systemctl cannot reach pid 1 yet
    (right after start its private socket may not exist)."""
    deadline = time.monotonic() + 90
    state = ""
    while time.monotonic() < deadline:
        r = c.exec(["timeout", "60", "systemctl", "is-system-running", "--wait"], timeout=90)
        state = r.stdout.decode().strip()
        if state and state not in ("initializing", "starting"):
            return state
        time.sleep(0.2)
    return state


@pytest.mark.background("debian-image")
def test_boots_systemd(host: lxdlib.Host, net: str, debian: Built) -> None:
    host.images.import_file(debian.image, aliases=["debian"])
    c = host.launch("debian", "deb1")
    try:
        # pid 1 is exec'd as /sbin/init and renames itself once systemd is up
        assert c.wait_for(lambda: c.exec(["cat", "/proc/1/comm"]).stdout.strip() == b"systemd",
                          timeout=20), c.exec(["cat", "/proc/1/comm"]).stdout
        state = system_state(c)
        if state not in ("running", "degraded"):
            raise AssertionError(f"system state {state!r}")
        failed = c.exec(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.decode()
        assert state == "running", f"degraded, failed units:\n{failed}"
        assert c.exec(["apt-get", "--version"]).returncode == 0
        assert c.exec(["hostname"]).stdout.strip() == b"deb1"
        assert c.exec(["cat", "/etc/hostname"]).stdout.strip() == b"deb1"
        assert b"deb1" in c.exec(["cat", "/etc/hosts"]).stdout
        assert len(c.exec(["cat", "/etc/machine-id"]).stdout.strip()) == 32
        # DHCP from the test's bridge through systemd-networkd
        assert c.wait_for(lambda: bool(c.addresses()), timeout=30), c.network_state()
        gw = host.networks.get(net)["config"]["ipv4.address"].split("/")[0]
        assert c.addresses()[0].rsplit(".", 1)[0] == gw.rsplit(".", 1)[0]
        c.stop(timeout=30)  # graceful: systemd must honour liblxc's halt signal
        assert c.status == "Stopped"
        c.start()  # a later boot (machine-id kept, templates not re-applied) comes up too
        assert system_state(c) == "running"
        assert c.exec(["hostname"]).stdout.strip() == b"deb1"
    finally:
        c.delete(force=True)


@pytest.mark.background("debian-image")
def test_cli_build(host: lxdlib.Host, debian: Built) -> None:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), "image",
           "build", "debian", "--alias", "deb", "--compression", "zstd", "--cache-dir",
           str(debian.cache)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "debootstrap" not in r.stderr.lower().replace("cached debootstrap", "")
    assert "Image built with fingerprint:" in r.stdout
    img = host.images["deb"]
    assert img.properties["os"] == "debian" and img.properties["release"] == "bookworm"
    assert not list(host.paths.run.glob("build-*"))


def test_cli_packages_option_is_checked_first(host: lxdlib.Host) -> None:
    """``--packages`` is split on commas and blanks; a bad name or a builder that takes no
    packages is a one-line error before anything is downloaded or created."""
    base = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), "image",
            "build"]
    for args, msg in ((["debian", "--packages", "docker.io,Bad_Name"], "invalid packages"),
                      (["debian", "--packages", "docker.io", "--packages=-x"],
                       "invalid packages"),
                      (["busybox", "--packages", "docker.io"], "--packages is for the debian")):
        r = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and msg in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not list(host.paths.run.glob("build-*"))
    assert [i.fingerprint for i in host.images.list()] == [host.images["busybox"].fingerprint]
