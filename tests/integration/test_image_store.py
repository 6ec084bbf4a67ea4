"""The image store against the real filesystem, GNU tar and the real compressors."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lxdlib.errors import (
    AlreadyExists,
    CorruptRecord,
    ImageError,
    InvalidArgument,
    InvalidName,
    NotFound,
    QuotaExceeded,
)
from lxdlib.imagestore import ImageStore, read_metadata
from lxdlib.state import lock
from tests.integration.image_fixtures import (
    METADATA,
    dev,
    dir_,
    good_members,
    make_image,
    make_store,
    reg,
    store_entries,
    sym,
    tar_bytes,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, mounts)")]

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- import -------------------------------------------------------------------------------------

@pytest.mark.parametrize("comp", ["gzip", "bzip2", "xz", "lzma", "zstd", "none"])
def test_import_each_compression(tmp_path: Path, comp: str) -> None:
    image = make_image(tmp_path / f"img.{comp}", compression=comp)
    store = make_store(tmp_path)
    rec = store.import_file(image, aliases=["test/1"], properties={"release": "override"})
    assert rec.fingerprint == sha256(image)
    assert rec.filename == image.name
    assert rec.size == image.stat().st_size
    assert rec.architecture == "x86_64"  # metadata says amd64
    assert rec.created_at == datetime.fromtimestamp(1700000000, UTC)
    assert rec.properties == {"os": "testos", "release": "override", "description": "test image"}
    assert rec.aliases == [{"name": "test/1", "description": ""}]
    assert (rec.public, rec.cached, rec.auto_update, rec.type) == (False, False, False,
                                                                   "container")
    assert rec.last_used_at is None and rec.expires_at is None
    assert store.tarball_path(rec.fingerprint).read_bytes() == image.read_bytes()
    assert store.rootfs_path(rec.fingerprint) is None
    assert store.get("test/1") == rec
    assert store.get(rec.fingerprint) == rec
    assert store.get(rec.fingerprint[:12]) == rec
    assert store.list() == [rec]
    assert store_entries(store) == [rec.fingerprint]
    dest = tmp_path / "vol"
    dest.mkdir()
    store.unpack(rec.fingerprint, dest)
    assert (dest / "rootfs/bin/busybox").read_bytes() == b"#!/bin/true\n"


def test_import_flags_and_record_persist(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img.tar.gz")
    store = make_store(tmp_path)
    rec = store.import_file(image, public=True, cached=True, auto_update=True)
    assert (rec.public, rec.cached, rec.auto_update) == (True, True, True)
    assert rec.last_used_at is not None  # a cached image counts as used when cached
    again = ImageStore(store.paths).get(rec.fingerprint)
    assert again == rec


def test_import_single_alias_string(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "img.tar.gz"), aliases="solo")
    assert store.aliases() == {"solo": {"target": rec.fingerprint, "description": ""}}


def test_import_progress(tmp_path: Path) -> None:
    members = good_members([reg("rootfs/big", os.urandom(3 * 1024 * 1024 + 17))])
    image = make_image(tmp_path / "img.tar", members, compression="none")
    calls: list[tuple[int, int]] = []
    make_store(tmp_path).import_file(image, progress=lambda d, t: calls.append((d, t)))
    size = image.stat().st_size
    assert len(calls) >= 4
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (size, size)
    assert all(t == size for _, t in calls)


def test_reimport_same_fingerprint(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img.tar.gz")
    store = make_store(tmp_path)
    rec = store.import_file(image, aliases=["one"])
    with pytest.raises(AlreadyExists, match="already exists") as exc:
        store.import_file(image, aliases=["two"])
    assert exc.value.kind == "image" and exc.value.name == rec.fingerprint
    assert store.list() == [rec]
    assert store.aliases() == {"one": {"target": rec.fingerprint, "description": ""}}
    assert store_entries(store) == [rec.fingerprint]


def test_import_with_taken_alias_changes_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.import_file(make_image(tmp_path / "a.tar.gz"), aliases=["taken"])
    other = make_image(tmp_path / "b.tar.xz", compression="xz")
    with pytest.raises(AlreadyExists) as exc:
        store.import_file(other, aliases=["free", "taken"])
    assert exc.value.kind == "image alias"
    assert [r.fingerprint for r in store.list()] == [first.fingerprint]
    assert set(store.aliases()) == {"taken"}
    assert store_entries(store) == [first.fingerprint]


@pytest.mark.parametrize(("aliases", "error"), [
    (["bad alias"], InvalidName), (["a:b"], InvalidName), ([""], InvalidName),
    (["x", "x"], InvalidArgument),
])
def test_import_bad_aliases_write_nothing(tmp_path: Path, aliases: list[str],
                                          error: type[Exception]) -> None:
    store = make_store(tmp_path)
    with pytest.raises(error):
        store.import_file(make_image(tmp_path / "a.tar.gz"), aliases=aliases)
    assert store_entries(store) == []


@pytest.mark.parametrize("props", [{"a": 1}, {1: "a"}, {"": "x"}, ["a"]])
def test_import_bad_properties(tmp_path: Path, props: object) -> None:
    store = make_store(tmp_path)
    with pytest.raises(InvalidArgument):
        store.import_file(make_image(tmp_path / "a.tar.gz"), properties=props)  # type: ignore[arg-type]
    assert store_entries(store) == []


def _bad_members(name: str) -> list:  # type: ignore[type-arg]
    if name == "no-metadata":
        return [m for m in good_members() if m[0].name != "metadata.yaml"]
    if name == "metadata-symlink":
        return [sym("metadata.yaml", "/etc/hostname"), *good_members()[1:]]
    if name == "metadata-dir":
        return [dir_("metadata.yaml"), *good_members()[1:]]
    if name == "creation-zero":
        return good_members(metadata=b"architecture: x86_64\ncreation_date: 0\n")
    if name == "unknown-arch":
        return good_members(metadata=b"architecture: vax\ncreation_date: 5\n")
    if name == "huge-metadata":
        return [reg("metadata.yaml", b"#" * (5 * 1024 * 1024)), *good_members()[1:]]
    raise AssertionError(name)


@pytest.mark.parametrize(("case", "message"), [
    ("no-metadata", "Metadata tarball is missing metadata.yaml"),
    ("metadata-symlink", 'Cannot read non-regular file "metadata.yaml"'),
    ("metadata-dir", 'Cannot read non-regular file "metadata.yaml"'),
    ("creation-zero", "Missing creation date"),
    ("unknown-arch", "Unknown architecture"),
    ("huge-metadata", "too large"),
])
def test_import_invalid_metadata_leaves_nothing(tmp_path: Path, case: str, message: str) -> None:
    store = make_store(tmp_path)
    image = make_image(tmp_path / "bad.tar.gz", _bad_members(case))
    with pytest.raises(ImageError, match=message):
        store.import_file(image, aliases=["bad"])
    assert store.list() == []
    assert store.aliases() == {}
    assert store_entries(store) == []


@pytest.mark.parametrize(("content", "message"), [
    (b"just some text, not an image\n" * 40, "Unsupported compression"),
    (b"hsqs" + bytes(4092), "Unsupported image format: squashfs"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"garbage" * 100, "Invalid image tarball"),
    (b"\xfd7zXZ\x00" + b"garbage" * 100, "Invalid image tarball"),
    (b"", "Unsupported compression"),
])
def test_import_not_an_image(tmp_path: Path, content: bytes, message: str) -> None:
    store = make_store(tmp_path)
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        store.import_file(path)
    assert store_entries(store) == []


def test_import_missing_file_and_directory(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(NotFound):
        store.import_file(tmp_path / "nope.tar.gz")
    with pytest.raises(InvalidArgument, match="directory"):
        store.import_file(tmp_path)
    assert store_entries(store) == []


def test_read_metadata_streams_first_member(tmp_path: Path) -> None:
    # metadata.yaml first, then a member too big to decompress quickly if read entirely:
    # the read stops early, and a second (symlinked) metadata.yaml after it is not seen.
    members = [reg("metadata.yaml", METADATA), reg("rootfs/big", bytes(64 * 1024 * 1024)),
               sym("metadata.yaml", "/etc/shadow")]
    image = make_image(tmp_path / "img.tar.xz", members, compression="xz")
    assert read_metadata(image).properties["os"] == "testos"


def test_read_metadata_dot_slash_name(tmp_path: Path) -> None:
    members = [dir_("."), reg("./metadata.yaml", METADATA), dir_("./rootfs")]
    image = make_image(tmp_path / "img.tar.gz", members, fmt=tarfile.GNU_FORMAT)
    assert read_metadata(image).architecture == "x86_64"


# -- lookups ------------------------------------------------------------------------------------

def test_prefix_lookup_and_ambiguity(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    fps = []
    for i in range(17):  # 17 images: two must share a first hex digit
        image = make_image(tmp_path / f"i{i}.tar",
                           good_members([reg("rootfs/n", str(i).encode())]), compression="none")
        fps.append(store.import_file(image).fingerprint)
    firsts = [fp[0] for fp in fps]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(InvalidArgument, match=f'More than one image matches "{shared}"'):
        store.get(shared)
    for fp in fps:
        assert store.get(fp[:20]).fingerprint == fp
    with pytest.raises(InvalidArgument, match="No fingerprint prefix specified"):
        store.get("")
    with pytest.raises(NotFound):
        store.get("not-an-alias")
    with pytest.raises(NotFound):
        store.get("f" * 64 if "f" * 64 not in fps else "e" * 64)
    assert sorted(r.fingerprint for r in store.list()) == sorted(fps)


def test_alias_resolves_before_prefix(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    a = store.import_file(make_image(tmp_path / "a.tar.gz"))
    b = store.import_file(make_image(tmp_path / "b.tar.xz", compression="xz"))
    store.alias_create(a.fingerprint[:8], b.fingerprint)
    assert store.get(a.fingerprint[:8]).fingerprint == b.fingerprint


# -- aliases ------------------------------------------------------------------------------------

def test_alias_lifecycle(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    a = store.import_file(make_image(tmp_path / "a.tar.gz"))
    b = store.import_file(make_image(tmp_path / "b.tar.bz2", compression="bzip2"))
    store.alias_create("debian/12", a.fingerprint[:10], "Debian 12")
    assert store.aliases() == {"debian/12": {"target": a.fingerprint, "description": "Debian 12"}}
    assert store.get(a.fingerprint).aliases == [{"name": "debian/12",
                                                 "description": "Debian 12"}]
    with pytest.raises(AlreadyExists, match="already exists") as exc:
        store.alias_create("debian/12", b.fingerprint)
    assert exc.value.kind == "image alias"
    store.alias_create("other", "debian/12")  # target given as an alias
    assert store.aliases()["other"]["target"] == a.fingerprint
    with pytest.raises(AlreadyExists):
        store.alias_rename("other", "debian/12")
    store.alias_rename("debian/12", "deb")
    assert set(store.aliases()) == {"deb", "other"}
    with pytest.raises(NotFound):
        store.alias_rename("debian/12", "x")
    with pytest.raises(InvalidName):
        store.alias_rename("deb", "bad name")
    store.alias_update("deb", target=b.fingerprint, description="moved")
    assert store.aliases()["deb"] == {"target": b.fingerprint, "description": "moved"}
    assert store.get("deb").fingerprint == b.fingerprint
    store.alias_delete("deb")
    with pytest.raises(NotFound):
        store.alias_delete("deb")
    with pytest.raises(NotFound):
        store.alias_update("deb", description="x")
    assert set(store.aliases()) == {"other"}


def test_alias_to_unknown_target(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(NotFound):
        store.alias_create("x", "0" * 64)
    with pytest.raises(InvalidName):
        store.alias_create("a b", "0" * 64)
    assert store.aliases() == {}


def test_an_unreadable_alias_table_hides_no_image_and_is_never_overwritten(
        tmp_path: Path) -> None:
    """``aliases.yaml`` cut short, of another shape, a directory, a symlink, or with one
    entry that is no mapping: every image is still listed, found by its fingerprint or a
    prefix, touched, edited, and imported without aliases; a name that is no fingerprint is
    the table's ``CorruptRecord`` (it may be one of its aliases), unless it is an entry that
    can be read; every verb that would write the table (alias create, rename, update,
    delete, an image delete, an import with aliases) is refused with that error and leaves
    the file as it is: a write would drop the aliases it cannot read."""
    store = make_store(tmp_path)
    a = store.import_file(make_image(tmp_path / "a.tar.gz"), aliases=["a1"])
    fp = a.fingerprint
    table = store.root / "aliases.yaml"
    good = f'{{"a1": {{"target": "{fp}", "description": ""}}}}'
    for make in (lambda: table.write_text('{"a1": {"target": '), lambda: table.write_text("[1]"),
                 table.mkdir, lambda: table.symlink_to(tmp_path / "a.tar.gz"),
                 lambda: table.write_text(f'{{"a1": {{"target": "{fp}"}}, "lost": 5}}')):
        if table.is_dir() and not table.is_symlink():
            table.rmdir()
        else:
            table.unlink()
        make()
        before = os.readlink(table) if table.is_symlink() else \
            None if table.is_dir() else table.read_bytes()
        partial = not table.is_symlink() and table.is_file() and b"lost" in table.read_bytes()
        assert [r.fingerprint for r in store.list()] == [fp]
        assert store.get(fp).fingerprint == fp and store.get(fp[:12]).fingerprint == fp
        assert store.get(fp).aliases == ([{"name": "a1", "description": ""}] if partial else [])
        store.touch(fp)
        store.set_properties(fp[:12], {"k": "v"})
        if partial:
            assert store.get("a1").fingerprint == fp
        else:
            with pytest.raises(CorruptRecord, match=r"aliases\.yaml"):
                store.get("a1")
        with pytest.raises(CorruptRecord):
            store.get("f" * 64)  # no such image: it may be an alias the table holds
        for verb in (lambda: store.alias_create("new", fp), lambda: store.alias_delete("a1"),
                     lambda: store.alias_rename("a1", "a2"),
                     lambda: store.alias_update("a1", description="d"),
                     lambda: store.delete(fp),
                     lambda: store.import_file(make_image(tmp_path / "b.tar.xz",
                                                          compression="xz"), aliases=["b"])):
            with pytest.raises(CorruptRecord, match=r"aliases\.yaml"):
                verb()
            after = os.readlink(table) if table.is_symlink() else \
                None if table.is_dir() else table.read_bytes()
            assert after == before
        assert [r.fingerprint for r in store.list()] == [fp]
        b = store.import_file(make_image(tmp_path / "b.tar.xz", compression="xz"))
        assert {r.fingerprint for r in store.list()} == {fp, b.fingerprint}
        (store.root / b.fingerprint / "image.yaml").unlink()  # undone by hand for the next turn
        store.cleanup_leftovers()
    table.unlink()
    table.write_text(good)  # the repair: the table back as it was
    assert store.get("a1").fingerprint == fp
    store.delete("a1")
    assert store.aliases() == {} and store.list() == []


# -- changes ------------------------------------------------------------------------------------

def test_delete_removes_files_and_aliases(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    a = store.import_file(make_image(tmp_path / "a.tar.gz"), aliases=["a1", "a2"])
    b = store.import_file(make_image(tmp_path / "b.tar.xz", compression="xz"), aliases=["b"])
    store.delete("a1")
    assert store.aliases() == {"b": {"target": b.fingerprint, "description": ""}}
    assert store_entries(store) == [b.fingerprint]
    with pytest.raises(NotFound):
        store.get(a.fingerprint)
    with pytest.raises(NotFound):
        store.delete(a.fingerprint)
    # it can come back
    assert store.import_file(tmp_path / "a.tar.gz").fingerprint == a.fingerprint


def test_update_and_touch(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "a.tar.gz"), aliases=["a"])
    when = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    new = store.update("a", properties={"os": "x"}, public=True, auto_update=True,
                       expires_at=when)
    assert new.properties == {"os": "x"} and new.public and new.auto_update
    assert new.expires_at == when
    assert store.get(rec.fingerprint) == new
    assert store.update("a", public=False).expires_at == when  # untouched
    assert store.update("a", expires_at=None).expires_at is None
    assert store.update("a", expires_at="2031-01-02T03:04:05Z").expires_at == when
    assert store.update("a", expires_at="0001-01-01T00:00:00Z").expires_at is None
    assert store.update("a", cached=True).cached is True
    for bad in ({"public": "yes"}, {"properties": {"a": 1}}, {"expires_at": "tomorrow"}):
        with pytest.raises(InvalidArgument):
            store.update("a", **bad)  # type: ignore[arg-type]
    before = datetime.now(UTC)
    store.touch(rec.fingerprint)
    used = store.get("a").last_used_at
    assert used is not None and used >= before
    with pytest.raises(InvalidArgument):
        store.touch("../etc")
    with pytest.raises(NotFound):
        store.touch("0" * 64)


@pytest.mark.parametrize("bad", ["../../etc", "A" * 64, "abc", "a" * 63 + "/"])
def test_fingerprints_validated_before_path_use(tmp_path: Path, bad: str) -> None:
    store = make_store(tmp_path)
    for call in (store.tarball_path, store.rootfs_path, store.touch):
        with pytest.raises(InvalidArgument, match="invalid image fingerprint"):
            call(bad)
    (tmp_path / "d").mkdir()
    with pytest.raises(InvalidArgument):
        store.unpack(bad, tmp_path / "d")


# -- crash leftovers and concurrency -------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftovers_are_cleaned(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "a.tar.gz"))
    dead = _dead_pid()
    root = store.root
    (root / f".import-{dead}-abc-0").write_bytes(b"partial")
    (root / f".aliases.yaml.tmp{dead}").write_bytes(b"partial")
    orphan = root / ("c" * 64)
    orphan.mkdir()
    (orphan / "image").write_bytes(b"half")
    live = store.paths.run / "image-imports" / f"{os.getpid()}-live-0"
    live.write_bytes(b"in progress")
    (live.parent / f"{dead}-abc-0").write_bytes(b"partial")
    busy = root / ("d" * 64)
    busy.mkdir()
    with lock(store.paths, "image", "d" * 64):  # an import committing right now
        assert store.list() == [rec]
        assert busy.exists()
    assert live.exists()
    assert sorted(store_entries(store)) == sorted([rec.fingerprint, f".import/{live.name}",
                                                  busy.name])
    live.unlink()
    store.list()
    assert store_entries(store) == [rec.fingerprint]


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from lxdlib.state import Paths
    from lxdlib.imagestore import ImageStore
    def progress(done, total):
        if done >= {at}:
            os.kill(os.getpid(), signal.SIGKILL)
    ImageStore(Paths.at(sys.argv[1])).import_file(sys.argv[2], aliases=["x"], progress=progress)
""")


