"""Instances keep starting when the host's ``/etc/subuid`` changes under them (issue 10, case 13).

An instance made while root had no subordinate ids got LXD's fallback range (1000000 +
1000000000). Installing LXD or podman later gives root another range, and ``newuidmap`` then
refuses the instance's map. lxdlib must register its fallback again, or, when another user was
given part of it, refuse with an error that says which ids and what to run.

``/etc/subuid`` and ``/etc/subgid`` are host-global and other tests start containers at the same
time: each test changes them only around one ``start`` and puts the exact bytes back at once
(atomically, also on failure), and the fixture checks that they are back.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib import idmap
from lxdlib.errors import IdmapNotAllowed

pytestmark = pytest.mark.root

FILES = (idmap.SUBUID, idmap.SUBGID)
FALLBACK = f"root:{idmap.FALLBACK_BASE}:{idmap.FALLBACK_SIZE}"


def _replace(path: Path, data: bytes, st: os.stat_result) -> None:
    """Swap ``path``'s content in one rename (readers see old or new), keeping owner and mode."""
    tmp = path.with_name(f".{path.name}.lxdlib-test{os.getpid()}")
    tmp.write_bytes(data)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


@pytest.fixture
def subids() -> Iterator[Callable[[str], None]]:
    """``set(text)`` writes ``text`` to both files; whatever happens they get their exact bytes,
    owner and mode back when ``restore`` is called or the test ends."""
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        pytest.skip("newuidmap/newgidmap not installed (package uidmap; setup.sh installs it)")
    saved = {p: (p.read_bytes(), p.stat()) for p in FILES}

    def restore() -> None:
        for p, (data, st) in saved.items():
            if p.read_bytes() != data:
                _replace(p, data, st)

    def set_both(text: str) -> None:
        try:
            for p, (_, st) in saved.items():
                _replace(p, text.encode(), st)
        except BaseException:
            restore()
            raise

    set_both.restore = restore  # type: ignore[attr-defined]
    try:
        yield set_both
    finally:
        restore()
        for p, (data, st) in saved.items():
            now = p.stat()
            assert p.read_bytes() == data and (now.st_mode, now.st_uid, now.st_gid) == \
                (st.st_mode, st.st_uid, st.st_gid)


def _fallback_instance(host: lxdlib.Host, name: str) -> lxdlib.Instance:
    c = host.create("busybox", name)
    if c.config.get("volatile.idmap.base") != str(idmap.FALLBACK_BASE):
        pytest.skip("root's subordinate range on this host is not lxdlib's fallback")
    return c


def test_fallback_instance_starts_after_root_gets_another_range(
        host: lxdlib.Host, subids: Callable[[str], None]) -> None:
    c = _fallback_instance(host, "im1")
    subids("root:100000:65536\n")  # what uidmap's useradd, LXD or podman leave for root
    try:
        c.start()
        after = [p.read_text() for p in FILES]
    finally:
        subids.restore()  # type: ignore[attr-defined]
    assert c.state == "RUNNING"
    assert c.exec(["id", "-u"]).text.strip() == "0"
    for text in after:  # root's new range kept, the fallback added back after it
        assert text == f"root:100000:65536\n{FALLBACK}\n"


def test_fallback_given_to_another_user_is_refused_with_the_fix(
        host: lxdlib.Host, subids: Callable[[str], None]) -> None:
    c = _fallback_instance(host, "im2")
    theirs = f"root:100000:65536\nalice:{idmap.FALLBACK_BASE + 65536}:65536\n"
    subids(theirs)
    try:
        with pytest.raises(IdmapNotAllowed) as e:
            c.start()
        after = [p.read_text() for p in FILES]
    finally:
        subids.restore()  # type: ignore[attr-defined]
    msg = str(e.value)
    assert "host uids 1000000-1000999999" in msg and "host gids 1000000-1000999999" in msg
    assert f"alice:{idmap.FALLBACK_BASE + 65536}:65536" in msg
    assert f"echo {FALLBACK} >> /etc/subuid" in msg and f"echo {FALLBACK} >> /etc/subgid" in msg
    assert after == [theirs, theirs]  # nothing given to root over another user's ids
    assert c.state == "STOPPED"
