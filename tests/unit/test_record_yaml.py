"""lxdlib's records on disk: written as JSON, read back exactly as written (by lxdlib and by any
YAML reader), and records an older version wrote as YAML still read and saved as JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib import journal, record, state
from lxdlib.errors import CorruptRecord, InvalidArgument
from lxdlib.imagestore.remotes import Remotes
from lxdlib.imagestore.store import ImageRecord, ImageStore
from lxdlib.network.manager import NetworkManager
from lxdlib.profiles import ProfileStore
from lxdlib.record import InstanceRecord, SnapshotRecord
from lxdlib.state import (
    Paths,
    RecordSyntaxError,
    dump_yaml,
    encode_record,
    load_yaml_kept,
    parse_record,
    read_record,
    write_record,
)
from lxdlib.storage import pools

# any text a Python str can hold and UTF-8 can encode (lone surrogates cannot be written at all)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
TRICKY = ["", "yes", "No", "ON", "off", "y", "N", "true", "False", "null", "~", "NULL", "1",
          "0x1f", "1_000", "1:20", "1e3", "1.5", ".inf", "-.5", "NaN", "2026-12-04",
          "2026-12-04T15:43:17+00:00", "<<", "=", "- a", "a: b", "a #b", "#x", "'q'", '"q"',
          "@x", "`x", "!x", "&x", "*x", "%x", "|", ">", "[a]", "{a}", "a,b", "?", "-", " lead",
          "trail ", "tab\there", "nl\nx", "cr\rx", "crlf\r\nx", "nel\x85x", "ls\u2028x",
          "ps\u2029x", "bom\ufeffx", "del\x7fx", "c1\x9bx", "nul\x00x", "\ufffe", "\uffff",
          "😀", "back\\slash", "é", "a/b.c-d_e", "/", "\\u0041", "}", "]", "\"}"]
STR = st.one_of(TEXT, st.sampled_from(TRICKY))
SCALAR = st.one_of(STR, st.none(), st.booleans(), st.integers())


def values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return SCALAR
    inner = values(depth - 1)
    return st.one_of(SCALAR, st.dictionaries(STR, inner, max_size=4),
                     st.lists(inner, max_size=3))


def read_back(raw: bytes) -> list[Any]:
    """``raw`` as lxdlib reads it, and as both of PyYAML's readers read it."""
    return [parse_record(raw), yaml.load(raw, Loader=yaml.CSafeLoader),
            yaml.safe_load(raw.decode())]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(STR, values(3), max_size=6))
def test_any_mapping_reads_back_as_written(data: dict[str, Any]) -> None:
    raw = encode_record(data)
    assert raw.lstrip().startswith(b"{")
    for got in read_back(raw):
        assert got == data
        assert list(got) == list(data)  # keys in the order written


@pytest.mark.parametrize("text", TRICKY)
def test_every_tricky_string_reads_back_as_written(text: str) -> None:
    data = {text: text, "list": [text, {text: [text]}]}
    for got in read_back(encode_record(data)):
        assert got == data


def test_the_format_is_indented_json() -> None:
    data = {"name": "c1", "config": {}, "devices": {"eth0": {"type": "nic"}}, "profiles": [],
            "ephemeral": False, "last_used_at": None, "note": "é\n"}
    raw = encode_record(data)
    assert json.loads(raw) == data
    assert raw.decode().splitlines()[:4] == ['{', '  "name": "c1",', '  "config": {},',
                                             '  "devices": {']
    assert '"note": "é\\n"' in raw.decode()  # UTF-8 as it is; control characters escaped


@pytest.mark.parametrize("value", [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), {1, 2}, b"x",
                                   float("nan"), object()])
def test_what_json_cannot_hold_is_refused(value: Any) -> None:
    """A value the records' ``to_dict`` should have made a string is refused, not written as
    something that reads back differently."""
    with pytest.raises((TypeError, ValueError)):
        encode_record({"k": value})


