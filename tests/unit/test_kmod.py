"""``linux.kernel_modules``: what reaches modprobe (a stand-in on PATH records its arguments)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdlib import kmod
from lxdlib.errors import InvalidConfig


@pytest.fixture
def modprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "argv"
    tool = tmp_path / "modprobe"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(kmod, "is_loaded", lambda name: False)
    return log


@pytest.mark.parametrize("name", ["-v", "--dry-run", "-C", "-"])
def test_an_option_is_not_a_module(modprobe: Path, name: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid module name"):
        kmod.ensure_loaded([name])
    assert not modprobe.exists()


def test_the_name_follows_the_options(modprobe: Path) -> None:
    kmod.ensure_loaded(["br_netfilter", "ip-tables"])
    assert modprobe.read_text().splitlines() == ["-b -- br_netfilter", "-b -- ip-tables"]
