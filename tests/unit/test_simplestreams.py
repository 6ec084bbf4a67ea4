"""The simplestreams catalogue as LXD reads it: images from products, fingerprints, aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lxdlib.errors import ImageError, InvalidArgument, NotFound
from lxdlib.imagestore import simplestreams
from lxdlib.imagestore.simplestreams import (
    AliasEntry,
    apply_aliases,
    find_image,
    parse_index,
    parse_products,
    resolve_alias,
)


def h(c: str) -> str:
    return c * 64


def item(ftype: str, c: str, size: int = 10, **extra: str) -> dict[str, Any]:
    return {"ftype": ftype, "path": f"images/{c}.{ftype}", "size": size, "sha256": h(c),
            **extra}


def product(arch: str = "amd64", aliases: str = "alpine/3.19,alpine/latest",
            versions: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"aliases": aliases, "arch": arch, "os": "Alpine", "release": "3.19",
            "release_title": "3.19", "variant": "default",
            "versions": versions if versions is not None else {
                "20240101_13:00": {"items": {
                    "lxd.tar.xz": item("lxd.tar.xz", "a", combined_squashfs_sha256=h("b"),
                                       combined_rootxz_sha256=h("c")),
                    "root.squashfs": item("squashfs", "d", 100),
                    "root.tar.xz": item("root.tar.xz", "e", 90)}}},
            **extra}


def doc(**products: Any) -> dict[str, Any]:
    return {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
            "products": products}


def by_fp(images: list[Any]) -> dict[str, Any]:
    return {i.fingerprint: i for i in images}


def test_index_keeps_image_downloads_with_products() -> None:
    index = {"format": "index:1.0", "index": {
        "a": {"datatype": "image-downloads", "path": "streams/v1/a.json", "products": ["x"]},
        "b": {"datatype": "image-ids", "path": "streams/v1/b.json", "products": ["x"]},
        "c": {"datatype": "image-downloads", "path": "streams/v1/c.json", "products": []},
        "d": "garbage"}}
    assert parse_index(index) == ["streams/v1/a.json"]
    with pytest.raises(ImageError):
        parse_index({"format": "index:1.0"})


def test_split_pairs_fingerprints_and_properties() -> None:
    images = by_fp(parse_products(doc(p=product(support_eol="2025-11-01",
                                                lxd_requirements={"secureboot": "false"}))))
    assert set(images) == {h("b"), h("c")}  # one image per meta x root pair
    sq, xz = images[h("b")], images[h("c")]
    assert (sq.meta.sha256, sq.rootfs.sha256, sq.size) == (h("a"), h("d"), 110)
    assert (xz.rootfs.sha256, xz.size) == (h("e"), 100)
    assert sq.architecture == "x86_64" and sq.type == "container"
    assert sq.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert sq.expires_at == datetime(2025, 11, 1, tzinfo=UTC)
    assert sq.filename == "a.lxd.tar.xz"
    assert sq.properties == {
        "os": "Alpine", "release": "3.19", "architecture": "amd64", "variant": "default",
        "serial": "20240101_13:00", "description": "Alpine 3.19 amd64 (20240101_13:00)",
        "type": "squashfs", "requirements.secureboot": "false"}
    assert xz.properties["type"] == "root.tar.xz"


@pytest.mark.parametrize(("items", "expected"), [
    # root.tar.xz falls back to combined_sha256
    ({"m": item("lxd.tar.xz", "a", combined_sha256=h("f")), "r": item("root.tar.xz", "e")},
     {h("f")}),
    # no combined hash for the root type: skipped
    ({"m": item("lxd.tar.xz", "a"), "r": item("squashfs", "e")}, set()),
    # unified image: its own sha256
    ({"u": item("lxd_combined.tar.gz", "9")}, {h("9")}),
    # a fingerprint that is not 64 hex digits is never used
    ({"m": item("lxd.tar.xz", "a", combined_squashfs_sha256="../../etc"),
      "r": item("squashfs", "e")}, set()),
    # a root item with a bad hash, a VM disk, an incus-only item
    ({"m": item("lxd.tar.xz", "a", combined_rootxz_sha256=h("f")),
      "r": {**item("root.tar.xz", "e"), "sha256": "x"}}, set()),
    ({"m": item("lxd.tar.xz", "a", **{"combined_disk-kvm-img_sha256": h("f")}),
      "r": item("disk-kvm.img", "e")}, set()),
    ({"m": item("incus.tar.xz", "a", combined_squashfs_sha256=h("f")),
      "r": item("squashfs", "e")}, set()),
])
def test_fingerprint_rules(items: dict[str, Any], expected: set[str]) -> None:
    images = parse_products(doc(p=product(versions={"20240101": {"items": items}})))
    assert {i.fingerprint for i in images} == expected


@pytest.mark.parametrize("serial", ["2024", "notadate", "20241301_0000"])
def test_unusable_serials_are_skipped(serial: str) -> None:
    versions = {serial: {"items": {"u": item("lxd_combined.tar.gz", "9")}}}
    assert parse_products(doc(p=product(versions=versions))) == []


def test_unknown_architecture_and_garbage_are_skipped() -> None:
    assert parse_products(doc(p=product(arch="z80"), q="garbage", r={"versions": 3})) == []
    with pytest.raises(ImageError):
        parse_products({"products": []})


def test_label_in_description() -> None:
    versions = {"20240423": {"label": "release",
                             "items": {"u": item("lxd_combined.tar.gz", "9")}}}
    [img] = parse_products(doc(p=product(versions=versions)))
    assert img.properties["description"] == "Alpine 3.19 amd64 (release) (20240423)"
    assert img.properties["label"] == "release"


def unified(serial: str, c: str, arch: str = "amd64", aliases: str = "alpine/3.19"
            ) -> dict[str, Any]:
    return product(arch=arch, aliases=aliases,
                   versions={serial: {"items": {"u": item("lxd_combined.tar.gz", c)}}})


def images_of(*products: dict[str, Any]) -> list[Any]:
    return parse_products(doc(**{f"p{i}": p for i, p in enumerate(products)}))


def test_newest_serial_wins_and_short_aliases_only_native() -> None:
    imgs = images_of(unified("20240101_0000", "1"), unified("20240102_0000", "2"),
                     unified("20240103_0000", "3", arch="arm64"))
    out, entries = apply_aliases(imgs, native="x86_64")
    held = {i.fingerprint: i.aliases for i in out}
    assert held[h("2")] == ("alpine/3.19", "alpine/3.19/amd64")
    assert held[h("1")] == ()
    assert held[h("3")] == ("alpine/3.19/arm64",)  # short name exists, not listed on it
    assert resolve_alias(entries, "alpine/3.19", native="x86_64").target == h("2")
    assert resolve_alias(entries, "alpine/3.19", native="aarch64").target == h("3")
    assert resolve_alias(entries, "alpine/3.19/arm64", native="x86_64").target == h("3")
    assert resolve_alias(entries, "nosuch", native="x86_64") is None


def test_personality_then_any_architecture() -> None:
    imgs = images_of(unified("20240101", "1", arch="i386"), unified("20240101", "2",
                                                                    arch="s390x"))
    _, entries = apply_aliases(imgs, native="x86_64")
    assert resolve_alias(entries, "alpine/3.19", native="x86_64").target == h("1")
    only_other = [e for e in entries if e.architecture == "s390x"]
    assert resolve_alias(only_other, "alpine/3.19", native="x86_64").target == h("2")


def test_type_preference_within_one_version() -> None:
    imgs = parse_products(doc(p=product()))
    _, entries = apply_aliases(imgs, native="x86_64")
    assert resolve_alias(entries, "alpine/3.19", native="x86_64").target == h("b")  # squashfs
    _, entries = apply_aliases(imgs, native="x86_64", prefer=("root.tar.xz", "squashfs"))
    assert resolve_alias(entries, "alpine/3.19", native="x86_64").target == h("c")


def test_ubuntu_prefix_stripped_only_on_cloud_images() -> None:
    imgs = images_of(unified("20240101", "1", aliases="ubuntu/noble,default"))
    _, entries = apply_aliases(imgs, native="x86_64",
                               url="https://cloud-images.ubuntu.com/releases")
    assert {e.name for e in entries} == {"noble", "noble/amd64", "default", "default/amd64"}
    _, entries = apply_aliases(imgs, native="x86_64", url="https://example.org")
    assert "ubuntu/noble" in {e.name for e in entries}


def test_find_image_by_prefix() -> None:
    imgs = images_of(unified("20240101", "1"), unified("20240102", "2"))
    assert find_image(imgs, "22").fingerprint == h("2")
    with pytest.raises(NotFound):
        find_image(imgs, "33")
    with pytest.raises(InvalidArgument):
        find_image(imgs, "")
    twins = images_of(unified("20240101", "1"), unified("20240101", "1", arch="arm64"))
    assert len(twins) == 2 and find_image(twins, "11").fingerprint == h("1")
    near = [*imgs, *images_of(product(versions={"20240101": {"items": {
        "u": {**item("lxd_combined.tar.gz", "1"), "sha256": "1" * 63 + "0"}}}}))]
    with pytest.raises(InvalidArgument, match="More than one"):
        find_image(near, "111")


def test_alias_entries_are_plain_data() -> None:
    e = AliasEntry("a", h("1"), "x86_64")
    assert e.type == "container"


@pytest.mark.parametrize("path", ["..", "."])
def test_a_catalogue_path_cannot_name_the_cache_directory_or_its_parent(
        tmp_path: Path, path: str) -> None:
    """An index names its products files; ``..`` once made the cache file the cache
    directory's parent (read as a file: an untyped IsADirectoryError)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    client = simplestreams.Client("http://127.0.0.1:9", cache, timeout=2)
    with pytest.raises(ImageError):  # nothing cached, the server unreachable: a typed error
        client.get_json(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