def test_a_lone_surrogate_is_refused() -> None:
    """Refused as the bad input it is (a byte that is not UTF-8, read from a command line),
    not a UnicodeEncodeError the command would end in with a traceback."""
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        encode_record({"k": "\ud800"})


# -- every kind of record, saved and read back ---------------------------------------------------

T0 = dt.datetime(2026, 12, 4, 15, 43, 17, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=dt.timezone(dt.timedelta(hours=2)))
ODD = {"yes": "no", "null": "null", "n": "1e3", "empty": "", "multi": "a\nb\r\n", "u": "é😀",
       "on": "~", "t": "2026-12-04", "c1": "\x85\u2028"}


def _instance(**changes: Any) -> InstanceRecord:
    fields: dict[str, Any] = dict(
        name="c1", architecture="x86_64", created_at=T0, pool="default",
        profiles=["default", "yes", "null"], config=dict(ODD),
        devices={"eth0": {"type": "nic", "network": "lxdbr0"}, "empty": {}},
        description="line1\nline2 ünï", ephemeral=True, last_used_at=T1,
        snapshots=[SnapshotRecord(name="s0", created_at=T0, expires_at=T1, stateful=True,
                                  description="no", config=dict(ODD),
                                  devices={"d": {"type": "disk", "path": "/"}},
                                  profiles=["default"]),
                   SnapshotRecord(name="s1", created_at=T1)])
    fields.update(changes)
    return InstanceRecord(**fields)


INSTANCES = [
    _instance(),
    _instance(last_used_at=None, snapshots=[], config={}, devices={}, profiles=[],
              description=""),
    _instance(type="virtual-machine", ephemeral=False),
]


@pytest.mark.parametrize("rec", INSTANCES)
def test_instance_records_round_trip(tmp_path: Path, rec: InstanceRecord) -> None:
    paths = Paths(tmp_path)
    paths.instance_dir(rec.name).mkdir(parents=True)
    record.save(paths, rec, durable=False)
    record.clear_cache()  # as a new process: parsed from the file
    assert record.load(paths, rec.name) == rec
    raw = paths.instance_record(rec.name).read_bytes()
    assert json.loads(raw) == rec.to_dict()  # times exactly as ``to_dict`` writes them
    assert json.loads(raw)["created_at"] == "2026-12-04T15:43:17+00:00"
    for got in read_back(raw):
        assert InstanceRecord.from_dict(got) == rec


