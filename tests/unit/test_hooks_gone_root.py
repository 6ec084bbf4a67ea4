"""A hook that fires after its root was deleted (a test's clean-up, ``rm -rf`` of a root while
a container was stopping) must not bring the root back: opening it would recreate every
directory under it, owned by nobody's clean-up."""

from __future__ import annotations

from pathlib import Path

import pytest

import lxdlib
from lxdlib import hooks


def test_host_refuses_a_missing_root_without_create(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(lxdlib.NotFound, match="does not exist"):
        lxdlib.Host(gone, create=False)
    assert not gone.exists()


@pytest.mark.parametrize("argv_tail", [[], ["reap", "c1"]])
def test_late_hooks_do_not_recreate_a_deleted_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   argv_tail: list[str]) -> None:
    gone = tmp_path / "gone"
    monkeypatch.setenv("LXC_NAME", "c1")
    monkeypatch.setenv("LXC_HOOK_TYPE", "post-stop")
    monkeypatch.setenv("LXC_TARGET", "stop")
    assert hooks.main([str(gone), *argv_tail]) == 0
    assert not gone.exists()
