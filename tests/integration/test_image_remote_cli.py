"""The ``lxdlib`` command for remotes and remote images: ``remote …``, ``image list|info|copy|
refresh <remote>:``, ``launch <remote>:<alias>``, and ``image import <url>`` in LXD's header
protocol and as a plain download, over http and https."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lxdlib
from tests.integration.simplestreams_fixtures import (
    NATIVE_ARCH,
    ImageFactory,
    Product,
    Tree,
    Version,
    make_ca,
    serving,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def run(root: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def test_remote_commands(root: Path) -> None:
    out = run(root, "remote", "list").stdout
    assert "| local (current) | unix://" in out and "| images " in out
    run(root, "remote", "add", "mirror", "http://127.0.0.1:9/streams")
    r = run(root, "remote", "add", "mirror", "https://x.example", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ")
    run(root, "remote", "rename", "mirror", "m2")
    run(root, "remote", "set-url", "m2", "https://mirror.example")
    run(root, "remote", "switch", "m2")
    assert run(root, "remote", "get-default").stdout == "m2\n"
    data = json.loads(run(root, "remote", "list", "--format", "json").stdout)
    assert data["m2"] == {"addr": "https://mirror.example", "protocol": "simplestreams",
                          "public": True, "static": False}
    assert run(root, "remote", "remove", "m2", check=False).returncode == 1  # the default
    run(root, "remote", "switch", "local")
    run(root, "remote", "remove", "m2")
    for bad in (["remove", "ubuntu"], ["rename", "local", "x"], ["add", "a:b", "https://x.y"],
                ["add", "f", "ftp://x.y"], ["switch", "nosuch"]):
        r = run(root, "remote", *bad, check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, (bad, r.stderr)
    assert "m2" not in run(root, "remote", "list").stdout


def test_remote_images_from_the_command_line(host: lxdlib.Host, busybox_tarball: Path,
                                             tmp_path: Path) -> None:
    factory = ImageFactory(busybox_tarball, tmp_path)
    tree = Tree(tmp_path / "srv")
    tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1", "default"],
                     versions=[Version("20240101_0000", factory.build(
                         "20240101_0000", kinds=("squashfs", "root.tar.xz"), marker="cli"))]))
    tree.write()
    root = host.paths.root
    with serving(tree.root) as srv:
        run(root, "remote", "add", "ss", srv.url)
        out = run(root, "image", "list", "ss:").stdout
        # LXD's ALIAS column is the shortest alias and how many more; -c L lists them all
        assert "default (" in out and "testos 1" in out and "CONTAINER" in out
        assert "testos/1" in run(root, "image", "list", "ss:", "-c", "L").stdout
        assert run(root, "image", "list", "ss:", "nomatch").stdout.count("\n") == 3
        listed = json.loads(run(root, "image", "list", "ss:testos", "-f", "json").stdout)
        assert len(listed) == 2 and listed[0]["properties"]["type"] == "squashfs"
        fp = listed[0]["fingerprint"]
        assert f"Fingerprint: {fp}" in run(root, "image", "info", "ss:testos/1").stdout
        aliases = run(root, "image", "alias", "list", "ss:", "-f", "csv").stdout
        assert f"testos/1,{fp[:12]},CONTAINER," in aliases
        run(root, "image", "copy", "ss:testos/1", "local:", "--alias", "mine", "--auto-update")
        info = run(root, "image", "info", "mine").stdout
        assert "Auto update: enabled" in info and f"Server: {srv.url}" in info
        assert "Alias: testos/1" in info and "Cached: no" in info
        assert run(root, "image", "refresh", "mine").stdout == "Image already up to date.\n"
        listed = yaml.safe_load(run(root, "image", "list", "mine", "--format", "yaml").stdout)
        assert listed[0]["update_source"]["alias"] == "testos/1"
        r = run(root, "image", "copy", "ss:testos/1", "ss:", check=False)
        assert r.returncode == 1 and "local:" in r.stderr
        run(root, "launch", "ss:", "c1")  # the remote's "default" alias
        assert run(root, "exec", "c1", "--", "cat", "/etc/serial").stdout == "20240101_0000 cli\n"
        run(root, "init", "ss:testos/1", "c2")
        run(root, "stop", "c1", "--force")
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), "image",
                        "edit", "mine"], input="public: true\nproperties: {os: edited}\n",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    edited = host.images["mine"]
    assert edited.public and edited.properties == {"os": "edited"} and edited.auto_update
    run(root, "image", "set-property", "mine", "release", "9")
    assert run(root, "image", "get-property", "mine", "release").stdout == "9\n"
    run(root, "image", "unset-property", "mine", "release")
    assert host.images["mine"].properties == {"os": "edited"}
    assert run(root, "housekeeping").returncode == 0
    # a split image (squashfs rootfs) exported and imported again: the same fingerprint
    exported = tmp_path / "exp"
    exported.mkdir()
    run(root, "image", "export", "mine", str(exported))
    meta, rootfs = sorted(exported.iterdir(), key=lambda p: not p.name.startswith("meta-"))
    assert rootfs.name == f"{fp}.squashfs" and meta.name == f"meta-{fp}.tar.xz"
    run(root, "image", "delete", "mine")
    assert fp in run(root, "image", "import", str(meta), str(rootfs), "--alias", "split").stdout
    run(root, "init", "split", "c3")
    assert (host.instances["c3"].volume / "rootfs/etc/serial").read_text() == \
        "20240101_0000 cli\n"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_url_import_header_protocol_and_plain(host: lxdlib.Host, busybox_tarball: Path,
                                              tmp_path: Path, tls: bool) -> None:
    factory = ImageFactory(busybox_tarball, tmp_path)
    served = tmp_path / "srv"
    served.mkdir()
    one = factory.build("20240101", kinds=("unified",), marker="one").unified
    two = factory.build("20240102", kinds=("unified",), marker="two").unified
    assert one is not None and two is not None
    (served / "one.tar.gz").write_bytes(one)
    (served / "two.tar.gz").write_bytes(two)
    env: dict[str, str] = {}
    certs = None
    if tls:
        ca, cert, key = make_ca(tmp_path)
        certs = (cert, key)
        env["SSL_CERT_FILE"] = str(ca)
    root = host.paths.root
    with serving(served, tls=certs) as srv:
        # LXD's protocol: the URL answers with where the image is and its hash
        srv.lxd_image = ("one.tar.gz", "0" * 64)
        r = run(root, "image", "import", f"{srv.url}/lxd", "--alias", "busybox-amd64",
                check=False, env=env)
        assert r.returncode == 1 and "hash mismatch" in r.stderr
        assert "busybox-amd64" not in host.images.store.aliases()
        srv.lxd_image = ("one.tar.gz", hashlib.sha256(one).hexdigest())
        r = run(root, "image", "import", f"{srv.url}/lxd", "--alias", "busybox-amd64", env=env)
        assert hashlib.sha256(one).hexdigest() in r.stdout
        assert host.images["busybox-amd64"].fingerprint == hashlib.sha256(one).hexdigest()
        assert srv.hits["/lxd"] == 2 and srv.hits["/one.tar.gz"] == 2
        # a URL that answers with the tarball itself
        run(root, "image", "import", f"{srv.url}/two.tar.gz", "--alias", "plain", "os=plain",
            env=env)
        plain = host.images["plain"]
        assert plain.fingerprint == hashlib.sha256(two).hexdigest()
        assert plain.properties["os"] == "plain"
        if tls:  # without our CA the server is not trusted
            r = run(root, "image", "import", f"{srv.url}/two.tar.gz", check=False,
                    env={"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"})
            assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
    assert not [n for n in os.listdir(host.paths.images) if n.startswith(".")]