def test_intent_records_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    journal.prepare(paths, "c1")
    details = {"old": INSTANCES[0].to_dict(), "stage": "prepare", "odd": ODD, "none": None,
               "empty": [], "n": 3}
    journal.begin(paths, "c1", "update", **details)
    got = journal.read(paths, "c1")
    assert got == {"op": "update", "pid": os.getpid(), **details, "end": True}
    journal.begin(paths, "c1", "update", **{**details, "stage": "live"})  # a later stage
    assert (journal.read(paths, "c1") or {})["stage"] == "live"
    raw = journal.path(paths, "c1").read_bytes()
    for cut in (1, len(raw) // 2, len(raw) - 1):  # killed while writing: "nothing started"
        journal.path(paths, "c1").write_bytes(raw[:cut])
        assert journal.read(paths, "c1") == {"op": "unknown"}


def test_profile_records_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.ensure()
    store = ProfileStore(paths, lambda name: [])
    paths.pools.mkdir(parents=True, exist_ok=True)
    (paths.pools / "p.yaml").write_text("{}")  # the pool the profile's disk names
    config = {"user.a": "yes", "user.b": "null", "user.c": "1e3",
              "cloud-init.user-data": "#cloud-config\nx: y\n"}
    store.create("p1", config, {"root": {"type": "disk", "path": "/", "pool": "p"}},
                 description="é\nnull")
    got = store.read("p1")
    assert got.config == config
    assert got.devices == {"root": {"type": "disk", "path": "/", "pool": "p"}}
    assert got.description == "é\nnull"
    raw = (paths.profiles / "p1.yaml").read_bytes()
    assert json.loads(raw)["config"]["user.a"] == "yes"


def test_network_records_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.ensure()
    mgr = NetworkManager(paths)
    rec = {"name": "br0", "type": "bridge", "managed": True, "description": "yes\n",
           "config": {"ipv4.address": "10.0.0.1/24", "ipv6.address": "none", "user.x": "no"}}
    mgr._write(dict(rec))
    assert mgr._read("br0") == rec
    assert json.loads((paths.networks / "br0.yaml").read_bytes()) == rec


def test_pool_image_and_remote_records_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.ensure()
    pool = {"name": "p", "driver": "dir", "description": "",
            "config": {"source": "/x y/é", "size": "1e3"}}
    write_record(paths.pools / "p.yaml", pool)
    assert pools.pool_record(paths, "p") == pool

    images = ImageStore(paths)
    img = ImageRecord(fingerprint="ab" * 32, filename="f.tar.xz", size=12345,
                      architecture="x86_64", created_at=T0, uploaded_at=T0.replace(second=0),
                      last_used_at=None, expires_at=T0, properties=dict(ODD), aliases=[],
                      public=False, auto_update=True, cached=True,
                      update_source={"server": "https://x", "alias": "yes"})
    (images.root / img.fingerprint).mkdir(parents=True)
    images._save(img)
    assert images._load(img.fingerprint) == img
    images._write_aliases({"null": {"target": img.fingerprint, "description": "no"}})
    assert images._read_aliases() == {"null": {"target": img.fingerprint, "description": "no"}}

    remotes = Remotes(paths)
    remotes.add("r1", "https://example.invalid:8443", protocol="simplestreams")
    assert read_record(remotes.path)["remotes"]["r1"]["addr"] == "https://example.invalid:8443"
    assert remotes.get("r1").addr == "https://example.invalid:8443"


# -- roots made by earlier versions: YAML records ----------------------------------------------

def test_an_older_yaml_instance_record_is_read_and_saved_as_json(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    rec = INSTANCES[0]
    # as earlier versions wrote it (PyYAML's block style; times as quoted strings)
    paths.instance_record("c1").write_text(dump_yaml(rec.to_dict()))
    record.clear_cache()
    assert record.load(paths, "c1") == rec
    record.save(paths, record.load(paths, "c1"))
    raw = paths.instance_record("c1").read_bytes()
    assert json.loads(raw) == rec.to_dict()
    record.clear_cache()
    assert record.load(paths, "c1") == rec


def test_an_older_yaml_record_with_yaml_timestamps_is_read(tmp_path: Path) -> None:
    """A hand-written record may hold YAML timestamps (datetimes, not strings)."""
    paths = Paths(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    paths.instance_record("c1").write_text(
        "name: c1\narchitecture: x86_64\npool: default\ncreated_at: 2026-12-04 15:43:17\n"
        "config:\n  limits.cpu: 2\n  user.a: yes\nsnapshots:\n"
        "- name: s0\n  created_at: 2026-12-04T15:43:17+00:00\n")
    record.clear_cache()
    rec = record.load(paths, "c1")
    assert rec.created_at == T0 and rec.snapshots[0].created_at == T0
    assert rec.config == {"limits.cpu": "2", "user.a": "True"}  # YAML 1.1 read it so
    record.save(paths, rec)
    assert json.loads(paths.instance_record("c1").read_bytes())["created_at"] == \
        "2026-12-04T15:43:17+00:00"


def test_an_older_yaml_profile_is_read_and_saved_as_json(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.ensure()
    (paths.profiles / "p1.yaml").write_text(
        "name: p1\ndescription: old one\nconfig:\n  user.a: 'yes'\ndevices:\n"
        "  root:\n    path: /\n    pool: default\n    type: disk\n")
    paths.pools.mkdir(parents=True, exist_ok=True)
    (paths.pools / "default.yaml").write_text("{}")
    store = ProfileStore(paths, lambda name: [])
    old = store.read("p1")
    assert old.config == {"user.a": "yes"} and old.description == "old one"
    store.save("p1", old.config, old.devices, old.description)
    raw = (paths.profiles / "p1.yaml").read_bytes()
    assert json.loads(raw) == {"name": "p1", "description": "old one",
                               "config": {"user.a": "yes"},
                               "devices": {"root": {"path": "/", "pool": "default",
                                                    "type": "disk"}}}
    assert store.read("p1") == old


def test_an_older_yaml_intent_is_read_and_the_next_is_json(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    journal.path(paths, "c1").write_text(
        "op: snapshot\npid: 1\nsnapshot: s0\nstage: volume\nend: true\n")
    assert journal.read(paths, "c1") == {"op": "snapshot", "pid": 1, "snapshot": "s0",
                                         "stage": "volume", "end": True}
    journal.path(paths, "c1").write_text("op: snapshot\npid: 1\nsnapshot: s0\n")  # cut short
    assert journal.read(paths, "c1") == {"op": "unknown"}
    journal.begin(paths, "c1", "snapshot", snapshot="s0", stage="record")
    assert json.loads(journal.path(paths, "c1").read_bytes())["stage"] == "record"


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "reason"), [
    (b'{"name": "c1",\n  "pool": ', r"not JSON \(.*\), and not YAML either \(.*\)"),
    (b"name: [c1\n", r"not JSON \(.*\), and not YAML either \(.*\)"),
    (b"\xff\xfe\x00garbage: [", r"not JSON .*, and not YAML either"),
    (b"- a list\n", "TypeError: a mapping was expected, not list"),
    (b'{"architecture": "x86_64"}', "KeyError: 'name'"),
    (b'{"name": "c1", "created_at": "not a time"}', "ValueError: Invalid isoformat"),
    # a string would be split into letters: profiles 'd', 'e', 'f'…
    (b'{"name": "c1", "profiles": "default"}', "TypeError: profiles must be a list of names"),
    (b'{"name": "c1", "profiles": ["default", 1]}', "TypeError: profiles must be a list"),
    (b'{"name": "c1", "snapshots": [{"name": "s0", "created_at": null, "profiles": "x"}]}',
     "TypeError: profiles must be a list"),
])
def test_a_corrupt_record_says_why(tmp_path: Path, content: bytes, reason: str) -> None:
    paths = Paths(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    paths.instance_record("c1").write_bytes(content)
    record.clear_cache()
    with pytest.raises(CorruptRecord, match=reason) as e:
        record.load(paths, "c1")
    assert e.value.name == "c1" and "\n" not in e.value.reason


def test_parse_record_names_both_parsers() -> None:
    with pytest.raises(RecordSyntaxError) as e:
        parse_record(b"{: [")
    assert e.value.reason.startswith("not JSON (") and "not YAML either (" in e.value.reason
    assert parse_record(b"") is None  # an empty file, as YAML reads it


# -- start-up ---------------------------------------------------------------------------------

def test_importing_the_library_does_not_import_yaml() -> None:
    """PyYAML costs ~14 ms to import; lxdlib's own records are JSON and need none of it."""
    code = "import sys, lxdlib.host, lxdlib.cli.main; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- an image's metadata.yaml, parsed once per change ------------------------------------------

def _kept(path: Path, memos: Path) -> Any:
    """As a new process reads it: from the memo files, not from this process's memory."""
    state.forget_kept()
    return load_yaml_kept(path.read_bytes(), memos)


def test_a_text_parsed_once_in_this_process_is_not_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second call finds the text in this process's memory: no memo read, no parse, and
    a value of its own to change."""
    meta, memos = tmp_path / "metadata.yaml", tmp_path / "memos"
    meta.write_text("templates:\n  /etc/hostname:\n    when: [create]\n")
    first = _kept(meta, memos)
    for f in memos.iterdir():
        f.unlink()

    def no_parsing(*a: Any, **kw: Any) -> Any:
        raise AssertionError("parsed again")
    monkeypatch.setattr(state, "load_yaml", no_parsing)
    again = load_yaml_kept(meta.read_bytes(), memos)
    assert again == first and again is not first
    again["templates"]["/etc/hostname"]["when"].append("copy")
    assert load_yaml_kept(meta.read_bytes(), memos) == first
    assert not list(memos.iterdir())  # nothing written either


def _memo(memos: Path) -> dict[str, Any]:
    [only] = memos.iterdir()
    data: dict[str, Any] = json.loads(only.read_bytes())
    return data


def test_yaml_from_elsewhere_is_parsed_once_per_text(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    meta, memos = tmp_path / "metadata.yaml", tmp_path / "memos"
    meta.write_text("architecture: x86_64\ntemplates:\n  /etc/hostname:\n"
                    "    when: [create, copy]\n    template: hostname.tpl\n")
    expected = yaml.safe_load(meta.read_text())
    assert _kept(meta, memos) == expected  # kept at once: the text is the key
    assert _memo(memos)["value"] == expected and memos.stat().st_mode & 0o777 == 0o700

    def no_parsing(*a: Any, **kw: Any) -> Any:
        raise AssertionError("parsed again")
    with monkeypatch.context() as m:
        m.setattr(state, "load_yaml", no_parsing)
        assert _kept(meta, memos) == expected
        other = tmp_path / "other.yaml"  # another file of the same text: the same memo
        other.write_bytes(meta.read_bytes())
        assert _kept(other, memos) == expected
    # changed at once, same size, times kept: parsed again all the same
    before = meta.stat()
    meta.write_text(meta.read_text().replace("copy", "copX"))
    os.utime(meta, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert meta.stat().st_size == before.st_size
    assert _kept(meta, memos)["templates"]["/etc/hostname"]["when"] == ["create", "copX"]
    assert len(list(memos.iterdir())) == 2
    for f in memos.iterdir():  # memos cut short: parsed again, and rewritten
        f.write_bytes(b'{"source": ')
    assert _kept(meta, memos) == _kept(meta, memos)


def test_a_memo_of_another_text_under_the_same_name_is_not_taken(tmp_path: Path) -> None:
    """The file's name is a checksum: a collision (or a planted file) is a miss, not a value."""
    meta, memos = tmp_path / "metadata.yaml", tmp_path / "memos"
    meta.write_text("a: 1\n")
    _kept(meta, memos)
    [path] = memos.iterdir()
    path.write_text(json.dumps({"source": "a: 2\n", "value": {"a": 2}}))
    assert _kept(meta, memos) == {"a": 1}
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.json")  # a symlinked memo is not read
    (tmp_path / "elsewhere.json").write_text(json.dumps({"source": "a: 1\n", "value": 7}))
    assert _kept(meta, memos) == {"a": 1}


@pytest.mark.parametrize("doc", ["creation_date: 2026-12-04 10:00:00\n", "1: one\n",
                                 "b: !!binary aGk=\n", "f: .nan\n"])
def test_yaml_json_does_not_carry_exactly_is_not_kept(tmp_path: Path, doc: str) -> None:
    meta, memos = tmp_path / "metadata.yaml", tmp_path / "memos"
    meta.write_text(doc)
    expected = yaml.safe_load(doc)
    got = _kept(meta, memos)
    assert not memos.exists() or not list(memos.iterdir())
    if doc != "f: .nan\n":
        assert got == expected


def test_a_record_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO put in a record's place blocked ``open`` until a writer came (every listing
    hung on it), a character device is no record either (``/dev/zero`` would be read for
    ever): both are ``RecordNotAFile`` at once, through ``read_record`` and the parse cache
    alike."""
    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    code = ("import sys; from lxdlib import state\n"
            "for read in (state.read_record, state.ParsedCache().read):\n"
            "    try:\n"
            "        read(sys.argv[1])\n"
            "    except state.RecordNotAFile as e:\n"
            "        print('refused', e)\n")
    for path in (str(fifo), "/dev/null"):
        r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                           timeout=20)
        assert r.stdout.count("refused") == 2 and "not a regular file" in r.stdout, r.stderr


def test_a_time_stored_without_its_zone_reads_as_utc() -> None:
    """A naive ``expires_at`` given to ``snapshots.create`` was stored as such and read back
    naive: the expiry sweep's comparison with an aware "now" raised TypeError, which ended
    ``housekeeping`` for every instance after it."""
    from lxdlib.snapshots import expired
    snap = SnapshotRecord.from_dict({"name": "s0", "created_at": "2026-01-01T00:00:00",
                                     "expires_at": "2030-01-01T00:00:00"})
    assert snap.expires_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert snap.created_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rec = InstanceRecord(name="c1", architecture="x86_64",
                         created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), pool="default",
                         snapshots=[snap])
    assert expired(rec, dt.datetime(2031, 1, 1, tzinfo=dt.UTC)) == ["s0"]


def test_a_profile_disk_on_a_missing_pool_is_refused_and_nothing_written(
        tmp_path: Path) -> None:
    from lxdlib.errors import NotFound
    paths = Paths(tmp_path)
    paths.ensure()
    store = ProfileStore(paths, lambda name: [])
    disk = {"type": "disk", "path": "/x", "pool": "nope", "source": "v"}
    with pytest.raises(NotFound, match="'nope'"):
        store.create("p1", {}, {"d": disk})
    assert not (paths.profiles / "p1.yaml").exists()
    store.create("p1", {"user.a": "1"}, {})
    with pytest.raises(NotFound, match="'nope'"):
        store.save("p1", {}, {"d": disk}, "")
    assert (store.read("p1").config, store.read("p1").devices) == ({"user.a": "1"}, {})
    with pytest.raises(NotFound, match="'nope'"):
        store.check({}, {"d": disk}, "")


_DEEP = """
import sys
from lxdlib.imagestore.tarball import parse_metadata
from lxdlib.errors import ImageError
from lxdlib.state import parse_record, RecordSyntaxError
deep = b"architecture: x86_64\\ncreation_date: 1\\nx: " + b"[" * 100_000 + b"]" * 100_000
try:
    parse_metadata(deep)
except ImageError as e:
    print("image:", e)
try:
    parse_record(deep)
except RecordSyntaxError as e:
    print("record:", e)
"""


def test_yaml_nested_past_the_c_stack_is_refused_not_a_crash() -> None:
    """An image's metadata.yaml (or a backup's index, a preseed, a record written by hand)
    of 200 KB of nested ``[``: libyaml's composer recursed until the process died by SIGSEGV;
    it is refused, and a shallower nesting still reads."""
    r = subprocess.run([sys.executable, "-c", _DEEP], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    # refused by the depth check, or by libyaml's own parser where it has a nesting limit
    # (the libyaml in PyYAML 6.0.4's wheel, which pip installs on a fresh machine, stops at
    # 1,000 flow levels; Debian's python3-yaml 6.0 does not)
    deep = re.compile(r"nests deeper than|maximum nesting depth")
    image, record = r.stdout.split("record: ", 1)
    assert image.startswith("image: Invalid metadata.yaml: ") and deep.search(image), r.stdout
    assert deep.search(record), r.stdout
    depth = state.MAX_YAML_DEPTH - 1  # and the mapping around it
    nested = "a: " + "[" * depth + "]" * depth
    assert state.load_yaml(nested)["a"] is not None
