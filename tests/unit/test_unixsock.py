"""``lxdlib.unixsock``: a socket named through its directory's handle (and the path itself past
sun_path's 108 bytes), and the probe that tells a dead socket file from a live one; the one
copy the forwarder and the proxy device's clean-up share."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from lxdlib.unixsock import SUN_PATH_MAX, refuses_connections, via_dir

HELD = len("/proc/self/fd/7/")


@pytest.mark.parametrize(("name", "held"), [
    ("a.sock", True),
    ("x" * (SUN_PATH_MAX - 1 - HELD), True),  # 107 bytes: the NUL still fits
    ("x" * (SUN_PATH_MAX - HELD), False),  # 108: no room for the NUL
    ("x" * 300, False),
    ("é" * ((SUN_PATH_MAX - HELD) // 2), False),  # counted in bytes, not characters
    ("é" * ((SUN_PATH_MAX - 1 - HELD) // 2), True),
])
def test_via_dir_names_the_held_directory_while_it_fits(name: str, held: bool) -> None:
    path = f"/home/u/socks/{name}"
    got = via_dir(7, name, path)
    assert got == (f"/proc/self/fd/7/{name}" if held else path)
    assert len(got.encode()) < SUN_PATH_MAX or got == path


def _dead(path: Path) -> None:
    """A socket file nobody listens on: a killed forwarder's."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


@pytest.mark.parametrize(("make", "refused"), [
    ("dead", True),
    ("listening", False),
    ("missing", False),
    ("bound, not listening", True),
])
def test_refuses_connections(tmp_path: Path, make: str, refused: bool) -> None:
    path = tmp_path / "app.sock"
    keep: list[socket.socket] = []
    if make == "dead":
        _dead(path)
    elif make in ("listening", "bound, not listening"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        if make == "listening":
            s.listen(1)
        keep.append(s)
    try:
        assert refuses_connections(str(path)) is refused
    finally:
        for s in keep:
            s.close()


def test_the_held_directory_wins_over_a_swapped_path(tmp_path: Path) -> None:
    """After the directory was opened, a user renames it and puts a symlink to another
    directory (with a live socket of the same name) in its place: the probe through the held
    directory still asks the dead socket it named, never the other one."""
    home = tmp_path / "socks"
    home.mkdir()
    _dead(home / "app.sock")
    other = tmp_path / "other"
    other.mkdir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(other / "app.sock"))
    live.listen(1)
    dirfd = os.open(home, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        home.rename(tmp_path / "moved")
        home.symlink_to(other)
        path = str(home / "app.sock")
        assert refuses_connections(path) is False  # the path alone now reaches the live one
        assert refuses_connections(via_dir(dirfd, "app.sock", path)) is True
    finally:
        os.close(dirfd)
        live.close()