def test_kill_during_import_leaves_no_image(tmp_path: Path) -> None:
    members = good_members([reg("rootfs/big", os.urandom(4 * 1024 * 1024))])
    image = make_image(tmp_path / "img.tar", members, compression="none")
    store = make_store(tmp_path)
    proc = subprocess.run([PYTHON, "-c", _KILLER.format(at=2 * 1024 * 1024),
                           str(store.paths.root), str(image)], cwd=REPO, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert any(n.startswith(".import/") for n in store_entries(store))  # the torn copy
    assert store.list() == []
    assert store_entries(store) == []
    assert store.import_file(image, aliases=["x"]).fingerprint == sha256(image)


_IMPORTER = textwrap.dedent("""
    import sys
    from lxdlib.errors import AlreadyExists
    from lxdlib.state import Paths
    from lxdlib.imagestore import ImageStore
    try:
        ImageStore(Paths.at(sys.argv[1])).import_file(sys.argv[2])
        print("imported")
    except AlreadyExists:
        print("exists")
""")


def test_concurrent_imports_of_one_image(tmp_path: Path) -> None:
    members = good_members([reg("rootfs/big", os.urandom(2 * 1024 * 1024))])
    image = make_image(tmp_path / "img.tar.gz", members)
    store = make_store(tmp_path)
    procs = [subprocess.Popen([PYTHON, "-c", _IMPORTER, str(store.paths.root), str(image)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = sorted(p.communicate()[0].strip() for p in procs)
    assert outputs == ["exists", "exists", "exists", "imported"]
    assert [r.fingerprint for r in store.list()] == [sha256(image)]
    assert store_entries(store) == [sha256(image)]


# -- split images -------------------------------------------------------------------------------

def test_split_image(tmp_path: Path) -> None:
    meta = make_image(tmp_path / "meta.tar.xz",
                      [reg("metadata.yaml", METADATA), dir_("templates"),
                       reg("templates/hostname.tpl", b"{{ container.name }}\n")],
                      compression="xz")
    rootfs = make_image(tmp_path / "rootfs.tar.xz",
                        [dir_("."), dir_("./bin"), reg("./bin/sh", b"sh", mode=0o755),
                         dir_("./tmp", 0o1777), dev("./dev/null", major=1, minor=3)],
                        compression="xz", fmt=tarfile.GNU_FORMAT)
    store = make_store(tmp_path)
    rec = store.import_file(meta, rootfs_path=rootfs, aliases=["split"])
    assert rec.fingerprint == hashlib.sha256(meta.read_bytes() + rootfs.read_bytes()).hexdigest()
    assert rec.size == meta.stat().st_size + rootfs.stat().st_size
    assert rec.filename == "meta.tar.xz"
    assert store.rootfs_path(rec.fingerprint) is not None
    dest = tmp_path / "vol"
    dest.mkdir()
    store.unpack(rec.fingerprint, dest)
    assert (dest / "metadata.yaml").read_bytes() == METADATA
    assert (dest / "templates/hostname.tpl").is_file()
    assert (dest / "rootfs/bin/sh").read_bytes() == b"sh"
    assert (dest / "rootfs/tmp").stat().st_mode & 0o7777 == 0o1777
    assert list((dest / "rootfs/dev").iterdir()) == []


def test_split_image_rootfs_formats(tmp_path: Path) -> None:
    """A squashfs rootfs is accepted (unpacked by unsquashfs; a corrupt one fails there and
    leaves the volume empty); a VM disk is refused at import."""
    meta = make_image(tmp_path / "meta.tar.xz", [reg("metadata.yaml", METADATA)],
                      compression="xz")
    qcow = tmp_path / "disk.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(8188))
    store = make_store(tmp_path)
    with pytest.raises(ImageError, match="Unsupported rootfs format: qcow2"):
        store.import_file(meta, rootfs_path=qcow)
    assert store_entries(store) == []
    rootfs = tmp_path / "rootfs.squashfs"
    rootfs.write_bytes(b"hsqs" + bytes(8188))
    rec = store.import_file(meta, rootfs_path=rootfs)
    dest = tmp_path / "vol"
    dest.mkdir()
    with pytest.raises(ImageError, match="Unpack failed"):
        store.unpack(rec.fingerprint, dest)
    assert list(dest.iterdir()) == []


# -- unpack -------------------------------------------------------------------------------------

def _unpacked(tmp_path: Path, members: list | None = None) -> Path:  # type: ignore[type-arg]
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "img.tar.gz", members))
    dest = tmp_path / "vol"
    dest.mkdir(mode=0o700)
    store.unpack(rec.fingerprint, dest)
    return dest


def test_unpack_keeps_owners_modes_links_xattrs(tmp_path: Path) -> None:
    dest = _unpacked(tmp_path)
    assert (dest / "metadata.yaml").read_bytes() == METADATA
    assert os.readlink(dest / "rootfs/bin/sh") == "/bin/busybox"
    assert (dest / "rootfs/bin/su").stat().st_mode & 0o7777 == 0o4755
    assert (dest / "rootfs/tmp").stat().st_mode & 0o7777 == 0o1777
    st = (dest / "rootfs/home/user").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1234, 0o750)
    f = (dest / "rootfs/home/user/file").stat()
    assert (f.st_uid, f.st_gid, f.st_nlink) == (1000, 1234, 2)
    assert os.getxattr(dest / "rootfs/home/user/file", "user.test") == b"value"
    assert (dest / "rootfs/dev").is_dir()  # made although the image has none
    assert (dest.stat().st_mode & 0o777) == 0o700


def test_unpack_skips_dev_nodes_in_dev(tmp_path: Path) -> None:
    dest = _unpacked(tmp_path, good_members([
        dir_("rootfs/dev"), dev("rootfs/dev/null", major=1, minor=3),
        dev("rootfs/dev/sda", block=True), dir_("rootfs/dev/pts"),
    ]))
    assert (dest / "rootfs/dev").is_dir()
    assert list((dest / "rootfs/dev").iterdir()) == []


def test_unpack_destination_rules(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "img.tar.gz"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(InvalidArgument, match="not empty"):
        store.unpack(rec.fingerprint, full)
    with pytest.raises(InvalidArgument, match="not a directory"):
        store.unpack(rec.fingerprint, tmp_path / "missing")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InvalidArgument, match="not a directory"):
        store.unpack(rec.fingerprint, link)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with pytest.raises(NotFound):
        store.unpack("0" * 64, tmp_path / "elsewhere")


@pytest.mark.parametrize("members", [
    [reg("metadata.yaml", METADATA), dir_("rootfs")],
    [reg("metadata.yaml", METADATA), dir_("templates")],
])
def test_unpack_missing_rootfs(tmp_path: Path, members: list) -> None:  # type: ignore[type-arg]
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "img.tar.gz", members))
    dest = tmp_path / "vol"
    dest.mkdir()
    with pytest.raises(ImageError, match="Image is missing a rootfs"):
        store.unpack(rec.fingerprint, dest)
    assert list(dest.iterdir()) == []


