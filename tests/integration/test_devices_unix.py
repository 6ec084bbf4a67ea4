"""unix-char / unix-block devices against real containers: the node inside (type, numbers,
owner, mode), that it works, hot-plug both ways, restarts, optional and missing sources, the
devices cgroup of a privileged instance, and ``none`` masking a profile's device."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import pytest

import lxdlib
from lxdlib.devices import driver

pytestmark = pytest.mark.root


def node(c: lxdlib.Instance, path: str) -> str:
    """type major:minor uid:gid mode, as the instance sees the node."""
    out = c.exec(["stat", "-c", "%F %t:%T %u:%g %a", path], check=True).text.split()
    return f"{out[0][0]} {int(out[-3].split(':')[0], 16)}:{int(out[-3].split(':')[1], 16)} " \
           f"{out[-2]} {out[-1]}"


def test_unix_devices_unprivileged(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "c1", devices={
        "null": {"type": "unix-char", "source": "/dev/null", "path": "/dev/mynull",
                 "uid": "1000", "gid": "1001", "mode": "0620"},
        "opt": {"type": "unix-char", "source": "/dev/nonexistent", "required": "false"},
    })
    assert node(c, "/dev/mynull") == "c 1:3 1000:1001 620"
    assert c.exec(["sh", "-c", "echo x > /dev/mynull"]).returncode == 0
    assert c.exec(["test", "-e", "/dev/nonexistent"]).returncode != 0

    # hot-plug by numbers, and a block node
    devs = c.devices
    c.update(devices={**devs, "zero": {"type": "unix-char", "major": "1", "minor": "5",
                                       "path": "/dev/myzero"},
                      "blk": {"type": "unix-block", "major": "7", "minor": "250",
                              "path": "/dev/myblk"}})
    assert node(c, "/dev/myzero") == "c 1:5 0:0 660"
    assert c.exec(["sh", "-c", "head -c 5 /dev/myzero | wc -c"]).text.strip() == "5"
    assert node(c, "/dev/myblk") == "b 7:250 0:0 660"
    host_node = driver("unix-char").host_node(c.device_context(), "zero")  # type: ignore[attr-defined]
    assert os.path.exists(host_node)

    c.restart(force=True)
    assert node(c, "/dev/myzero") == "c 1:5 0:0 660"
    assert node(c, "/dev/mynull") == "c 1:3 1000:1001 620"

    # over an existing file: hidden while the device is there, back (not deleted) after
    c.exec(["sh", "-c", "echo keep > /etc/motd-x"], check=True)
    c.update(devices={**c.devices, "over": {"type": "unix-char", "source": "/dev/null",
                                            "path": "/etc/motd-x"}})
    assert c.exec(["cat", "/etc/motd-x"]).text == ""

    c.update(devices=devs)  # hot-unplug
    assert c.exec(["test", "-e", "/dev/myzero"]).returncode != 0
    assert c.exec(["test", "-e", "/dev/myblk"]).returncode != 0
    assert c.exec(["cat", "/etc/motd-x"]).text == "keep\n"
    assert not os.path.exists(host_node)

    # refused with the device named, nothing kept
    with pytest.raises(lxdlib.NotFound, match="'gone'"):
        c.update(devices={**devs, "gone": {"type": "unix-char", "source": "/dev/nonexistent"}})
    with pytest.raises(lxdlib.InvalidConfig, match=r"'wrong'.*source"):
        c.update(devices={**devs, "wrong": {"type": "unix-block", "source": "/dev/null"}})
    with pytest.raises(lxdlib.InvalidConfig, match=r"'nomap'.*uid"):
        c.update(devices={**devs, "nomap": {"type": "unix-char", "source": "/dev/null",
                                            "uid": "4000000000"}})
    assert c.devices == devs


def test_unix_device_privileged_cgroup(host: lxdlib.Host) -> None:
    """A privileged instance's devices cgroup denies unknown devices: the device allows its own."""
    st = os.stat("/dev/btrfs-control")
    numbers = {"major": str(os.major(st.st_rdev)), "minor": str(os.minor(st.st_rdev))}
    c = host.launch("busybox", "c1", config={"security.privileged": "true"})
    probe = ["sh", "-c", "mknod /dev/probe c {major} {minor} 2>/dev/null; "
                         "exec 3< /dev/probe".format(**numbers)]
    assert c.exec(probe).returncode != 0  # the default allow-list does not have it
    devs = c.devices
    c.update(devices={**devs, "ctl": {"type": "unix-char", "source": "/dev/btrfs-control",
                                      "path": "/dev/ctl"}})
    assert c.exec(["sh", "-c", "exec 3< /dev/ctl"]).returncode == 0
    c.restart(force=True)  # from the config this time
    assert c.exec(["sh", "-c", "exec 3< /dev/ctl"]).returncode == 0
    c.update(devices=devs)
    assert c.exec(probe).returncode != 0  # and denied again once removed


