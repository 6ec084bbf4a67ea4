"""Remote images against a real simplestreams server on 127.0.0.1 (http and https): alias
resolution, verified downloads, the cache rules (cached, prefer-cached, expiry, auto-update),
the stale catalogue fallback and one download for two processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lxdlib
from lxdlib.errors import CorruptRecord, ImageError, NotFound
from lxdlib.imagestore import store as image_store
from tests.integration.simplestreams_fixtures import (
    NATIVE_ARCH,
    ImageFactory,
    Product,
    Tree,
    Version,
    make_ca,
    serving,
    sha256,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

FOREIGN = "arm64" if NATIVE_ARCH != "arm64" else "amd64"
OLD, NEW, NEWER = "20240101_0000", "20240102_0000", "20240103_0000"


@pytest.fixture(scope="module")
def factory(busybox_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    return ImageFactory(busybox_tarball, tmp_path_factory.mktemp("ssfactory"))


def fp_of(built: object, kind: str = "root.tar.xz") -> str:
    meta = built.meta  # type: ignore[attr-defined]
    if kind == "unified":
        return sha256(built.unified)  # type: ignore[attr-defined]
    root = built.squashfs if kind == "squashfs" else built.rootxz  # type: ignore[attr-defined]
    return sha256(meta + root)


def leftovers(host: lxdlib.Host) -> list[str]:
    return [n for n in os.listdir(host.paths.images) if n.startswith(".")]


def test_resolution_copy_and_launch_kinds(host: lxdlib.Host, factory: ImageFactory,
                                          tmp_path: Path) -> None:
    old = factory.build(OLD, marker="old")
    new = factory.build(NEW, marker="new")
    foreign = factory.build(NEWER, marker="foreign")
    sq = factory.build(OLD, kinds=("squashfs", "root.tar.xz"), marker="sq")
    uni = factory.build(OLD, kinds=("unified",), marker="uni")
    tree = Tree(tmp_path / "srv")
    tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1", "default"],
                     versions=[Version(OLD, old), Version(NEW, new)]))
    tree.add(Product("testos", "1", FOREIGN, ["testos/1", "default"],
                     versions=[Version(NEWER, foreign)]))
    tree.add(Product("sqos", "1", NATIVE_ARCH, ["sq"], versions=[Version(OLD, sq)]))
    tree.add(Product("unios", "1", NATIVE_ARCH, ["uni"], versions=[Version(OLD, uni)]))
    tree.write()
    with serving(tree.root) as srv:
        host.images.remotes.add("ss", srv.url)
        client = host.images.client("ss")
        # newest serial of the native architecture wins the short name; the medium names
        assert client.get_alias("testos/1").target == fp_of(new)
        assert client.get_alias(f"testos/1/{NATIVE_ARCH}").target == fp_of(new)
        assert client.get_alias(f"testos/1/{FOREIGN}").target == fp_of(foreign)
        listed = {i.fingerprint: i for i in host.images.remote_list("ss")}
        assert set(listed[fp_of(new)].aliases) >= {"testos/1", f"testos/1/{NATIVE_ARCH}"}
        assert listed[fp_of(old)].aliases == ()
        assert listed[fp_of(foreign)].aliases == (f"testos/1/{FOREIGN}", f"default/{FOREIGN}")
        # both root types of one version are images; squashfs is preferred (unsquashfs here)
        assert client.get_alias("sq").target == fp_of(sq, "squashfs")
        assert fp_of(sq) in listed and listed[fp_of(sq)].properties["type"] == "root.tar.xz"
        assert listed[fp_of(uni, "unified")].properties["type"] == "tar.gz"

        calls: list[tuple[int, int]] = []
        rec = host.images.copy("ss:testos/1", aliases=["t1"],
                               progress=lambda d, t: calls.append((d, t)))
        assert rec.fingerprint == fp_of(new) and not rec.cached and not rec.auto_update
        assert [a["name"] for a in rec.aliases] == ["t1"]
        assert rec.properties["serial"] == NEW and rec.properties["os"] == "testos"
        assert rec.properties["description"] == f"testos 1 {NATIVE_ARCH} ({NEW})"
        assert rec.created_at == datetime(2024, 1, 2, tzinfo=UTC)
        assert calls[-1] == (len(new.meta) + len(new.rootxz),) * 2
        out = tmp_path / "export"
        out.mkdir()
        files = host.images.export("t1", out)
        assert [f.name for f in files] == [f"meta-{rec.fingerprint}.tar.xz",
                                           f"{rec.fingerprint}.tar.xz"]
        assert [f.read_bytes() for f in files] == [new.meta, new.rootxz]
        # a fingerprint prefix on the remote; fetched by fingerprint: no update source
        by_fp = host.images.copy(f"ss:{fp_of(old)[:12]}")
        assert by_fp.fingerprint == fp_of(old) and by_fp.update_source is None
        hits = srv.image_hits()
        again = host.images.copy("ss:testos/1", copy_aliases=True)
        assert srv.image_hits() == hits  # already here: nothing downloaded
        assert {a["name"] for a in again.aliases} == {"t1", "testos/1", "default",
                                                      f"testos/1/{NATIVE_ARCH}",
                                                      f"default/{NATIVE_ARCH}"}

        # instances from a squashfs split image and from a unified image; `ss:` = default
        c = host.launch("ss:sq", "csq")
        assert c.exec(["cat", "/etc/serial"]).text == f"{OLD} sq\n"
        assert c.exec(["cat", "/etc/hostname"]).text == "csq\n"
        c.stop(force=True)
        u = host.create("ss:uni", "cuni")
        assert (u.volume / "rootfs/etc/serial").read_text() == f"{OLD} uni\n"
        d = host.create("ss:", "cdef")
        assert d.config["volatile.base_image"] == fp_of(new)
        assert host.images.get(fp_of(sq, "squashfs")).cached
    assert leftovers(host) == []


def test_tampered_file_and_lying_catalogue_leave_nothing(host: lxdlib.Host,
                                                         factory: ImageFactory,
                                                         tmp_path: Path) -> None:
    tree = Tree(tmp_path / "srv")
    tree.add(Product("bad", "1", NATIVE_ARCH, ["bad"],
                     versions=[Version(OLD, factory.build(OLD, marker="bad"), tamper=True)]))
    lie = "ab" * 32
    tree.add(Product("lie", "1", NATIVE_ARCH, ["lie"],
                     versions=[Version(OLD, factory.build(OLD, marker="lie"),
                                       combined_override=lie)]))
    tree.write()
    before = [i.fingerprint for i in host.images.list()]
    with serving(tree.root) as srv:
        host.images.remotes.add("ss", srv.url)
        with pytest.raises(ImageError, match="Hash mismatch"):
            host.images.copy("ss:bad", aliases=["bad"])
        # each file matches its own sha256, but not the fingerprint together (CVE-2026-33542)
        with pytest.raises(ImageError, match="fingerprint mismatch"):
            host.images.copy("ss:lie")
        with pytest.raises(ImageError):
            host.create("ss:bad", "c1")
    assert [i.fingerprint for i in host.images.list()] == before
    assert "bad" not in host.images.store.aliases() and "c1" not in host.instances
    assert lie not in os.listdir(host.paths.images) and leftovers(host) == []


def test_a_copy_with_aliases_is_refused_before_its_download_when_the_table_is_corrupt(
        host: lxdlib.Host, factory: ImageFactory, tmp_path: Path) -> None:
    """``image copy ss:x local: --alias a`` (or ``--copy-aliases``) with an alias table that
    cannot be read: refused with the table named before a byte of the image is fetched, and
    nothing is left; a copy without aliases still works."""
    tree = Tree(tmp_path / "srv")
    tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1"],
                     versions=[Version(OLD, factory.build(OLD, marker="al"))]))
    tree.write()
    table = host.paths.images / "aliases.yaml"
    table.write_text("[not, a, mapping]\n")
    before = [i.fingerprint for i in host.images.list()]
    with serving(tree.root) as srv:
        host.images.remotes.add("ss", srv.url)
        for kw in ({"aliases": ["mine"]}, {"copy_aliases": True}):
            with pytest.raises(CorruptRecord, match=r"aliases\.yaml"):
                host.images.copy("ss:testos/1", **kw)  # type: ignore[arg-type]
        assert srv.image_hits() == 0
        assert [i.fingerprint for i in host.images.list()] == before and leftovers(host) == []
        assert table.read_text() == "[not, a, mapping]\n"
        host.images.copy("ss:testos/1")  # no alias to write: the table is not asked
        assert srv.image_hits() > 0


def test_stale_catalogue_used_when_server_is_gone(host: lxdlib.Host, factory: ImageFactory,
                                                  tmp_path: Path) -> None:
    tree = Tree(tmp_path / "srv")
    tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1"],
                     versions=[Version(OLD, factory.build(OLD, marker="old"))]))
    tree.write()
    with serving(tree.root) as srv:
        host.images.remotes.add("ss", srv.url)
        host.images.remotes.add("never", srv.url + "/nothing-here")
        assert len(host.images.remote_list("ss")) == 1
        url = srv.url
    later = lxdlib.Host(host.paths.root)  # a new process: nothing remembered in memory
    assert later.images.remote_get("ss:testos/1").fingerprint == fp_of(factory.build(OLD,
                                                                                     marker="old"))
    for f in (host.paths.root / "cache" / "simplestreams").rglob("*.json"):
        os.utime(f, (time.time() - 7200,) * 2)  # older than the hour: a refresh is attempted
    later = lxdlib.Host(host.paths.root)
    assert [i.properties["serial"] for i in later.images.remote_list("ss")] == [OLD]
    with pytest.raises(ImageError, match="Unable to fetch"):
        later.images.copy("ss:testos/1")  # the image itself cannot come from a stale cache
    with pytest.raises(ImageError, match="Unable to fetch"):
        later.images.remote_list("never")  # never reached, nothing cached
    assert url.startswith("http://") and leftovers(host) == []


def test_launch_over_https_caches_and_prefers_cached(host: lxdlib.Host, factory: ImageFactory,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ca, cert, key = make_ca(tmp_path)
    old, new = factory.build(OLD, marker="old"), factory.build(NEW, marker="new")
    tree = Tree(tmp_path / "srv")
    product = tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1"],
                               versions=[Version(OLD, old)]))
    tree.write()
    with serving(tree.root, tls=(cert, key)) as srv:
        host.images.remotes.add("ss", srv.url)
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(ImageError, match="CERTIFICATE_VERIFY_FAILED"):
            host.images.remote_list("ss")  # the system CA store does not know our CA
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        c1 = host.launch("ss:testos/1", "c1")
        assert c1.exec(["cat", "/etc/serial"]).text == f"{OLD} old\n"
        c1.stop(force=True)
        img = host.images.get(fp_of(old)).record()  # as it is now: the model reads live
        assert img.cached and img.auto_update and img.last_used_at is not None
        assert img.update_source == {"server": srv.url, "protocol": "simplestreams",
                                     "alias": "testos/1", "image_type": "container",
                                     "certificate": ""}
        hits = srv.image_hits()
        # uses are recorded once a second at most (ImageStore.touch): this one comes sooner
        monkeypatch.setattr(image_store, "TOUCH_RESOLUTION", timedelta(0))
        c2 = host.create("ss:testos/1", "c2")
        assert srv.image_hits() == hits
        assert c2.config["volatile.base_image"] == fp_of(old)
        assert c2.config["image.serial"] == OLD
        assert host.images.get(fp_of(old)).last_used_at > img.last_used_at  # type: ignore[operator]
        # a newer serial appears; creation uses the cached image anyway (auto-update's job)
        product.versions.append(Version(NEW, new))
        tree.write()
        host.images.client("ss", fresh=True)
        c3 = host.create("ss:testos/1", "c3")
        assert c3.config["volatile.base_image"] == fp_of(old) and srv.image_hits() == hits
        # with auto-update off, every creation resolves to the newest image
        host.set_config("images.auto_update_interval", "0")
        c4 = host.create("ss:testos/1", "c4")
        assert c4.config["volatile.base_image"] == fp_of(new)
        assert host.images.get(fp_of(new)).cached


def test_refresh_auto_update_and_expiry(host: lxdlib.Host, factory: ImageFactory,
                                        tmp_path: Path) -> None:
    v1, v2, v3 = (factory.build(s, marker="au") for s in (OLD, NEW, NEWER))
    tree = Tree(tmp_path / "srv")
    product = tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1"],
                               versions=[Version(OLD, v1)]))
    tree.add(Product("other", "1", NATIVE_ARCH, ["other"],
                     versions=[Version(OLD, factory.build(OLD, marker="other"))]))
    tree.add(Product("other", "2", NATIVE_ARCH, ["other2"],
                     versions=[Version(OLD, factory.build(OLD, marker="other2"))]))
    tree.write()
    with serving(tree.root) as srv:
        host.images.remotes.add("ss", srv.url)
        rec = host.images.copy("ss:testos/1", aliases=["mine"], auto_update=True).record()
        assert rec.auto_update and rec.update_source is not None
        assert host.images.refresh("mine") == (host.images.get(fp_of(v1)), False)
        product.versions.append(Version(NEW, v2))
        tree.write()
        new, changed = host.images.refresh("mine")
        assert changed and new.fingerprint == fp_of(v2)
        assert host.images.store.aliases()["mine"]["target"] == fp_of(v2)
        assert fp_of(v1) not in host.images and new.auto_update and not new.cached
        assert new.update_source == rec.update_source

        # housekeeping refreshes only images not checked for images.auto_update_interval hours
        product.versions.append(Version(NEWER, v3))
        tree.write()
        host = lxdlib.Host(host.paths.root)  # a new Host: no catalogue held in memory
        for f in (host.paths.root / "cache" / "simplestreams").rglob("*.json"):
            os.utime(f, (time.time() - 7200,) * 2)
        now = datetime.now(UTC)
        assert host.images.housekeeping(now)["updated"] == {}
        report = host.images.housekeeping(now + timedelta(hours=7))
        assert report == {"pruned": [], "updated": {fp_of(v2): fp_of(v3)}, "errors": {}}
        assert host.images["mine"].fingerprint == fp_of(v3)

        # expiry: only cached images unused for images.remote_cache_expiry days
        host.create("ss:other", "cx")
        host.create("ss:other2", "cy")
        copied = host.images.copy("ss:other2")  # an explicit copy is no longer "cached"
        assert not copied.cached
        other = host.images.remote_get("ss:other").fingerprint
        host.set_config("images.remote_cache_expiry", "0")
        assert host.images.prune(now + timedelta(days=30)) == []
        host.set_config("images.remote_cache_expiry", None)
        assert host.images.prune(now + timedelta(days=9)) == []
        assert host.images.prune(now + timedelta(days=11)) == [other]
        left = {i.fingerprint for i in host.images.list()}
        assert other not in left and copied.fingerprint in left and fp_of(v3) in left
        assert host.images["busybox"]  # imported images never expire


def test_two_processes_download_once_and_kill9_leaves_nothing(host: lxdlib.Host,
                                                              factory: ImageFactory,
                                                              tmp_path: Path) -> None:
    built = factory.build(OLD, marker="once")
    tree = Tree(tmp_path / "srv")
    tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1"], versions=[Version(OLD, built)]))
    tree.write()
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), "image",
           "copy", "ss:testos/1", "local:"]
    with serving(tree.root, delay=0.5) as srv:
        host.images.remotes.add("ss", srv.url)
        # a download killed half-way leaves only a temp file, which the next call removes
        victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while srv.image_hits() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert srv.image_hits() > 0
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        assert fp_of(built) not in host.images
        srv.hits.clear()
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        try:
            results = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert [p.returncode for p in procs] == [0, 0], results
    per_file = {p: n for p, n in srv.hits.items() if p.startswith("/images/")}
    assert sorted(per_file.values()) == [1, 1], per_file
    assert [i.fingerprint for i in host.images.list()].count(fp_of(built)) == 1
    host.images.list()  # cleans what the killed process left
    assert leftovers(host) == []


def test_unknown_remote_and_alias(host: lxdlib.Host) -> None:
    with pytest.raises(NotFound):
        host.create("nosuch:alpine", "c1")
    host.images.remotes.add("dead", "http://127.0.0.1:9")
    with pytest.raises(ImageError, match="Unable to fetch"):
        host.create("dead:alpine", "c1")
    assert "c1" not in host.instances