def test_unpack_out_of_space(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        members = good_members([reg("rootfs/big", os.urandom(3 * 1024 * 1024))])
        store = make_store(tmp_path)
        rec = store.import_file(make_image(tmp_path / "img.tar.gz", members))
        with pytest.raises(QuotaExceeded, match="Cannot unpack image, run out of disk space"):
            store.unpack(rec.fingerprint, small)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_tar_bytes_helper_is_sane() -> None:
    assert len(tar_bytes(good_members())) % 512 == 0


# -- templates against a running container (issue 10 case 9) -------------------------------------

MOTD_TEMPLATES = {"/etc/motd": {"when": ["start"], "template": "motd.tpl"}}


def _templated_image(busybox: Path, out: Path, fifo_source: bool) -> Path:
    """The busybox image with a ``start`` template for /etc/motd; its source a FIFO if asked."""
    import io

    import yaml
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(busybox) as tf:
        for m in tf.getmembers():
            data = tf.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            if m.name.lstrip("./") == "metadata.yaml":
                meta = yaml.safe_load(data or b"")
                meta["templates"] = {**(meta.get("templates") or {}), **MOTD_TEMPLATES}
                data = yaml.safe_dump(meta).encode()
                m.size = len(data)
            members.append((m, data))
    if fifo_source:
        fifo = tarfile.TarInfo("templates/motd.tpl")
        fifo.type, fifo.mode = tarfile.FIFOTYPE, 0o644
        members.append((fifo, None))
    else:
        members.append(reg("templates/motd.tpl", b"hello {{ container.name }}\n"))
    with tarfile.open(out, "w:gz") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    return out


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child, bounded: a hang fails the test instead of wedging the suite."""
    return subprocess.run([PYTHON, "-m", "lxdlib.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_template_fifo_source_fails_start(host, busybox_tarball: Path,  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    """A FIFO shipped as a template's source: the start fails at once, naming the template."""
    img = _templated_image(busybox_tarball, tmp_path / "fifo.tar.gz", fifo_source=True)
    host.images.import_file(img, aliases=["fifo-src"])
    r = _cli(host.paths.root, "launch", "fifo-src", "c1")
    assert r.returncode != 0
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert "'motd.tpl'" in r.stderr and "FIFO" in r.stderr, r.stderr
    assert host.instances["c1"].status == "Stopped"


def test_template_fifo_target_planted_by_container(host,  # type: ignore[no-untyped-def]
                                                   busybox_tarball: Path,
                                                   tmp_path: Path) -> None:
    """The container's root replaces a ``start`` template's target by a FIFO: the next start
    fails with an error naming the target (as LXD does) and does not hang; a regular file
    there again lets it start."""
    from lxdlib.errors import TemplateError
    img = _templated_image(busybox_tarball, tmp_path / "ok.tar.gz", fifo_source=False)
    host.images.import_file(img, aliases=["tpl"])
    c = host.launch("tpl", "c1")
    assert c.exec(["cat", "/etc/motd"]).text == "hello c1\n"
    c.exec(["sh", "-c", "rm /etc/motd && mkfifo /etc/motd"], check=True)
    c.stop(force=True)
    r = _cli(host.paths.root, "start", "c1")
    assert r.returncode != 0
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert "'/etc/motd'" in r.stderr and "FIFO" in r.stderr, r.stderr
    assert c.status == "Stopped"
    with pytest.raises(TemplateError, match="/etc/motd"):
        c.start()
    # a directory there is refused the same way
    (host.pool("default").volume_path("containers", "c1") / "rootfs/etc/motd").unlink()
    (host.pool("default").volume_path("containers", "c1") / "rootfs/etc/motd").mkdir()
    with pytest.raises(TemplateError, match="directory"):
        c.start()
    (host.pool("default").volume_path("containers", "c1") / "rootfs/etc/motd").rmdir()
    c.start()
    assert c.exec(["cat", "/etc/motd"]).text == "hello c1\n"


def test_touch_writes_a_use_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of uses (a launch_many) rewrites the image's record once per second, not once
    per instance; a later use is recorded; a clock that went back is recorded too."""
    from lxdlib.imagestore import store as store_module
    store = make_store(tmp_path)
    rec = store.import_file(make_image(tmp_path / "a.tar.gz"))
    path = store.root / rec.fingerprint / store_module.RECORD_FILE
    t0 = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    clock = [t0]
    monkeypatch.setattr(store_module, "_now", lambda: clock[0])
    store.touch(rec.fingerprint)
    assert store.get(rec.fingerprint).last_used_at == t0
    written = path.stat().st_ino
    for ms in (1, 400, 999):
        clock[0] = t0 + store_module.timedelta(milliseconds=ms)
        store.touch(rec.fingerprint)
    assert path.stat().st_ino == written  # not rewritten
    assert store.get(rec.fingerprint).last_used_at == t0
    clock[0] = t0 + store_module.timedelta(seconds=1)
    store.touch(rec.fingerprint)
    assert store.get(rec.fingerprint).last_used_at == clock[0]
    clock[0] = t0 - store_module.timedelta(seconds=5)
    store.touch(rec.fingerprint)
    assert store.get(rec.fingerprint).last_used_at == clock[0]
