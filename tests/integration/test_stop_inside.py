"""A stop from inside an instance (``poweroff``, its init gone) against real liblxc: the post-stop
hook every instance has marks it, the next call that takes the instance's lock records it
STOPPED, and ``autostart`` does not start it at the next boot (LXD records it from its stop
hook); a reboot from inside marks nothing; lxdlib's own stop and start work as before."""

from __future__ import annotations

import time

import pytest

import lxdlib
from lxdlib import journal, record, runtime

pytestmark = pytest.mark.root


def _power(host: lxdlib.Host, name: str) -> str | None:
    return record.load(host.paths, name).config.get("volatile.last_state.power")


def _marker(host: lxdlib.Host, name: str):  # type: ignore[no-untyped-def]
    return journal.stopped_marker(host.paths, name)


def _wait(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _poweroff(host: lxdlib.Host, c: lxdlib.Instance) -> None:
    """``poweroff -f`` inside; returns once liblxc's post-stop hook has run (it runs after
    liblxc reports the container stopped)."""
    c.exec(["poweroff", "-f"])
    assert _wait(lambda: c.state == "STOPPED")
    assert _wait(lambda: _marker(host, c.name).exists(), 5)


def test_poweroff_inside_is_recorded_stopped_and_not_autostarted(host: lxdlib.Host) -> None:
    off = host.launch("busybox", "hloff")
    crashed = host.launch("busybox", "hlcrash")  # running when the host went down
    assert _power(host, "hloff") == "RUNNING"
    _poweroff(host, off)
    assert _marker(host, "hloff").read_text().strip().isdigit()  # the init's pid
    assert _power(host, "hloff") == "RUNNING"  # no lxdlib process saw it stop
    # a host crash runs no hook: the record says RUNNING and nothing marks it
    runtime.kill(crashed.handle(), host.paths.lxcpath)
    assert _wait(lambda: _marker(host, "hlcrash").exists(), 5)  # liblxc's stop ran the hook…
    _marker(host, "hlcrash").unlink()  # …which a crash would not have
    result = host.autostart(sleep=lambda s: None)
    assert result == {"hlcrash": "started"}
    assert off.state == "STOPPED" and crashed.state == "RUNNING"
    assert _power(host, "hloff") == "STOPPED"
    assert not _marker(host, "hloff").exists()
    off.start()  # starts as ever, and is recorded running again
    assert off.state == "RUNNING" and _power(host, "hloff") == "RUNNING"
    assert not _marker(host, "hloff").exists()


def test_the_next_locked_call_folds_a_stop_from_inside(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "hlfold")
    _poweroff(host, c)
    c.set_config("user.note", "x")  # any verb that takes the lock
    rec = record.load(host.paths, "hlfold")
    assert rec.config.get("volatile.last_state.power") == "STOPPED"
    assert not any(record.is_veth_key(k) for k in rec.config)
    assert not _marker(host, "hlfold").exists()
    assert rec.config["user.note"] == "x"


def test_a_reboot_inside_marks_nothing(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "hlboot")
    pid = c.pid
    c.exec(["reboot", "-f"])
    assert _wait(lambda: c.state == "RUNNING" and c.pid not in (pid, -1))
    time.sleep(0.5)  # the post-stop hook of the run that rebooted has run by now
    assert not _marker(host, "hlboot").exists()
    c.set_config("user.note", "x")
    assert _power(host, "hlboot") == "RUNNING"
    assert host.autostart(sleep=lambda s: None) == {}


def test_own_stop_and_start_are_not_misread(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "hlown")
    c.stop(force=True)
    # liblxc's stop returns after the post-stop hook, whose mark the stop removes
    assert _power(host, "hlown") == "STOPPED" and not _marker(host, "hlown").exists()
    c.start()
    assert c.state == "RUNNING" and not _marker(host, "hlown").exists()
    c.restart(force=True)
    time.sleep(0.3)
    c.set_config("user.note", "x")  # a late mark of the run restart stopped is dropped
    assert c.state == "RUNNING" and _power(host, "hlown") == "RUNNING"
    assert not _marker(host, "hlown").exists()
    c.stop()
    # a clean shutdown returns once liblxc reports STOPPED, which can be before its post-stop
    # hook has run: a mark that comes after is inert (the record says STOPPED already) and the
    # next locked call drops it
    c.set_config("user.note", "y")
    assert _power(host, "hlown") == "STOPPED"
    time.sleep(0.5)
    c.set_config("user.note", "z")
    assert _power(host, "hlown") == "STOPPED" and not _marker(host, "hlown").exists()
    assert host.autostart(sleep=lambda s: None) == {}


def test_existing_instances_get_the_hook_at_their_next_start(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "hlold")
    cfg = host.paths.instance_dir("hlold") / "config"
    text = cfg.read_text()
    hook = [ln for ln in text.splitlines() if "stopped-inside" in ln]
    assert len(hook) == 1 and hook[0].startswith("lxc.hook.post-stop = /bin/sh -c ")
    c.stop(force=True)
    # a config written by an earlier lxdlib: no hook lines
    cfg.write_text("".join(ln + "\n" for ln in text.splitlines() if "lxc.hook" not in ln))
    c.start()
    assert "stopped-inside" in cfg.read_text()
    _poweroff(host, c)
