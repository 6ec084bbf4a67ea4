"""state.py atomic writes and locks; CLI argument helpers and table output."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lxdlib import state
from lxdlib.cli import output
from lxdlib.cli.common import parse_kv
from lxdlib.cli.configcmd import split_target_kv
from lxdlib.cli.instances import parse_device_overrides
from lxdlib.cli.main import fix_config_shorthand, split_exec
from lxdlib.errors import Busy, InvalidArgument, LxdlibError

REPO = Path(__file__).resolve().parents[2]


def test_atomic_write_replaces_and_leaves_no_tmp(tmp_path: Path) -> None:
    p = tmp_path / "rec.yaml"
    state.write_record(p, {"a": 1})
    state.write_record(p, {"a": 2})
    assert state.read_record(p) == {"a": 2}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["rec.yaml"]


def test_atomic_write_from_threads_never_collides(tmp_path: Path) -> None:
    """Threads of one process writing the same file each use their own temp file: every
    write lands whole, none fails, no temp file is left."""
    p = tmp_path / "rec.yaml"
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for _ in range(50):
                state.write_record(p, {"writer": i, "pad": "x" * 4096}, durable=False)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert state.read_record(p)["pad"] == "x" * 4096
    assert sorted(x.name for x in tmp_path.iterdir()) == ["rec.yaml"]


def test_read_record_refuses_symlink(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("a: 1\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(LxdlibError, match="symlink"):
        state.read_record(tmp_path / "link")


def test_stale_tmp_removed(tmp_path: Path) -> None:
    (tmp_path / ".x.tmp999999999").write_text("half")
    (tmp_path / f".y.tmp{os.getpid()}").write_text("mine")
    state.remove_stale_tmp(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".y.tmp{os.getpid()}"]


def test_lock_serialises_and_times_out(tmp_path: Path) -> None:
    paths = state.Paths(tmp_path)
    order: list[str] = []

    def holder() -> None:
        with state.lock(paths, "instance", "c1"):
            order.append("a-in")
            time.sleep(0.3)
            order.append("a-out")

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.05)
    with pytest.raises(Busy), state.lock(paths, "instance", "c1", timeout=0.05):
        pass
    with state.lock(paths, "instance", "c1"):
        order.append("b")
    t.join()
    assert order == ["a-in", "a-out", "b"]


def test_lock_reenters_in_one_thread_only(tmp_path: Path) -> None:
    """The same thread re-enters (no deadlock), other threads still wait, a probe still sees
    Busy, and the lock is released only by the outermost exit."""
    paths = state.Paths(tmp_path)
    other: list[bool] = []

    def try_other() -> None:
        try:
            with state.lock(paths, "instance", "c1", timeout=0.05):
                other.append(True)
        except Busy:
            other.append(False)

    with state.lock(paths, "instance", "c1"):
        assert state.held(paths, "instance", "c1")
        with state.lock(paths, "instance", "c1", timeout=0.05):  # re-entered at once
            t = threading.Thread(target=try_other)
            t.start()
            t.join()
        with pytest.raises(Busy), state.lock(paths, "instance", "c1", timeout=0):
            pass  # "is anyone working on it?": yes, this thread
        t = threading.Thread(target=try_other)
        t.start()
        t.join()  # still held after the inner exit
    assert other == [False, False]
    assert not state.held(paths, "instance", "c1")
    try_other()
    assert other[-1] is True


def test_forked_child_does_not_inherit_reentry(tmp_path: Path) -> None:
    """A child forked while the lock is held (hot-mount helpers, forwarders) must not think it
    holds the lock: it would enter the critical section beside its parent."""
    paths = state.Paths(tmp_path)
    with state.lock(paths, "instance", "c1"):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if not state.held(paths, "instance", "c1") else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_paths_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LXDLIB_ROOT", str(tmp_path))
    assert state.Paths.at().root == tmp_path
    assert state.Paths.at("/x").root == Path("/x")


@pytest.mark.parametrize(("args", "target", "kv"), [
    (["c1", "limits.memory", "256MB"], "c1", {"limits.memory": "256MB"}),
    (["c1", "a=1", "b=2"], "c1", {"a": "1", "b": "2"}),
    (["images.remote_cache_expiry", "5"], None, {"images.remote_cache_expiry": "5"}),
    (["k=v"], None, {"k": "v"}),
    (["c1", "user.a", "b=1"], "c1", {"user.a": "b=1"}),  # <key> <value>: the value holds '='
    (["c1", "user.a=1"], "c1", {"user.a": "1"}),
    (["user.a", "c1"], None, {"user.a": "c1"}),
    (["h2:c1", "a=1", "b=2"], "h2:c1", {"a": "1", "b": "2"}),
])
def test_config_set_forms(args: list[str], target: str | None, kv: dict[str, str]) -> None:
    assert split_target_kv(args) == (target, kv)


@pytest.mark.parametrize(("args", "word"), [
    (["c1", "a=1", "b"], "b"),  # was the key "a=1" of value "b": "Invalid key name"
    (["c1", "a=1", "b=2", "c"], "c"),
    (["c1", "b", "c", "d"], "b"),
    (["user.a"], "user.a"),  # a key (it holds '.'): a server key without its value
    (["user.a=1", "b"], "b"),
])
def test_config_set_refuses_a_bare_word_as_lxc(args: list[str], word: str) -> None:
    """lxc 5.0's reading (lxc/utils.go getConfig): past the instance, two words of which
    the first holds no '=' are a key and its value; otherwise every word is key=value."""
    with pytest.raises(InvalidArgument, match=f"^Invalid key=value configuration: {word}$"):
        split_target_kv(args)


def test_kv_and_device_overrides() -> None:
    assert parse_kv(["a=b=c"], "x") == {"a": "b=c"}
    assert parse_device_overrides(["root,size=50MiB", "root,pool=p"]) == {
        "root": {"size": "50MiB", "pool": "p"}}
    with pytest.raises(InvalidArgument):
        parse_kv(["novalue"], "config")
    with pytest.raises(InvalidArgument):
        parse_device_overrides(["root"])


def test_table_layout() -> None:
    t = output.table(["NAME", "STATE"], [["c1", "RUNNING"], ["long-name", "a\nb"]])
    lines = t.splitlines()
    assert lines[0] == "+-----------+---------+"
    assert lines[1] == "|   NAME    |  STATE  |"
    assert "| long-name | a       |" in lines and "|           | b       |" in lines
    assert output.to_csv([["a", "b,c"]]) == 'a,"b,c"'
    assert output.size(1536) == "1.50KiB"


@pytest.mark.parametrize(("argv", "head", "cmd"), [
    (["exec", "c1", "--", "sh", "-c", "x"], ["exec", "c1"], ["sh", "-c", "x"]),
    (["exec", "c1", "sh", "-c", "x"], ["exec", "c1"], ["sh", "-c", "x"]),
    (["--root", "/r", "exec", "--env", "A=b", "c1", "--", "env"],
     ["--root", "/r", "exec", "--env", "A=b", "c1"], ["env"]),
    (["exec", "c1", "--env", "A=b", "--cwd", "/tmp", "--", "pwd"],
     ["exec", "c1", "--env", "A=b", "--cwd", "/tmp"], ["pwd"]),
    (["exec", "-T", "c1", "ls", "--", "x"], ["exec", "-T", "c1"], ["ls", "--", "x"]),
    (["exec", "c1", "-T", "ls", "-la"], ["exec", "c1", "-T"], ["ls", "-la"]),
    (["list", "exec"], ["list", "exec"], None),
])
def test_split_exec(argv: list[str], head: list[str], cmd: list[str] | None) -> None:
    assert split_exec(argv) == (head, cmd)


def test_config_shorthand_from_the_seed() -> None:
    assert fix_config_shorthand(["config", "xsw-u", "limits.cpu", "1"]) == [
        "config", "set", "xsw-u", "limits.cpu", "1"]
    assert fix_config_shorthand(["config", "set", "c", "k", "v"]) == ["config", "set", "c", "k",
                                                                     "v"]
    assert fix_config_shorthand(["config", "show", "c", "--expanded"])[1] == "show"


def test_locks_are_bytes_of_one_file_per_kind(tmp_path: Path) -> None:
    """Another name of the same kind does not wait; another process does; no file is made per
    name, and the invariant checks' ``lock_holder`` sees a held lock and its release."""
    paths = state.Paths(tmp_path)
    probe = ("import sys; from pathlib import Path; from lxdlib import state\n"
             "from lxdlib.errors import Busy\n"
             "try:\n"
             "    with state.lock(state.Paths(Path(sys.argv[1])), 'instance', sys.argv[2],\n"
             "                    timeout=0):\n"
             "        pass\n"
             "except Busy:\n"
             "    sys.exit(3)\n")

    def other_process(name: str) -> int:
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path), name],
                              env={**os.environ, "PYTHONPATH": str(REPO)}).returncode

    with state.lock(paths, "instance", "a"):
        with state.lock(paths, "instance", "b", timeout=0):
            assert state.lock_holder(paths, "instance")
        assert other_process("a") == 3
        assert other_process("b") == 0
        assert not state.lock_holder(paths, "profile")
    assert not state.lock_holder(paths, "instance")
    assert other_process("a") == 0
    assert sorted(os.listdir(paths.locks)) == ["instance.lock"]
    assert state.lock_offset("a") != state.lock_offset("b")
    assert 0 <= state.lock_offset("x" * 300) < 2 ** 62
