"""The record's own YAML writer: whatever a record holds reads back exactly as written."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib import record
from lxdlib.record import InstanceRecord, SnapshotRecord
from lxdlib.state import load_yaml

# any text a Python str can hold and UTF-8 can encode (lone surrogates cannot be written at all)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
TRICKY = st.sampled_from(["", "yes", "No", "ON", "off", "y", "N", "true", "False", "null", "~",
                          "NULL", "1", "0x1f", "1_000", "1:20", "1e3", ".inf", "-.5", "2026-12-04",
                          "2026-12-04T15:43:17+00:00", "<<", "=", "- a", "a: b", "a #b", "#x",
                          "'q'", '"q"', "@x", "`x", "!x", "&x", "*x", "%x", "|", ">", "[a]",
                          "{a}", "a,b", "?", "-", " lead", "trail ", "tab\there", "nl\nx",
                          "cr\rx", "nel\x85x", "ls\u2028x", "ps\u2029x", "bom\ufeffx",
                          "del\x7fx", "c1\x9bx", "nul\x00x", "\ufffe", "\uffff", "😀",
                          "back\\slash", "é", "a/b.c-d_e"])
STR = st.one_of(TEXT, TRICKY)
SCALAR = st.one_of(STR, st.none(), st.booleans(), st.integers())


def values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return SCALAR
    inner = values(depth - 1)
    return st.one_of(SCALAR, st.dictionaries(STR, inner, max_size=4),
                     st.lists(st.one_of(SCALAR, st.dictionaries(STR, inner, max_size=3)),
                              max_size=3))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(STR, values(3), max_size=6))
def test_any_mapping_reads_back_as_written(data: dict[str, Any]) -> None:
    text = record.to_yaml(data)
    assert load_yaml(text) == data
    assert yaml.safe_load(text.decode()) == data  # the pure-Python reader agrees


def test_a_record_reads_back_and_stays_readable() -> None:
    rec = InstanceRecord(
        name="web", architecture="x86_64", created_at=dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
        pool="default", profiles=["default", "yes"],
        config={"image.description": "busybox 1.35.0 (x86_64)", "limits.cpu": "2",
                "user.note": "line\nbreak", "volatile.idmap.base": "1000000"},
        devices={"eth0": {"type": "nic", "network": "lxdbr0"}},
        snapshots=[SnapshotRecord(name="snap0", created_at=dt.datetime(2026, 12, 4,
                                                                       tzinfo=dt.UTC))])
    text = record.to_yaml(rec.to_dict())
    assert InstanceRecord.from_dict(load_yaml(text)) == rec
    lines = text.decode().splitlines()
    assert "name: web" in lines and "  limits.cpu: \"2\"" in lines
    assert "- default" in lines and '- "yes"' in lines
    assert "- name: snap0" in lines and "  stateful: false" in lines


def test_values_it_does_not_write_go_through_pyyaml() -> None:
    data = {"n": 3, "f": 1.5, "nested": [[1]], 7: "int key"}
    assert load_yaml(record.to_yaml(data)) == data


# what a double-quoted scalar may hold as it is, as the writer was first written (the
# complement of the characters it escapes, which it now lists instead: faster to compile)
KEPT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e\xa0-\u2027\u202a-\ud7ff"
                  r"\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def test_escapes_exactly_the_characters_not_kept() -> None:
    """Every code point of the basic plane and a sample of the others (lone surrogates cannot be
    written at all): written as it is where ``KEPT`` holds it, escaped otherwise."""
    points = [*range(0xD800), *range(0xE000, 0x10000), *range(0x10000, 0x110000, 97), 0x10FFFF]
    for code in points:
        c = chr(code)
        kept = record.to_yaml({"k": " " + c}) == f'k: " {c}"\n'.encode()
        assert kept == bool(KEPT.match(c)), hex(code)
