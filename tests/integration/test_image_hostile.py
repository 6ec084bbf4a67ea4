"""Hostile image tarballs: each one must end in a typed error or be neutralised, and never write
outside the destination volume. A failed import leaves no record and no file; a failed unpack
leaves the destination empty."""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib.errors import ImageError, UnsafeImage
from lxdlib.imagestore import ImageStore, unpack
from tests.integration.image_fixtures import (
    METADATA,
    Member,
    dev,
    dir_,
    good_members,
    hard,
    make_image,
    make_store,
    reg,
    store_entries,
    sym,
    tree,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, devices)")]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory next to the volume that no image may touch."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("host data\n")
    return d


@pytest.fixture
def abs_dir() -> Iterator[Path]:
    """A unique absolute path outside the test directory, named by an absolute member."""
    p = Path(tempfile.gettempdir()) / f"lxdlib-hostile-{secrets.token_hex(6)}"
    try:
        yield p
    finally:
        if os.path.lexists(p):
            shutil.rmtree(p, ignore_errors=True)


class Attempt:
    """Import then unpack one tarball, recording where (if anywhere) it was refused."""

    def __init__(self, tmp_path: Path, members: list[Member], compression: str = "gzip",
                 fmt: int = tarfile.PAX_FORMAT, raw: bytes | None = None) -> None:
        self.tmp_path = tmp_path
        self.store: ImageStore = make_store(tmp_path)
        self.image = tmp_path / "evil.img"
        if raw is not None:
            self.image.write_bytes(raw)
        else:
            make_image(self.image, members, compression=compression, fmt=fmt)
        self.dest = tmp_path / "vol"
        self.dest.mkdir(mode=0o711)
        self.import_error: BaseException | None = None
        self.unpack_error: BaseException | None = None
        self.before = self._outside_view()
        try:
            rec = self.store.import_file(self.image, aliases=["evil"])
        except ImageError as e:
            self.import_error = e
            assert self.store.list() == []
            assert self.store.aliases() == {}
            assert store_entries(self.store) == []
            return
        try:
            self.store.unpack(rec.fingerprint, self.dest)
        except ImageError as e:
            self.unpack_error = e
            assert list(self.dest.iterdir()) == [], "a failed unpack must leave the volume empty"

    def _outside_view(self) -> dict[str, object]:
        view = {k: v for k, v in tree(self.tmp_path).items()
                if not k.startswith(("root", "vol"))}
        view.update({f"../{n}": True for n in os.listdir(self.tmp_path.parent)})
        return view

    def check_nothing_outside(self) -> None:
        assert self._outside_view() == self.before
        st = os.stat(self.dest)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o711, 0, 0)

    @property
    def error(self) -> BaseException | None:
        return self.import_error or self.unpack_error


def test_dotdot_member(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, good_members([reg("../escape", b"x"), reg("../../escape2", b"x")]))
    assert isinstance(a.unpack_error, ImageError)
    assert "Unpack failed" in str(a.unpack_error)
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path.parent / "escape2").exists()
    a.check_nothing_outside()


def test_dotdot_inside_rootfs(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, good_members([reg("rootfs/../../escape", b"x"),
                                        reg("rootfs/../../outside/victim", b"overwritten")]))
    assert isinstance(a.unpack_error, ImageError)
    assert not (tmp_path / "escape").exists()
    assert (outside / "victim").read_text() == "host data\n"
    a.check_nothing_outside()


def test_absolute_member_is_contained(tmp_path: Path, outside: Path, abs_dir: Path) -> None:
    a = Attempt(tmp_path, good_members([reg(f"{abs_dir}/escape", b"x"),
                                        reg(f"{outside}/victim", b"overwritten")]))
    assert a.error is None  # GNU tar strips the leading "/": neutralised, not refused
    assert not abs_dir.exists()
    assert (a.dest / str(abs_dir).lstrip("/") / "escape").read_bytes() == b"x"
    assert (outside / "victim").read_text() == "host data\n"
    a.check_nothing_outside()


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_write_through_symlink(tmp_path: Path, outside: Path, link: str) -> None:
    target = str(outside) if link == "absolute" else "../../outside"
    a = Attempt(tmp_path, good_members([sym("rootfs/x", target), reg("rootfs/x/pwned", b"x"),
                                        reg("rootfs/x/victim", b"overwritten")]))
    assert isinstance(a.unpack_error, ImageError)
    assert not (outside / "pwned").exists()
    assert (outside / "victim").read_text() == "host data\n"
    a.check_nothing_outside()


def test_symlink_chain_through_dot(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, good_members([sym("rootfs/a", "."), sym("rootfs/b", "a/../../.."),
                                        reg("rootfs/b/outside/pwned", b"x")]))
    assert isinstance(a.unpack_error, ImageError)
    assert not (outside / "pwned").exists()
    a.check_nothing_outside()


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_hardlink_to_outside(tmp_path: Path, outside: Path, form: str) -> None:
    target = str(outside / "victim") if form == "absolute" else "../outside/victim"
    a = Attempt(tmp_path, good_members([hard("rootfs/h", target)]))
    assert isinstance(a.unpack_error, ImageError)
    assert os.stat(outside / "victim").st_nlink == 1
    a.check_nothing_outside()


