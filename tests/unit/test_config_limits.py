"""Config -> cgroup writes and prlimits (LXD's initLXC / Update arithmetic)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib.config.limits import (
    cgroup_settings,
    cpu_limit,
    cpu_shares,
    format_cpuset,
    live_settings,
    memory_limit_bytes,
    parse_cpuset,
    parse_prlimit_value,
    pick_cpus,
    prlimits,
    unset_values,
)
from lxdlib.errors import InvalidArgument, InvalidConfig

GIB = 2**30
MEM = 8 * GIB


def settings_for(config: dict[str, str], v: int, **kw: object) -> dict[str, str]:
    return cgroup_settings(config, cgroup_version=v, host_cpus=4, mem_total=MEM, **kw)  # type: ignore[arg-type]


# -- ref §13 item 4: CPUs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "cpuset"),
    [("2", "0-1"), ("1", "0"), ("4", "0-3"), ("64", "0-3"), ("0-1", "0-1"), ("1-1", "1"),
     ("1,3", "1,3"), ("0,2-3", "0,2-3")],
)
@pytest.mark.parametrize("v", [1, 2])
def test_limits_cpu(value: str, cpuset: str, v: int) -> None:
    assert settings_for({"limits.cpu": value}, v) == {"cpuset.cpus": cpuset}


def test_limits_cpu_count_uses_balancer_choice() -> None:
    assert settings_for({"limits.cpu": "2"}, 1, chosen_cpus=[1, 3]) == {"cpuset.cpus": "1,3"}
    with pytest.raises(InvalidArgument):
        settings_for({"limits.cpu": "2"}, 1, chosen_cpus=[1])
    assert settings_for({"limits.cpu": "0"}, 2) == {}  # LXD: a count of 0 pins nothing


def test_limits_cpu_outside_host_refused() -> None:
    with pytest.raises(InvalidConfig, match="CPU 6 does not exist"):
        settings_for({"limits.cpu": "6-7"}, 2)


@pytest.mark.parametrize(
    ("config", "v", "expected"),
    [
        ({"limits.cpu.allowance": "50%"}, 2, {"cpu.weight": "50"}),
        ({"limits.cpu.allowance": "50%"}, 1, {"cpu.shares": "512"}),
        ({"limits.cpu.allowance": "25ms/100ms"}, 2,
         {"cpu.weight": "100", "cpu.max": "25000 100000"}),
        ({"limits.cpu.allowance": "25ms/100ms"}, 1,
         {"cpu.cfs_quota_us": "25000", "cpu.cfs_period_us": "100000"}),  # shares 1024: skipped
        ({"limits.cpu.allowance": "200ms/100ms"}, 1,
         {"cpu.cfs_quota_us": "200000", "cpu.cfs_period_us": "100000"}),
        ({"limits.cpu.priority": "5"}, 1, {"cpu.shares": "1019"}),
        ({"limits.cpu.priority": "5"}, 2, {"cpu.weight": "95"}),
        ({"limits.cpu.priority": "10"}, 1, {}),
        ({"limits.cpu.priority": "10"}, 2, {"cpu.weight": "100"}),
        ({"limits.cpu.priority": "0", "limits.cpu.allowance": "5%"}, 2, {"cpu.weight": "1"}),
        ({"limits.cpu.priority": "0", "limits.cpu.allowance": "1%"}, 1, {"cpu.shares": "2"}),
        ({"limits.cpu.allowance": "150%", "limits.cpu.priority": "8"}, 1, {"cpu.shares": "1534"}),
    ],
)
def test_cpu_allowance_and_priority(
    config: dict[str, str], v: int, expected: dict[str, str]
) -> None:
    assert settings_for(config, v) == expected


def test_cpu_shares_raw() -> None:
    assert cpu_shares("", "", 1) == (1024, -1, 100000)
    assert cpu_shares("", "", 2) == (100, -1, -1)
    assert cpu_shares("", "0", 1) == (1014, -1, 100000)
    assert cpu_shares("1%", "0", 2) == (0, -1, -1)  # floored at 0, like LXD


# -- ref §13 item 5: memory and processes ----------------------------------------------------
@pytest.mark.parametrize(
    ("config", "v", "expected"),
    [
        ({"limits.memory": "512MiB"}, 2,
         {"memory.max": "536870912", "memory.swap.max": "536870912"}),
        ({"limits.memory": "256MiB"}, 1,
         {"memory.limit_in_bytes": "268435456", "memory.memsw.limit_in_bytes": "536870912",
          "memory.soft_limit_in_bytes": "241591910"}),
        ({"limits.memory": "10%"}, 2,
         {"memory.max": str((MEM // 100) * 10), "memory.swap.max": str((MEM // 100) * 10)}),
        ({"limits.memory": "512MiB", "limits.memory.swap": "false"}, 2,
         {"memory.max": "536870912", "memory.swap.max": "0"}),
        ({"limits.memory": "256MiB", "limits.memory.swap": "false"}, 1,
         {"memory.limit_in_bytes": "268435456", "memory.memsw.limit_in_bytes": "268435456",
          "memory.soft_limit_in_bytes": "241591910", "memory.swappiness": "0"}),
        ({"limits.memory": "512MiB", "limits.memory.enforce": "soft"}, 2,
         {"memory.high": "536870912"}),
        ({"limits.memory": "512MiB", "limits.memory.enforce": "soft"}, 1,
         {"memory.soft_limit_in_bytes": "536870912"}),
        ({"limits.memory.swap.priority": "4"}, 1, {"memory.swappiness": "66"}),
        ({"limits.memory.swap.priority": "4"}, 2, {}),
        ({"limits.memory.swap": "no"}, 1, {"memory.swappiness": "0"}),
        ({"limits.processes": "100"}, 1, {"pids.max": "100"}),
        ({"limits.processes": "100"}, 2, {"pids.max": "100"}),
        ({"limits.disk.priority": "5"}, 1, {"blkio.weight": "500"}),
        ({"limits.disk.priority": "0"}, 2, {"io.weight": "10"}),
        ({"limits.disk.priority": "10"}, 2, {"io.weight": "1000"}),
        ({"limits.hugepages.2MB": "1GiB"}, 1, {"hugetlb.2MB.limit_in_bytes": str(GIB)}),
        ({"limits.hugepages.1GB": "2GiB", "limits.hugepages.64KB": "1MiB"}, 2,
         {"hugetlb.64KB.max": str(2**20), "hugetlb.1GB.max": str(2 * GIB)}),
        ({}, 1, {}),
        ({"user.x": "1", "limits.kernel.nofile": "10", "limits.memory.enforce": "soft"}, 2, {}),
    ],
)
def test_memory_processes_disk(config: dict[str, str], v: int, expected: dict[str, str]) -> None:
    assert settings_for(config, v) == expected


def test_swap_accounting_off() -> None:
    got = cgroup_settings({"limits.memory": "256MiB"}, cgroup_version=1, host_cpus=1,
                          mem_total=MEM, swap_accounting=False)
    assert got == {"memory.limit_in_bytes": "268435456", "memory.soft_limit_in_bytes": "241591910"}


@pytest.mark.parametrize("value", ["0%", "512KiB", "0", "x", "-1%"])
def test_memory_refused(value: str) -> None:
    with pytest.raises(InvalidConfig):
        memory_limit_bytes(value, MEM)


def test_memory_percent_arithmetic() -> None:
    # (total/100)*pct with integer division first, like LXD
    assert memory_limit_bytes("33%", 1001) == 330
    assert memory_limit_bytes("100%", MEM) == (MEM // 100) * 100
    with pytest.raises(InvalidArgument):
        memory_limit_bytes("10%", 0)


def test_bad_version_and_processes() -> None:
    with pytest.raises(InvalidArgument):
        settings_for({}, 3)
    with pytest.raises(InvalidConfig):
        settings_for({"limits.processes": "0"}, 2)


def test_write_order_v1_memory_before_cpu() -> None:
    got = list(settings_for({"limits.cpu": "1", "limits.memory": "1GiB",
                             "limits.processes": "5"}, 1))
    assert got.index("memory.limit_in_bytes") < got.index("memory.memsw.limit_in_bytes")
    assert got.index("memory.memsw.limit_in_bytes") < got.index("memory.soft_limit_in_bytes")


# -- cpusets ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", [0]), ("0-3", [0, 1, 2, 3]), ("1,3", [1, 3]), ("1-1", [1]), ("5,0-1", [0, 1, 5])],
)
def test_parse_cpuset(text: str, cpus: list[int]) -> None:
    assert parse_cpuset(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-3,3", "3-1", "-1", "1,", "1--2", "0-8192"])
def test_parse_cpuset_refused(text: str) -> None:
    with pytest.raises(InvalidConfig):
        parse_cpuset(text)


@settings(max_examples=80)
@given(st.sets(st.integers(0, 200), min_size=1))
def test_cpuset_roundtrip(cpus: set[int]) -> None:
    assert parse_cpuset(format_cpuset(cpus)) == sorted(cpus)


def test_cpu_limit_kinds() -> None:
    assert cpu_limit("2") == 2
    assert cpu_limit("1-1") == [1]
    assert cpu_limit("0,1") == [0, 1]


@pytest.mark.parametrize(
    ("count", "host", "usage", "expected"),
    [
        (2, 4, {}, [0, 1]),
        (2, 4, {0: 3, 1: 1}, [2, 3]),
        (2, 4, {0: 1, 1: 1, 2: 1, 3: 0}, [0, 3]),
        (1, 4, {0: 2, 1: 2, 2: 1, 3: 1}, [2]),
        (8, 4, {}, [0, 1, 2, 3]),
        (0, 4, {}, []),
    ],
)
def test_pick_cpus(count: int, host: int, usage: dict[int, int], expected: list[int]) -> None:
    assert pick_cpus(count, host, usage) == expected


def test_pick_cpus_refused() -> None:
    with pytest.raises(InvalidArgument):
        pick_cpus(-1, 4, {})
    with pytest.raises(InvalidArgument):
        pick_cpus(1, 0, {})


# -- unsetting and live changes ----------------------------------------------------------------
def test_unset_by_config_key() -> None:
    assert unset_values(["limits.memory"], 1) == {
        "memory.memsw.limit_in_bytes": "-1", "memory.limit_in_bytes": "-1",
        "memory.soft_limit_in_bytes": "-1"}
    assert unset_values(["limits.memory"], 2) == {
        "memory.swap.max": "max", "memory.max": "max", "memory.high": "max"}
    assert unset_values(["limits.processes"], 2) == {"pids.max": "max"}
    assert unset_values(["limits.cpu"], 1, host_cpus=4) == {"cpuset.cpus": "0-3"}
    assert unset_values(["limits.cpu.allowance"], 2) == {"cpu.weight": "100", "cpu.max": "max"}
    assert unset_values(["limits.cpu.priority"], 1) == {
        "cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}
    assert unset_values(["limits.disk.priority"], 2) == {"io.weight": "500"}
    assert unset_values(["limits.hugepages.2MB"], 1) == {"hugetlb.2MB.limit_in_bytes": "-1"}
    assert unset_values(["limits.hugepages.2MB"], 2) == {"hugetlb.2MB.max": "max"}
    assert unset_values(["limits.memory.swap.priority"], 1) == {"memory.swappiness": "60"}


def test_unset_by_cgroup_file() -> None:
    got = unset_values(["memory.limit_in_bytes", "pids.max", "memory.memsw.limit_in_bytes"], 1)
    assert list(got) == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes", "pids.max"]
    assert got["memory.limit_in_bytes"] == "-1" and got["pids.max"] == "max"
    assert unset_values(["memory.max", "cpu.max", "hugetlb.1GB.max"], 2) == {
        "memory.max": "max", "cpu.max": "max", "hugetlb.1GB.max": "max"}
    assert unset_values(["cpuset.cpus"], 2, host_cpus=2) == {"cpuset.cpus": "0-1"}
    with pytest.raises(InvalidArgument):
        unset_values(["cpuset.cpus"], 2)
    with pytest.raises(InvalidArgument):
        unset_values(["limits.cpu"], 2)
    with pytest.raises(InvalidArgument):
        unset_values(["bogus.file"], 2)
    with pytest.raises(InvalidArgument):
        unset_values(["limits.kernel.nofile"], 2)


def test_live_settings_memory_resets_then_sets() -> None:
    writes = live_settings({"limits.memory": "1GiB"}, ["limits.memory"], cgroup_version=1,
                           host_cpus=2, mem_total=MEM)
    assert writes == [
        ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1"),
        ("memory.soft_limit_in_bytes", "-1"), ("memory.limit_in_bytes", str(GIB)),
        ("memory.memsw.limit_in_bytes", str(2 * GIB)),
        ("memory.soft_limit_in_bytes", str(int(GIB * 0.9))),
    ]
    v2 = live_settings({}, ["limits.memory"], cgroup_version=2, host_cpus=2, mem_total=MEM)
    assert v2 == [("memory.swap.max", "max"), ("memory.max", "max"), ("memory.high", "max")]


def test_live_settings_other_keys() -> None:
    kw = {"cgroup_version": 2, "host_cpus": 4, "mem_total": MEM}
    assert live_settings({"limits.cpu.allowance": "25ms/100ms"}, ["limits.cpu.allowance"],
                         **kw) == [("cpu.weight", "100"), ("cpu.max", "25000 100000")]  # type: ignore[arg-type]
    assert live_settings({}, ["limits.cpu.priority"], **kw) == [  # type: ignore[arg-type]
        ("cpu.weight", "100"), ("cpu.max", "max")]
    assert live_settings({}, ["limits.cpu"], **kw) == [("cpuset.cpus", "0-3")]  # type: ignore[arg-type]
    assert live_settings({"limits.cpu": "1,3"}, ["limits.cpu"], **kw) == [  # type: ignore[arg-type]
        ("cpuset.cpus", "1,3")]
    assert live_settings({}, ["limits.processes"], **kw) == [("pids.max", "max")]  # type: ignore[arg-type]
    assert live_settings({"limits.processes": "7"}, ["limits.processes"], **kw) == [  # type: ignore[arg-type]
        ("pids.max", "7")]
    assert live_settings({}, ["limits.disk.priority"], **kw) == [("io.weight", "500")]  # type: ignore[arg-type]
    assert live_settings({"limits.hugepages.2MB": "2MiB"}, ["limits.hugepages.2MB"], **kw) == [  # type: ignore[arg-type]
        ("hugetlb.2MB.max", str(2 * 2**20))]
    assert live_settings({}, ["limits.hugepages.2MB"], **kw) == [("hugetlb.2MB.max", "max")]  # type: ignore[arg-type]
    assert live_settings({"user.x": "y"}, ["user.x", "limits.kernel.nofile"], **kw) == []  # type: ignore[arg-type]


def test_live_swappiness_v1() -> None:
    kw = {"cgroup_version": 1, "host_cpus": 4, "mem_total": MEM}
    got = live_settings({"limits.memory.swap.priority": "2"}, ["limits.memory.swap.priority"],
                        **kw)  # type: ignore[arg-type]
    assert got[-1] == ("memory.swappiness", "68")
    got = live_settings({}, ["limits.memory.swap"], **kw)  # type: ignore[arg-type]
    assert got[-1] == ("memory.swappiness", "60")
    got = live_settings({"limits.memory.swap": "false"}, ["limits.memory.swap"], **kw)  # type: ignore[arg-type]
    assert got[-1] == ("memory.swappiness", "0")


# -- ref §13 item 6: prlimits -----------------------------------------------------------------
def test_prlimits_from_reference() -> None:
    assert prlimits({"limits.kernel.nofile": "1000:2000", "limits.memory": "1GiB"}) == {
        "nofile": "1000:2000"}


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("10", (10, 10)), ("unlimited", (None, None)), ("1:2", (1, 2)), ("1:unlimited", (1, None)),
     ("unlimited:unlimited", (None, None)), (" 5 : 6 ", (5, 6)), ("0", (0, 0))],
)
def test_parse_prlimit_value(value: str, parsed: tuple[int | None, int | None]) -> None:
    assert parse_prlimit_value(value) == parsed


@pytest.mark.parametrize("value", ["", "x", "2:1", "unlimited:1", "1:2:3", "-1", "1.5",
                                   str(2**64), "infinity"])
def test_parse_prlimit_value_refused(value: str) -> None:
    with pytest.raises(InvalidConfig):
        parse_prlimit_value(value)


@pytest.mark.parametrize("res", ["as", "core", "cpu", "data", "fsize", "locks", "memlock",
                                 "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio", "rttime",
                                 "sigpending", "stack"])
def test_prlimit_resources(res: str) -> None:
    assert prlimits({f"limits.kernel.{res}": "5"}) == {res: "5"}


def test_prlimit_unknown_resource() -> None:
    with pytest.raises(InvalidConfig, match="Unknown kernel resource"):
        prlimits({"limits.kernel.files": "5"})
