"""A network rename's intent settled by whoever finds it (the parts that need no bridge: a
network that was down), and a look-up while a live delete or rename has the record withdrawn."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lxdlib import state
from lxdlib.errors import NotFound
from lxdlib.network.manager import RENAME_INTENT, WITHDRAW_LOCK, NetworkManager
from lxdlib.state import Paths

REC = {"type": "bridge", "managed": True, "description": "", "config": {"user.k": "v"}}


def _manager(tmp_path: Path) -> NetworkManager:
    paths = Paths(tmp_path)
    paths.ensure()
    paths.networks.mkdir(parents=True, exist_ok=True)
    return NetworkManager(paths)


@pytest.mark.parametrize("committed", [False, True])
@pytest.mark.parametrize("moved", [False, True])
def test_a_killed_rename_is_settled_by_the_next_look_up(tmp_path: Path, committed: bool,
                                                        moved: bool) -> None:
    m = _manager(tmp_path)
    nets = m.paths.networks
    state.write_record(nets / ".old0.away", {**REC, "name": "old0"})
    state.write_record(nets / RENAME_INTENT, {"old": "old0", "new": "new0", "up": False})
    run = m.run_dir("new0" if moved else "old0")
    run.mkdir(parents=True)
    (run / "mark").write_text("x")
    if committed:
        state.write_record(nets / ".new0.away", {**REC, "name": "new0"})
    stands, gone = ("new0", "old0") if committed else ("old0", "new0")
    assert m.get(stands)["config"] == {"user.k": "v"}  # either name's look-up settles
    with pytest.raises(NotFound):
        m.get(gone)
    assert sorted(p.name for p in nets.iterdir()) == [f"{stands}.yaml"]
    assert (m.run_dir(stands) / "mark").read_text() == "x"  # the run directory follows
    assert not m.run_dir(gone).exists()
    assert [r["name"] for r in m.list()] == [stands]


def test_a_look_up_during_a_withdrawal_is_not_found(tmp_path: Path) -> None:
    """Before, ``_read`` of a name whose delete was under way put back nothing (the delete
    holds the lock) and asked again, until a RecursionError."""
    m = _manager(tmp_path)
    state.write_record(m.paths.networks / ".n0.away", {**REC, "name": "n0"})
    held, done = threading.Event(), threading.Event()

    def deleting() -> None:
        with state.lock(m.paths, WITHDRAW_LOCK, "n0"):
            held.set()
            done.wait(30)
    t = threading.Thread(target=deleting)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(NotFound):
            m.get("n0")
    finally:
        done.set()
        t.join()
    assert m.get("n0")["name"] == "n0"  # the delete gone: put back
