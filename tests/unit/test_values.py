"""``lxdlib.values.Value``: the attrs behaviour the classes every command loads rely on
(equality, hash, immutability, ``repr``, ``evolve``, copies and pickles), table-driven on the
real classes."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
from pathlib import Path

import pytest

from lxdlib import values
from lxdlib.execresult import ExecResult
from lxdlib.listing import Listed
from lxdlib.livestate import Layout, Live
from lxdlib.record import InstanceRecord, SnapshotRecord
from lxdlib.state import Paths

WHEN = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
FROZEN = [
    (Live("RUNNING", 7), Live("RUNNING", 7), Live("FROZEN", 7), "Live(state='RUNNING', pid=7)"),
    (Layout(2, (Path("/x"),)), Layout(2, (Path("/x"),)), Layout(1, (Path("/x"),)),
     "Layout(version=2, bases=(PosixPath('/x'),))"),
    (ExecResult(0, b"o", b""), ExecResult(0, b"o", b""), ExecResult(1, b"o", b""),
     "ExecResult(returncode=0, stdout=b'o', stderr=b'')"),
    (Listed("c", "STOPPED"), Listed("c", "STOPPED"), Listed("c", "STOPPED", error="e"),
     "Listed(name='c', state='STOPPED', pid=-1, record=None, error=None, network=None)"),
    (Paths(Path("/r")), Paths(Path("/r")), Paths(Path("/s")), "Paths(root=PosixPath('/r'))"),
]


@pytest.mark.parametrize(("a", "same", "other", "shown"), FROZEN)
def test_frozen_values(a: values.Value, same: values.Value, other: values.Value,
                       shown: str) -> None:
    assert a == same and hash(a) == hash(same) and a != other and repr(a) == shown
    assert len({a, same, other}) == 2
    field = values.fields(type(a))[0]
    with pytest.raises(values.FrozenError):
        setattr(a, field, None)
    with pytest.raises(AttributeError):
        delattr(a, field)
    with pytest.raises(AttributeError):  # slots: no stray attribute either
        object.__setattr__(a, "stray", 1)
    for twin in (copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert twin == a and twin is not a and hash(twin) == hash(a)
    assert a.evolve() == a and a.evolve() is not a
    assert a != (values.fields(type(a)),) and a != object()


def test_paths_are_computed_by_init_and_compared_by_root() -> None:
    p = Paths(Path("/r"))
    assert p.lxcpath == Path("/r/containers") and p.metadata_memos == Path("/r/run/image-metadata")
    moved = p.evolve(root=Path("/s"))
    assert moved.lxcpath == Path("/s/containers")  # evolve goes through __init__, as attrs'
    assert pickle.loads(pickle.dumps(p)).locks == Path("/r/locks")


def test_records_are_mutable_unhashable_and_evolve() -> None:
    snap = SnapshotRecord("s0", WHEN, config={"a": "b"})
    rec = InstanceRecord("c1", "x86_64", WHEN, "default", snapshots=[snap])
    assert rec == InstanceRecord("c1", "x86_64", WHEN, "default", snapshots=[
        SnapshotRecord("s0", WHEN, config={"a": "b"})])
    with pytest.raises(TypeError):
        hash(rec)
    rec.pool = "other"
    assert rec.pool == "other" and rec != InstanceRecord("c1", "x86_64", WHEN, "default")
    changed = snap.evolve(config={"x": "y"})
    assert changed.config == {"x": "y"} and snap.config == {"a": "b"}
    assert changed.name == "s0" and changed.created_at == WHEN
    with pytest.raises(TypeError, match="no field 'nope'"):
        snap.evolve(nope=1)
    # defaults are fresh containers per instance, as attrs' factories
    a, b = InstanceRecord("a", "x", WHEN, "p"), InstanceRecord("b", "x", WHEN, "p")
    a.config["k"] = "v"
    assert b.config == {} and a.profiles is not b.profiles
    assert pickle.loads(pickle.dumps(rec)) == rec
    assert values.fields(InstanceRecord)[:4] == ("name", "architecture", "created_at", "pool")


def test_a_value_must_name_its_fields() -> None:
    """Without ``_fields`` equality and ``repr`` would see nothing: refused at class creation."""
    with pytest.raises(TypeError, match="names no _fields"):
        class Nameless(values.Value):
            __slots__ = ("a",)


def test_a_context_is_frozen_and_equal_only_to_itself(tmp_path: Path) -> None:
    """``eq=False``: two contexts of one root are two sets of caches, never equal; each is
    hashable by identity and as frozen as any value."""
    from lxdlib.context import Context
    paths = Paths(tmp_path)
    a, b = Context.open(paths), Context.open(paths)
    assert a == a and a != b and len({a, b, a}) == 2 and hash(a) == object.__hash__(a)
    with pytest.raises(values.FrozenError):
        a.paths = Paths(tmp_path / "x")  # type: ignore[misc]
    assert repr(a).startswith(f"Context(paths={paths!r}, events=")
