"""Instance logic against a fake liblxc handle: what the engine does with the runtime's answers
(state when liblxc refuses a config, cgroup usage parsing, which cgroup files a live change
writes), without starting a container. Integration tests run the same paths on real liblxc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lxdlib import runtime
from lxdlib.context import Context
from lxdlib.errors import LXCError
from lxdlib.instance import InstanceCore, cgroup_usage
from lxdlib.state import Paths


class FakeHandle:
    """Duck-types ``runtime.Container`` for the members the engine uses here."""

    def __init__(self, state: str = "RUNNING", items: dict[str, str] | None = None) -> None:
        self.state = state
        self.init_pid = 4242 if state != "STOPPED" else -1
        self.items = dict(items or {})
        self.writes: list[tuple[str, str]] = []

    def get_cgroup_item(self, key: str) -> str | None:
        return self.items.get(key)

    def set_cgroup_item(self, key: str, value: str) -> None:
        self.writes.append((key, value))


@pytest.fixture
def inst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[InstanceCore, FakeHandle]:
    handle = FakeHandle()
    monkeypatch.setattr(runtime, "open_container", lambda lxcpath, name: handle)
    ctx = Context.open(Paths.at(tmp_path / "root"))
    return InstanceCore(ctx, "c1"), handle


@pytest.mark.parametrize(("state", "status", "running"), [
    ("RUNNING", "Running", True), ("FROZEN", "Frozen", True), ("STOPPED", "Stopped", False),
])
def test_state_comes_from_the_handle(inst: tuple[InstanceCore, FakeHandle], state: str,
                                     status: str, running: bool) -> None:
    core, handle = inst
    handle.state = state
    assert (core.state, core.status, core.running) == (state, status, running)


def test_a_config_liblxc_refuses_reads_as_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(lxcpath: Path, name: str) -> Any:
        raise LXCError("liblxc cannot load the config of c1", "lxc.bogus = 1")
    monkeypatch.setattr(runtime, "open_container", refuse)
    core = InstanceCore(Context.open(Paths.at(tmp_path / "root")), "c1")
    assert core.state == "ERROR" and not core.running


@pytest.mark.parametrize(("version", "items", "expected"), [
    (2, {"memory.current": "1048576\n", "cpu.stat": "usage_usec 1500\nuser_usec 1000\n",
         "pids.current": "3\n", "memory.peak": "4194304\n", "memory.swap.current": "0\n"},
     {"memory_usage": 1048576, "cpu_usage_ns": 1500000, "processes": 3,
      "memory_usage_peak": 4194304, "swap_usage": 0, "swap_usage_peak": None}),
    (2, {}, {"memory_usage": None, "cpu_usage_ns": None, "processes": None,
             "memory_usage_peak": None, "swap_usage": None, "swap_usage_peak": None}),
    # v1: swap is memsw minus memory, for the current figure and for the peak
    (1, {"memory.usage_in_bytes": "2048", "cpuacct.usage": "77", "pids.current": "1",
         "memory.max_usage_in_bytes": "8192", "memory.memsw.usage_in_bytes": "3072",
         "memory.memsw.max_usage_in_bytes": "10240"},
     {"memory_usage": 2048, "cpu_usage_ns": 77, "processes": 1, "memory_usage_peak": 8192,
      "swap_usage": 1024, "swap_usage_peak": 2048}),
    (2, {"memory.current": "garbage", "pids.current": ""},
     {"memory_usage": None, "cpu_usage_ns": None, "processes": None,
      "memory_usage_peak": None, "swap_usage": None, "swap_usage_peak": None}),
])
def test_cgroup_usage(monkeypatch: pytest.MonkeyPatch, version: int, items: dict[str, str],
                      expected: dict[str, Any]) -> None:
    monkeypatch.setattr(runtime, "cgroup_version", lambda: version)
    handle = FakeHandle(items=items)
    assert cgroup_usage("c1", -1, lambda: handle) == expected  # type: ignore[arg-type,return-value]


def test_a_live_memory_change_writes_only_memory_files(
        inst: tuple[InstanceCore, FakeHandle]) -> None:
    core, handle = inst
    core._apply_live({"limits.memory": "128MiB", "limits.cpu": "1"},
                     {"limits.memory": "256MiB", "limits.cpu": "1"})
    files = {key for key, _ in handle.writes}
    assert files and all(f.startswith("memory.") for f in files), handle.writes
    assert any(v == str(256 * 1024 * 1024) for _, v in handle.writes)


def test_no_change_writes_nothing(inst: tuple[InstanceCore, FakeHandle]) -> None:
    core, handle = inst
    core._apply_live({"limits.memory": "128MiB"}, {"limits.memory": "128MiB"})
    assert handle.writes == []
