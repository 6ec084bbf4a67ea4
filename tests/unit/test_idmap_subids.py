"""Reading subordinate-id files and rendered maps the way newuidmap and liblxc read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdlib import idmap
from lxdlib.idmap import IdRange


@pytest.mark.parametrize(("ranges", "start", "count", "ok"), [
    ([(1000000, 1000000000)], 1000000, 1000000000, True),
    ([(100000, 65536)], 1000000, 65536, False),
    ([(1000, 10), (1010, 10)], 1000, 20, True),  # adjacent entries together
    ([(1000, 10), (1011, 10)], 1000, 20, False),  # a hole at 1010
    ([(1000, 10)], 1005, 10, False),  # runs past the end
    ([(1000, 100), (1000, 5)], 1002, 98, True),
])
def test_covered(ranges: list[tuple[int, int]], start: int, count: int, ok: bool) -> None:
    assert idmap.covered(ranges, start, count) is ok


def test_parse_lxc_idmap_reads_only_idmap_lines() -> None:
    text = ("lxc.uts.name = c1\nlxc.idmap = u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\n"
            "lxc.idmap = u 1000 1000 x\n# lxc.idmap = u 0 0 1\n")
    assert idmap.parse_lxc_idmap(text) == [IdRange("u", 0, 1000000, 65536),
                                           IdRange("g", 0, 1000000, 65536)]


def test_subid_entries_and_root(tmp_path: Path) -> None:
    p = tmp_path / "subuid"
    p.write_text("alice:100000:65536\nroot:1000000:1000000000\nbad line\n0:5:6\n")
    assert idmap.subid_entries(p)[0] == ("alice", 100000, 65536)
    assert idmap.read_subids(p) == [(1000000, 1000000000), (5, 6)]
    assert idmap.read_subids(tmp_path / "missing") == []
