"""metadata.yaml checks (architecture names, creation date, properties, templates) and names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lxdlib.errors import ImageError
from lxdlib.imagestore.tarball import (
    is_fingerprint,
    member_name,
    normalise_architecture,
    parse_metadata,
)


@pytest.mark.parametrize(("given", "canonical"), [
    ("x86_64", "x86_64"), ("amd64", "x86_64"), ("AMD64", "x86_64"), ("i386", "i686"),
    ("i686", "i686"), ("arm64", "aarch64"), ("aarch64", "aarch64"), ("armhf", "armv7l"),
    ("armv7l", "armv7l"), ("ppc64el", "ppc64le"), ("ppc64le", "ppc64le"), ("s390x", "s390x"),
    ("riscv64", "riscv64"), ("loong64", "loongarch64"),
])
def test_normalise_architecture(given: str, canonical: str) -> None:
    assert normalise_architecture(given) == canonical


@pytest.mark.parametrize("given", ["vax", "", "sparc64", "pdp11", "x86_64/amd64"])
def test_normalise_architecture_unknown(given: str) -> None:
    with pytest.raises(ImageError, match="Unknown architecture"):
        normalise_architecture(given)


def test_parse_minimal() -> None:
    meta = parse_metadata(b"architecture: amd64\ncreation_date: 1424284563\n")
    assert meta.architecture == "x86_64"
    assert meta.creation_date == datetime(2015, 2, 18, 18, 36, 3, tzinfo=UTC)
    assert meta.expiry_date is None
    assert meta.properties == {}
    assert meta.templates == {}


def test_parse_full() -> None:
    meta = parse_metadata(
        b"architecture: aarch64\ncreation_date: 1700000000\nexpiry_date: 1800000000\n"
        b"properties: {os: Debian, release: 12, serial: 20240101, stable: true, gone: null}\n"
        b"templates:\n  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\n"
        b"  /etc/hosts:\n    when: [start]\n    template: sub/hosts.tpl\n    create_only: true\n"
        b"    properties: {k: 1}\n")
    assert meta.architecture == "aarch64"
    assert meta.expiry_date == datetime.fromtimestamp(1800000000, UTC)
    assert meta.properties == {"os": "Debian", "release": "12", "serial": "20240101",
                               "stable": "true"}
    assert meta.templates["/etc/hostname"] == {"template": "hostname.tpl",
                                               "when": ["create", "copy"],
                                               "create_only": False, "properties": {}}
    assert meta.templates["/etc/hosts"]["create_only"] is True
    assert meta.templates["/etc/hosts"]["properties"] == {"k": "1"}


def test_expiry_zero_is_none() -> None:
    meta = parse_metadata(b"architecture: x86_64\ncreation_date: 5\nexpiry_date: 0\n")
    assert meta.expiry_date is None


@pytest.mark.parametrize(("doc", "message"), [
    (b"creation_date: 5\n", "Missing architecture"),
    (b"architecture: ''\ncreation_date: 5\n", "Missing architecture"),
    (b"architecture: vax\ncreation_date: 5\n", "Unknown architecture"),
    (b"architecture: [x86_64]\ncreation_date: 5\n", "Unknown architecture"),
    (b"architecture: x86_64\n", "Missing creation date"),
    (b"architecture: x86_64\ncreation_date: 0\n", "Missing creation date"),
    (b"architecture: x86_64\ncreation_date: yesterday\n", "creation_date must be a unix"),
    (b"architecture: x86_64\ncreation_date: true\n", "creation_date must be a unix"),
    (b"architecture: x86_64\ncreation_date: -5\n", "must not be negative"),
    (b"architecture: x86_64\ncreation_date: 5\nexpiry_date: soon\n", "expiry_date"),
    (b"- a\n- b\n", "not a mapping"),
    (b"", "not a mapping"),
    (b"architecture: [\n", "Invalid metadata.yaml"),
    (b"architecture: x86_64\ncreation_date: 5\nproperties: [a]\n", "properties must be"),
    (b"architecture: x86_64\ncreation_date: 5\nproperties: {a: {b: c}}\n", "property 'a'"),
    (b"architecture: x86_64\ncreation_date: 5\ntemplates: [a]\n", "templates must be"),
    (b"architecture: x86_64\ncreation_date: 5\ntemplates: {etc/x: {template: a}}\n",
     "absolute path"),
    (b"architecture: x86_64\ncreation_date: 5\ntemplates: {/etc/x: {template: ../../x}}\n",
     "Invalid template file"),
    (b"architecture: x86_64\ncreation_date: 5\ntemplates: {/etc/x: {template: /etc/shadow}}\n",
     "Invalid template file"),
    (b"architecture: x86_64\ncreation_date: 5\ntemplates: {/etc/x: {when: [create]}}\n",
     "Invalid template file"),
    (b"architecture: x86_64\ncreation_date: 5\n"
     b"templates: {/etc/x: {template: a, when: [boot]}}\n", "Invalid template triggers"),
    (b"architecture: x86_64\ncreation_date: 5\ntemplates: {/etc/x: a}\n", "must be a mapping"),
])
def test_parse_refuses(doc: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_metadata(doc)


def test_yaml_tags_are_not_executed() -> None:
    with pytest.raises(ImageError, match=r"Invalid metadata\.yaml"):
        parse_metadata(b"architecture: !!python/object/apply:os.system ['true']\n")


@pytest.mark.parametrize(("raw", "name"), [
    ("metadata.yaml", "metadata.yaml"), ("./metadata.yaml", "metadata.yaml"),
    ("/metadata.yaml", "metadata.yaml"), ("/./metadata.yaml", "metadata.yaml"),
    ("././rootfs/bin", "rootfs/bin"), ("//././/metadata.yaml", "metadata.yaml"),
    ("rootfs/./x", "rootfs/./x"), ("../metadata.yaml", "../metadata.yaml"),
])
def test_member_name(raw: str, name: str) -> None:
    assert member_name(raw) == name


@pytest.mark.parametrize(("value", "ok"), [
    ("a" * 64, True), ("0123456789abcdef" * 4, True), ("A" * 64, False), ("a" * 63, False),
    ("a" * 65, False), ("g" * 64, False), ("../" + "a" * 61, False), ("", False),
    ("a" * 63 + "\n", False),
])
def test_is_fingerprint(value: str, ok: bool) -> None:
    assert is_fingerprint(value) is ok
