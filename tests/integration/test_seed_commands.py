"""Every command of the seed article (../shared/seed/), run as written with `lxc` replaced by
`lxdlib`, against real containers.

The article's remotes (`ubuntu:`, `ubuntu-daily:`, `images:`) are pointed at a simplestreams
server on 127.0.0.1 that this test builds from the busybox image (no traffic leaves the machine);
its placeholders (<container>, <snapshot name>, …) get concrete names.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import lxdlib
from tests.integration.seed_profiles import DOCKER_PROFILE
from tests.integration.simplestreams_fixtures import (
    NATIVE_ARCH,
    ImageFactory,
    Product,
    Tree,
    Version,
    serving,
)

pytestmark = pytest.mark.root

class Seed:
    def __init__(self, root: Path, cwd: Path) -> None:
        self.root = root
        self.cwd = cwd

    def __call__(self, line: str, *, input: str | None = None, ok: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        """Run one article line: ``lxc <args>`` becomes ``lxdlib <args>``."""
        import shlex
        argv = shlex.split(line)
        assert argv[0] == "lxc"
        r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(self.root),
                            *argv[1:]], capture_output=True, text=True, input=input,
                           cwd=self.cwd, timeout=180)
        if ok:
            assert r.returncode == 0, f"{line!r} failed ({r.returncode}): {r.stderr}"
        return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def catalogue(busybox_tarball: Path, tmp_path: Path) -> Tree:
    factory = ImageFactory(busybox_tarball, tmp_path / "build")
    tree = Tree(tmp_path / "srv")
    for day, (release, aliases) in enumerate((
            ("14.04", ["14.04", "trusty"]), ("12.04", ["12.04", "precise"]),
            ("15.10", ["15.10", "wily"]), ("16.04", ["16.04", "xenial", "default"])), start=1):
        serial = f"2016010{day}_0000"
        tree.add(Product("ubuntu", release, NATIVE_ARCH, aliases, versions=[
            Version(serial, factory.build(serial, marker=f"ubuntu-{release}"))]))
    tree.add(Product("gentoo", "current", NATIVE_ARCH, ["gentoo/current"], versions=[
        Version("20240101_0000", factory.build("20240101_0000", marker="gentoo"))]))
    tree.add(Product("alpine", "3.19", NATIVE_ARCH, ["alpine/3.19"], versions=[
        Version("20240102_0000", factory.build("20240102_0000", marker="alpine"))]))
    tree.write()
    return tree


def test_every_seed_command(host: lxdlib.Host, catalogue: Tree, busybox_tarball: Path,
                            tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    lxc = Seed(host.paths.root, work)
    with serving(catalogue.root) as srv:
        for remote in ("ubuntu", "ubuntu-daily", "images"):
            lxc(f"lxc remote set-url {remote} {srv.url}")

        # -- instances ------------------------------------------------------------------------
        lxc("lxc launch ubuntu: aliasName")
        alpine_fp = next(i.fingerprint for i in host.images.remote_list("images")
                         if i.properties.get("os") == "alpine")
        lxc(f"lxc launch images:{alpine_fp[:12]} apline-test")
        r = lxc("lxc init ubuntu:")
        assert "Instance name is:" in r.stdout
        assert "apline-test" in lxc("lxc list").stdout
        assert "CREATED AT" in lxc("lxc list --fast").stdout
        assert "Name: apline-test" in lxc("lxc info apline-test").stdout
        lxc("lxc stop apline-test")
        lxc("lxc start apline-test")
        lxc("lxc stop apline-test --force")
        lxc("lxc start apline-test")
        lxc("lxc restart apline-test")
        lxc("lxc restart apline-test --force")
        lxc("lxc pause apline-test")
        lxc("lxc start apline-test")  # resumes

        # -- profiles and config --------------------------------------------------------------
        assert "default" in lxc("lxc profile list").stdout
        assert "devices:" in lxc("lxc profile show default").stdout
        shown = lxc("lxc profile show default").stdout
        lxc("lxc profile edit default", input=shown)
        lxc("lxc profile create p1")
        lxc("lxc profile create p2")
        lxc("lxc profile apply apline-test default,p1,p2")
        assert host.instances["apline-test"].profiles == ["default", "p1", "p2"]
        cfg = lxc("lxc config show apline-test").stdout
        lxc("lxc config edit apline-test", input=cfg.replace("config:", "config:\n  user.x: y"))
        # shown as LXD's yaml.v2 writes it: "y" quoted (a YAML 1.1 boolean written plain)
        assert '  user.x: "y"' in lxc("lxc config show apline-test").stdout.splitlines()
        assert "pool: default" in lxc("lxc config show --expanded apline-test").stdout

        # -- exec -------------------------------------------------------------------------------
        assert lxc("lxc exec aliasName bash", ok=False).returncode == 127  # no bash in busybox
        assert lxc("lxc exec apline-test sh", input="echo from-sh\n").stdout == "from-sh\n"

        # -- files ------------------------------------------------------------------------------
        lxc("lxc exec aliasName -- sh -c 'echo one > /root/1.txt'")
        lxc("lxc file pull aliasName/root/1.txt .")
        assert (work / "1.txt").read_text() == "one\n"
        assert "localhost" in lxc("lxc file pull aliasName/etc/hosts -").stdout
        (work / "local.txt").write_text("pushed\n")
        lxc("lxc file push local.txt aliasName/root/local.txt")
        assert lxc("lxc exec aliasName -- cat /root/local.txt").stdout == "pushed\n"
        lxc("lxc file edit aliasName/root/local.txt", input="edited\n")
        assert lxc("lxc exec aliasName -- cat /root/local.txt").stdout == "edited\n"

        # -- snapshots ----------------------------------------------------------------------------
        lxc("lxc snapshot aliasName")
        lxc("lxc snapshot aliasName snap-xsw")
        lxc("lxc restore aliasName snap0")
        lxc("lxc move aliasName/snap0 aliasName/first")
        lxc("lxc copy aliasName/snap-xsw xsw-u")
        lxc("lxc delete aliasName/first")
        assert [s.name for s in host.instances["aliasName"].snapshots] == ["snap-xsw"]

        # -- copy and move ------------------------------------------------------------------------
        lxc("lxc copy xsw-u xsw-copy")
        lxc("lxc move xsw-copy xsw-moved")
        assert "xsw-moved" in host.instances and "xsw-copy" not in host.instances

        # -- remote images -------------------------------------------------------------------------
        assert "ubuntu" in lxc("lxc image list ubuntu:").stdout
        assert "gentoo" in lxc("lxc image list images:").stdout

        # -- limits (the article's `lxc config xsw-u limits.cpu 1` is a typo for `config set`) --
        lxc("lxc config xsw-u limits.cpu 1")
        lxc("lxc config set xsw-u limits.memory 256MB")
        assert host.instances["xsw-u"].config["limits.memory"] == "256MB"

        # -- image management ----------------------------------------------------------------------
        lxc("lxc image copy ubuntu:14.04 local:")
        lxc("lxc image copy ubuntu:12.04 local: --alias old-ubuntu")
        lxc("lxc image copy ubuntu:15.10 local: --copy-aliases")
        lxc(f"lxc image copy images:gentoo/current/{NATIVE_ARCH} local: --alias gentoo "
            "--auto-update")
        from lxdlib.imagestore.busybox import build_busybox_image
        tarball = build_busybox_image(work / "random.tar.xz", compression="xz")
        lxc(f"lxc image import {tarball.name} --alias random-image")
        data = build_busybox_image(tmp_path / "plain.tar", compression="none").read_bytes()
        srv_file = catalogue.root / "bb.tar.gz"
        srv_file.write_bytes(data)
        srv.lxd_image = ("bb.tar.gz", hashlib.sha256(data).hexdigest())
        lxc(f"lxc image import {srv.url}/lxd --alias busybox-amd64")
        assert "old-ubuntu" in lxc("lxc image list").stdout
        assert "wily" in lxc("lxc image list").stdout  # --copy-aliases
        assert lxc(f"lxc image list {NATIVE_ARCH}").returncode == 0
        assert "ubuntu" in lxc("lxc image list os=ubuntu").stdout
        assert "Fingerprint:" in lxc("lxc image info old-ubuntu").stdout
        lxc("lxc image edit old-ubuntu", input="properties: {os: ubuntu, note: edited}\n")
        lxc("lxc image export old-ubuntu .")
        assert any(p.name.startswith(host.images["old-ubuntu"].fingerprint)
                   for p in work.iterdir())
        lxc("lxc image delete random-image")

        # -- publish ------------------------------------------------------------------------------
        lxc("lxc launch ubuntu:14.04 my-container")
        lxc("lxc exec my-container -- sh -c 'echo changed > /root/changed'")
        lxc("lxc publish my-container --alias my-new-image --force")
        lxc("lxc exec my-container -- sh -c 'echo more > /root/more'")
        lxc("lxc snapshot my-container some-snapshot")
        lxc("lxc publish my-container/some-snapshot --alias some-image")
        lxc("lxc launch my-new-image from-published")
        assert lxc("lxc exec from-published -- cat /root/changed").stdout == "changed\n"

        # -- port mapping ------------------------------------------------------------------------
        port = free_port()
        lxc(f"lxc config device add apline-test sshport{port} proxy "
            f"listen=tcp:127.0.0.1:{port} connect=tcp:127.0.0.1:22")
        assert f"sshport{port}" in lxc("lxc config show --expanded apline-test").stdout

        # -- docker profile (the seed's heredoc through profile edit) ------------------------------
        lxc("lxc profile create docker")
        lxc("lxc profile edit docker", input=DOCKER_PROFILE)
        lxc("lxc launch ubuntu-daily:16.04 docker -p default -p docker")
        lxc("lxc config set docker security.privileged true")
        lxc("lxc restart docker")

        # -- cleanup, through the article's own verbs ---------------------------------------------
        lxc("lxc delete apline-test --force")
        lxc("lxc stop aliasName")
        lxc("lxc delete aliasName")
    assert "aliasName" not in host.instances
    assert os.path.exists(host.paths.root)