def test_metadata_symlink(tmp_path: Path, outside: Path) -> None:
    members = [sym("metadata.yaml", str(outside / "victim")), *good_members()[1:]]
    a = Attempt(tmp_path, members)
    assert isinstance(a.import_error, ImageError)
    assert 'Cannot read non-regular file "metadata.yaml"' in str(a.import_error)
    # and unpack on its own (a pool filling a volume) refuses it too
    with pytest.raises(UnsafeImage, match="non-regular"):
        unpack(a.image, a.dest)
    assert list(a.dest.iterdir()) == []
    a.check_nothing_outside()


def test_appended_metadata_symlink(tmp_path: Path, outside: Path) -> None:
    # the first metadata.yaml is fine (import succeeds, as in LXD), a later one replaces it
    a = Attempt(tmp_path, good_members([sym("metadata.yaml", str(outside / "victim"))]))
    assert a.import_error is None
    assert isinstance(a.unpack_error, UnsafeImage)
    a.check_nothing_outside()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("more", [False, True])
def test_rootfs_symlink_to_host(tmp_path: Path, outside: Path, fmt: int, more: bool) -> None:
    members = [reg("metadata.yaml", METADATA), sym("rootfs", str(outside))]
    if more:
        members.append(reg("rootfs/pwned", b"x"))
    a = Attempt(tmp_path, members, fmt=fmt)
    assert isinstance(a.unpack_error, UnsafeImage if not more else ImageError)
    assert sorted(os.listdir(outside)) == ["victim"]
    a.check_nothing_outside()


def test_rootfs_symlink_inside(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, [reg("metadata.yaml", METADATA), dir_("templates"),
                           reg("templates/x", b"x"), sym("rootfs", "templates")])
    assert isinstance(a.unpack_error, UnsafeImage)
    a.check_nothing_outside()


@pytest.mark.parametrize("evil", [
    [sym("templates", "/etc")],
    [dir_("templates"), sym("templates/hostname.tpl", "/etc/shadow")],
])
def test_templates_symlink(tmp_path: Path, outside: Path, evil: list[Member]) -> None:
    members = [m for m in good_members() if not m[0].name.startswith("templates")] + evil
    a = Attempt(tmp_path, members)
    assert isinstance(a.unpack_error, UnsafeImage)
    a.check_nothing_outside()


@pytest.mark.parametrize("block", [True, False])
def test_device_nodes_in_dev_are_skipped(tmp_path: Path, outside: Path, block: bool) -> None:
    a = Attempt(tmp_path, good_members([dir_("rootfs/dev"),
                                        dev("rootfs/dev/sda", block=block, major=8, minor=0),
                                        dev("./rootfs/dev/mem", block=block, major=1, minor=1)]))
    assert a.error is None
    assert (a.dest / "rootfs/dev").is_dir()
    assert list((a.dest / "rootfs/dev").iterdir()) == []
    a.check_nothing_outside()


@pytest.mark.parametrize("path", ["rootfs/tmp/sda", "rootfs//dev/sda", "rootfs/./dev/mem",
                                  "templates/sda"])
def test_device_nodes_elsewhere_are_refused(tmp_path: Path, outside: Path, path: str) -> None:
    a = Attempt(tmp_path, good_members([dev(path, block=True, major=8, minor=0)]))
    assert isinstance(a.unpack_error, UnsafeImage)
    assert "device nodes" in str(a.unpack_error)
    a.check_nothing_outside()


def test_whiteout_char_device_is_harmless(tmp_path: Path, outside: Path) -> None:
    # 0/0 character devices (overlayfs whiteouts) need no CAP_MKNOD and open nothing.
    a = Attempt(tmp_path, good_members([dev("rootfs/tmp/wh", major=0, minor=0)]))
    assert a.error is None
    a.check_nothing_outside()


def test_trusted_xattrs_not_applied(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, good_members([
        dir_("rootfs/opaque"),
        reg("rootfs/opaque/f", b"x", pax={"SCHILY.xattr.trusted.overlay.opaque": "y",
                                          "SCHILY.xattr.user.ok": "1"}),
    ]))
    assert a.error is None
    names = os.listxattr(a.dest / "rootfs/opaque/f")
    assert "user.ok" in names and "trusted.overlay.opaque" not in names
    a.check_nothing_outside()


def test_volume_root_entry_cannot_change_volume(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, [dir_(".", 0o777, uid=1000, gid=1000), *good_members()],
                fmt=tarfile.GNU_FORMAT)
    assert a.error is None
    a.check_nothing_outside()  # includes: the volume root kept mode 0711 and owner 0:0