def test_none_masks_profile_device(host: lxdlib.Host) -> None:
    host.profiles.create("withnull", {}, {"null2": {"type": "unix-char", "source": "/dev/null",
                                                    "path": "/dev/null2"}})
    c = host.launch("busybox", "c1", profiles=["default", "withnull"])
    assert node(c, "/dev/null2").startswith("c 1:3")
    c.update(devices={**c.devices, "null2": {"type": "none"}})
    assert c.exec(["test", "-e", "/dev/null2"]).returncode != 0
    c.restart(force=True)
    assert c.exec(["test", "-e", "/dev/null2"]).returncode != 0



@pytest.mark.parametrize("privileged", [False, True])
def test_fifo_at_the_path_does_not_block(host: lxdlib.Host, privileged: bool) -> None:
    """The container's root puts a FIFO where the node goes: the hot-plug mounts over it, and
    so does the next start, instead of opening it for writing and waiting for a reader for
    ever (with the instance's lock, and at start liblxc's monitor, held)."""
    import threading
    c = host.launch("busybox", "c1", config={"security.privileged": str(privileged).lower()})
    c.exec(["mkfifo", "/dev/trap", "/root/trap"], check=True)
    on_disk = str(c.device_context().volume / "rootfs/root/trap")  # type: ignore[attr-defined]
    blocked: list[str] = []
    done = threading.Event()

    def unblock(path: str) -> None:
        """On the old code, read the FIFO after a while: the test fails instead of hanging."""
        if done.wait(20):
            return
        blocked.append(path)
        if path == on_disk:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        else:
            c.exec(["sh", "-c", f"exec 3< {path}"])

    def plug(path: str, step: Callable[[], None]) -> None:
        done.clear()
        t = threading.Thread(target=unblock, args=(path,))
        t.start()
        try:
            step()
        finally:
            done.set()
            t.join()

    devs = {**c.devices, "t": {"type": "unix-char", "source": "/dev/null", "path": "/dev/trap"}}
    plug("/dev/trap", lambda: c.update(devices=devs))
    assert not blocked
    assert node(c, "/dev/trap").startswith("c 1:3")

    devs = {**devs, "r": {"type": "unix-char", "source": "/dev/null", "path": "/root/trap"}}
    plug(on_disk, lambda: c.update(devices=devs))
    assert not blocked
    assert node(c, "/root/trap").startswith("c 1:3")
    c.stop(force=True)
    assert os.path.exists(on_disk)  # a mount point it did not make stays
    plug(on_disk, c.start)
    assert not blocked
    assert node(c, "/root/trap").startswith("c 1:3")


def test_unplug_takes_back_the_rule_it_granted(host: lxdlib.Host) -> None:
    """A privileged instance's rule goes with its device even when ``source`` has gone away or
    names another device by then: what is denied is what was allowed (the numbers of the node
    made at plug time), not what the source is now."""
    st = os.stat("/dev/btrfs-control")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    src = host.paths.root.parent / "src-node"
    c = host.launch("busybox", "c1", config={"security.privileged": "true"})
    probe = ["sh", "-c", f"rm -f /dev/probe; mknod /dev/probe c {major} {minor} 2>/dev/null; "
                         "exec 3< /dev/probe"]
    devs = c.devices
    for gone in (True, False):
        os.mknod(src, 0o600 | 0o020000, os.makedev(major, minor))
        c.update(devices={**devs, "ctl": {"type": "unix-char", "source": str(src),
                                          "path": "/dev/ctl"}})
        assert c.exec(probe).returncode == 0
        os.unlink(src)
        if not gone:  # the source is now another device (/dev/null's numbers)
            os.mknod(src, 0o600 | 0o020000, os.makedev(1, 3))
        c.update(devices=devs)
        assert c.exec(probe).returncode != 0, "the device's rule outlived it"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(src)


def test_device_names_do_not_share_host_files(host: lxdlib.Host) -> None:
    """Devices ``x`` and ``x.made``: each keeps its own host files, so unplugging ``x`` (mounted
    over the instance's own file) does not take ``x.made``'s node for its "mount point made
    here" marker and delete the instance's file."""
    c = host.launch("busybox", "c1")
    c.exec(["sh", "-c", "echo precious > /root/keep"], check=True)
    devs = c.devices
    x = {"type": "unix-char", "source": "/dev/null", "path": "/root/keep"}
    made = {"type": "unix-char", "source": "/dev/zero", "path": "/dev/xm"}
    c.update(devices={**devs, "x": x, "x.made": made})
    c.update(devices={**devs, "x.made": made})
    assert c.exec(["cat", "/root/keep"]).text == "precious\n"
    assert node(c, "/dev/xm").startswith("c 1:5")
    c.update(devices=devs)
    assert c.exec(["test", "-e", "/dev/xm"]).returncode != 0
