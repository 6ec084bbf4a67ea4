"""``forkjob.each_within``: asks made in a forked child, one that does not answer in time given
up without holding up the others (a liblxc command to a stuck monitor blocks in C with the GIL
held, where a thread could not be timed out); and ``livestate.monitor_listens``, the probe that
tells whether such an ask is needed at all."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from lxdlib import forkjob, livestate


def test_each_within_gives_up_on_the_asks_that_hang_only() -> None:
    def ask(i: int) -> tuple[int, int]:
        if i in (1, 3):
            time.sleep(60)  # stands for a call that blocks for ever
        return i, os.getpid()

    t = time.monotonic()
    got = forkjob.each_within(5, ask, 0.3)
    took = time.monotonic() - t
    assert sorted(got) == [0, 2, 4]
    assert [got[i][0] for i in (0, 2, 4)] == [0, 2, 4]
    assert all(got[i][1] != os.getpid() for i in got)  # asked in a child
    assert took < 3, took  # two asks given up, 0.3 s each, plus the forks


def test_each_within_one_fork_while_they_answer_and_an_ask_that_raises() -> None:
    def ask(i: int) -> int:
        if i == 2:
            raise ValueError("ends the child")
        return os.getpid()

    got = forkjob.each_within(6, ask, 5.0)
    assert sorted(got) == [0, 1, 3, 4, 5]
    assert got[0] == got[1] != got[3] == got[4] == got[5]  # a new fork only after the failure
    assert forkjob.each_within(0, ask, 1.0) == {}


def test_each_within_leaves_no_child() -> None:
    forkjob.each_within(3, lambda i: time.sleep(60) if i == 1 else i, 0.2)
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pid = 0
    assert pid == 0


def test_monitor_listens_probes_the_abstract_socket(tmp_path: Path) -> None:
    lxcpath = tmp_path / "containers"
    name = f"probe{os.getpid()}"
    assert livestate.monitor_listens(lxcpath, name) is False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(b"\0" + os.fsencode(f"{lxcpath}/{name}/command"))
        s.listen(0)
        assert livestate.monitor_listens(lxcpath, name) is True  # accepted
        assert livestate.monitor_listens(lxcpath, name) is True  # even once the backlog is full
    finally:
        s.close()
    assert livestate.monitor_listens(lxcpath, name) is False
    long = Path(f"/{'x' * 100}-{os.getpid()}")  # a name liblxc hashes
    assert livestate.monitor_listens(long, name) is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(livestate.command_socket(long, name))
        s.listen()
        assert livestate.monitor_listens(long, name) is True


#: A monitor's socket name as liblxc 5 hashed it, read from /proc/net/unix on a real start.
LONG = "/var/tmp/hls-exp/" + "l" * 60 + "/root/containers"


def test_command_socket_names_it_as_liblxc_does() -> None:
    assert livestate.command_socket(Path("/r/containers"), "web") == b"\0/r/containers/web/command"
    assert livestate.command_socket(Path(LONG), "hls-long") == b"\0lxc/ed81e640a5ed5bab/command"


def test_running_from_sockets_resolves_the_hashed_names_it_is_given() -> None:
    head = b"0000000000000000: 00000002 00000000 00010000 0001 01 1 "
    line = head + b"@lxc/ed81e640a5ed5bab/command\n"
    other = head + b"@lxc/0123456789abcdef/command\n"
    assert livestate.running_from_sockets(line, LONG) is None  # no names: liblxc must tell
    assert livestate.running_from_sockets(line, LONG, ["hls-long", "x"]) == {"hls-long"}
    assert livestate.running_from_sockets(line, LONG + "/", ["hls-long"]) == {"hls-long"}
    assert livestate.running_from_sockets(line + other, LONG, ["hls-long"]) is None