def _big_image(tmp_path: Path) -> bytes:
    members = good_members([reg("rootfs/big", os.urandom(2 * 1024 * 1024)),
                            reg("rootfs/tail", b"end")])
    return make_image(tmp_path / "source.tar.gz", members).read_bytes()


def test_truncated_archive(tmp_path: Path, outside: Path) -> None:
    data = _big_image(tmp_path)
    a = Attempt(tmp_path, [], raw=data[: len(data) // 2])
    assert isinstance(a.error, ImageError)
    a.check_nothing_outside()


@pytest.mark.parametrize("where", ["header", "middle"])
def test_corrupt_gzip(tmp_path: Path, outside: Path, where: str) -> None:
    data = bytearray(_big_image(tmp_path))
    at = 12 if where == "header" else len(data) // 2
    data[at:at + 4096] = secrets.token_bytes(4096)
    a = Attempt(tmp_path, [], raw=bytes(data))
    assert isinstance(a.error, ImageError)
    if where == "header":
        assert a.import_error is not None
        assert ".import-" not in str(a.import_error)  # names stdin, not our temp file
    a.check_nothing_outside()


def test_missing_metadata(tmp_path: Path, outside: Path) -> None:
    members = [m for m in good_members() if m[0].name != "metadata.yaml"]
    a = Attempt(tmp_path, members)
    assert isinstance(a.import_error, ImageError)
    assert "Metadata tarball is missing metadata.yaml" in str(a.import_error)
    with pytest.raises(ImageError, match="missing metadata"):
        unpack(a.image, a.dest)
    assert list(a.dest.iterdir()) == []
    a.check_nothing_outside()


def test_creation_date_zero(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, good_members(metadata=b"architecture: x86_64\ncreation_date: 0\n"))
    assert isinstance(a.import_error, ImageError)
    assert "Missing creation date" in str(a.import_error)
    a.check_nothing_outside()


def test_gzip_of_junk(tmp_path: Path, outside: Path) -> None:
    a = Attempt(tmp_path, [], raw=gzip.compress(secrets.token_bytes(256 * 1024)))
    assert isinstance(a.import_error, ImageError)
    a.check_nothing_outside()


def test_split_image_metadata_tarball_with_rootfs_symlink(tmp_path: Path, outside: Path) -> None:
    """A split image's rootfs is its rootfs file's alone: a ``rootfs`` symlink in the metadata
    tarball is dropped (or refused), never written through."""
    store = make_store(tmp_path)
    meta = make_image(tmp_path / "meta.tar.xz",
                      [reg("metadata.yaml", METADATA), sym("rootfs", str(outside))],
                      compression="xz")
    rootfs = make_image(tmp_path / "rootfs.tar.xz", [reg("pwned", b"x")], compression="xz")
    rec = store.import_file(meta, rootfs_path=rootfs)
    dest = tmp_path / "vol"
    dest.mkdir()
    try:
        store.unpack(rec.fingerprint, dest)
    except UnsafeImage:
        assert list(dest.iterdir()) == []
    else:
        assert (dest / "rootfs" / "pwned").is_file()
        assert not (dest / "rootfs").is_symlink()
    assert sorted(os.listdir(outside)) == ["victim"]


@pytest.mark.parametrize("name", ["rootfs/x", "./rootfs/x", "/rootfs/x", "rootfs//x",
                                  "./././rootfs/x"])
@pytest.mark.parametrize("kind", ["tar", "squashfs"])
def test_split_image_metadata_tarball_cannot_plant_a_symlink_in_the_rootfs(
        tmp_path: Path, outside: Path, name: str, kind: str) -> None:
    """The metadata tarball of a split image plants ``rootfs/x -> <host dir>``; the rootfs
    file then carries ``x/pwned``. The second unpack must not follow the first one's symlink:
    it did, and root wrote into any host directory (``/etc/cron.d``) from an imported image."""
    store = make_store(tmp_path)
    meta = make_image(tmp_path / "meta.tar.xz",
                      [reg("metadata.yaml", METADATA), sym(name, str(outside))],
                      compression="xz")
    if kind == "tar":
        rootfs = make_image(tmp_path / "rootfs.tar.xz",
                            [dir_("bin"), reg("bin/sh", b"x"), reg("x/pwned", b"pwned")],
                            compression="xz")
    else:
        src = tmp_path / "sq"
        (src / "x").mkdir(parents=True)
        (src / "x" / "pwned").write_bytes(b"pwned")
        rootfs = tmp_path / "rootfs.squashfs"
        subprocess.run(["mksquashfs", str(src), str(rootfs), "-noappend", "-quiet",
                        "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    rec = store.import_file(meta, rootfs_path=rootfs)
    dest = tmp_path / "vol"
    dest.mkdir()
    store.unpack(rec.fingerprint, dest)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (dest / "rootfs" / "x" / "pwned").read_bytes() == b"pwned"
    assert not (dest / "rootfs" / "x").is_symlink()
