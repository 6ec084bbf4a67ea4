"""``runtime.check_config`` loads each shape of config once per process: a config that differs
from one liblxc loaded only in the instance's name (host name, path components) and in MACs is
not loaded again, and anything else still is — a refused line is refused whatever was loaded
before. Uses liblxc's loader on scratch objects only (nothing is started)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib import hooklog, runtime
from lxdlib.errors import InvalidConfig


def _config(root: Path, name: str, mac: str = "00:16:3e:12:34:56",
            *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("lxc.uts.name", name),
            ("lxc.rootfs.path", f"dir:{root}/pools/default/containers/{name}/rootfs"),
            ("lxc.log.file", f"{root}/containers/{name}/lxc.log"),
            ("lxc.console.logfile", f"{root}/containers/{name}/console.log"),
            ("lxc.mount.auto", "proc:rw sys:rw cgroup:mixed"),
            # every instance's stop mark, a file of its directory
            ("lxc.hook.version", "1"),
            ("lxc.hook.post-stop",
             hooklog.stop_marker_command(root / "containers" / name / "stopped-inside")),
            ("lxc.net.0.type", "veth"), ("lxc.net.0.hwaddr", mac), *extra]


@pytest.fixture
def loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the loads liblxc is asked for, starting from an empty memory."""
    monkeypatch.setattr(runtime, "_LOADED", {})
    calls: list[int] = []
    real = runtime._loads

    def counted(lxcpath: Path, lines: list[tuple[str, str]]) -> int:
        calls.append(len(lines))
        return real(lxcpath, lines)

    monkeypatch.setattr(runtime, "_loads", counted)
    yield calls


def test_a_copy_of_a_loaded_config_is_not_loaded_again(tmp_path: Path,
                                                        loads: list[int]) -> None:
    runtime.check_config(tmp_path, _config(tmp_path, "c1"), "c1")
    runtime.check_config(tmp_path, _config(tmp_path, "c1-copy", "00:16:3e:ab:cd:ef"), "c1-copy")
    assert len(loads) == 1


def test_a_different_line_is_loaded(tmp_path: Path, loads: list[int]) -> None:
    runtime.check_config(tmp_path, _config(tmp_path, "c1"), "c1")
    runtime.check_config(tmp_path, _config(tmp_path, "c2", "00:16:3e:12:34:56",
                                           ("lxc.environment", "A=1")), "c2")
    assert len(loads) == 2


def test_a_refused_line_is_refused_after_a_load_of_the_same_shape(tmp_path: Path,
                                                                    loads: list[int]) -> None:
    runtime.check_config(tmp_path, _config(tmp_path, "c1"), "c1")
    with pytest.raises(InvalidConfig) as e:  # liblxc wants NAME=VALUE
        runtime.check_config(tmp_path, _config(tmp_path, "c2", "00:16:3e:12:34:56",
                                               ("lxc.environment", "novalue")), "c2")
    assert e.value.key == "lxc.environment"
    with pytest.raises(InvalidConfig):  # and again: a refusal is never remembered as a load
        runtime.check_config(tmp_path, _config(tmp_path, "c3", "00:16:3e:12:34:56",
                                               ("lxc.environment", "novalue")), "c3")


def test_only_the_name_and_lxdlib_macs_are_left_out(tmp_path: Path) -> None:
    rw = dict(runtime._shape([("lxc.uts.name", "rw"), ("lxc.mount.auto", "proc:rw sys:rw"),
                              ("lxc.net.0.hwaddr", "00:16:3E:12:34:56")], "rw"))
    assert rw["lxc.uts.name"] != "rw"
    assert rw["lxc.mount.auto"] == "proc:rw sys:rw"  # a value liblxc parses is kept whole
    assert rw["lxc.net.0.hwaddr"] == "00:16:3E:12:34:56"  # not the form lxdlib writes
    shaped = dict(runtime._shape(_config(tmp_path, "c1"), "c1"))
    assert "c1" not in shaped["lxc.rootfs.path"] + shaped["lxc.console.logfile"]
    assert shaped["lxc.net.0.hwaddr"] != "00:16:3e:12:34:56"


def test_a_path_near_the_length_limit_keeps_its_name(tmp_path: Path) -> None:
    long = "/" + "d" * 4000
    shaped = dict(runtime._shape([("lxc.rootfs.path", f"dir:{long}/c1/rootfs")], "c1"))
    assert shaped["lxc.rootfs.path"] == f"dir:{long}/c1/rootfs"


def test_lxdlib_veth_names_are_left_out_and_others_kept(tmp_path: Path, loads: list[int]) -> None:
    """The host end lxdlib names a nic's veth (``veth`` + 8 hex digits, from the instance's name)
    loads alike: a copy with a nic is not loaded again. A name given by the user is kept, and
    a config with one is loaded."""
    runtime.check_config(tmp_path, _config(tmp_path, "c1", "00:16:3e:12:34:56",
                                           ("lxc.net.0.veth.pair", "veth0a1b2c3d")), "c1")
    runtime.check_config(tmp_path, _config(tmp_path, "c2", "00:16:3e:ab:cd:ef",
                                           ("lxc.net.0.veth.pair", "veth99887766")), "c2")
    assert len(loads) == 1
    mine = dict(runtime._shape([("lxc.net.0.veth.pair", "myhostend")], "c3"))
    assert mine["lxc.net.0.veth.pair"] == "myhostend"
    runtime.check_config(tmp_path, _config(tmp_path, "c4", "00:16:3e:ab:cd:ef",
                                           ("lxc.net.0.veth.pair", "a" * 20)), "c4")
    assert len(loads) == 2
