"""render.py: the liblxc config an instance compiles to, and the last-line injection guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdlib import render
from lxdlib.errors import InvalidConfig
from lxdlib.idmap import IdRange


def _inp(**kw: object) -> render.RenderInput:
    base: dict[str, object] = dict(
        name="c1", rootfs=Path("/pool/containers/c1/rootfs"), config={},
        log_file=Path("/r/c1/lxc.log"), console_log=Path("/r/c1/console.log"),
        seccomp_file=Path("/r/c1/seccomp"),
        idmap=[IdRange("u", 0, 1000000, 65536), IdRange("g", 0, 1000000, 65536)],
        architecture="x86_64", cgroup_version=1, host_cpus=4, mem_total=8 << 30)
    base.update(kw)
    return render.RenderInput(**base)  # type: ignore[arg-type]


def keys(lines: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in lines if k == key]


def test_unprivileged_baseline() -> None:
    out = render.render(_inp())
    assert keys(out, "lxc.rootfs.path") == ["dir:/pool/containers/c1/rootfs"]
    assert keys(out, "lxc.rootfs.options") == ["idmap=container"]
    assert keys(out, "lxc.idmap") == ["u 0 1000000 65536", "g 0 1000000 65536"]
    assert keys(out, "lxc.seccomp.profile") == ["/r/c1/seccomp"]
    assert keys(out, "lxc.mount.auto") == ["proc:rw sys:rw cgroup:mixed"]
    assert keys(out, "lxc.cap.drop") == []
    assert keys(out, "lxc.net.0.type") == ["empty"]
    assert keys(out, "lxc.arch") == ["linux64"]


def test_unprivileged_cgroup2_mount() -> None:
    out = render.render(_inp(cgroup_version=2))
    assert keys(out, "lxc.mount.auto") == ["proc:rw sys:rw cgroup:rw:force"]


def test_privileged_drops_caps_and_devices() -> None:
    out = render.render(_inp(config={"security.privileged": "true"}, idmap=[]))
    assert keys(out, "lxc.idmap") == []
    assert keys(out, "lxc.rootfs.options") == []
    assert keys(out, "lxc.cap.drop") == ["sys_time sys_module sys_rawio mac_admin mac_override"]
    assert keys(out, "lxc.cgroup.devices.deny") == ["a"]
    assert "c 1:3 rwm" in keys(out, "lxc.cgroup.devices.allow")


def test_fuse_pool_has_no_idmapped_rootfs() -> None:
    assert keys(render.render(_inp(idmapped_rootfs=False)), "lxc.rootfs.options") == []


def test_seccomp_can_be_turned_off() -> None:
    out = render.render(_inp(config={"security.syscalls.deny_default": "false"}))
    assert keys(out, "lxc.seccomp.profile") == []


def test_instance_seccomp_policy() -> None:
    assert render.seccomp_policy({}) is None
    deny = render.seccomp_policy({"security.syscalls.deny": "mount\nreboot, bpf"})
    assert deny is not None and deny.startswith(render.SECCOMP_POLICY)
    assert deny.endswith("mount\nreboot\nbpf\n")
    only = {"security.syscalls.deny": "mount", "security.syscalls.deny_default": "false"}
    assert render.seccomp_policy(only) == "2\ndenylist\n[all]\nmount\n"
    assert keys(render.render(_inp(config=only)), "lxc.seccomp.profile") == ["/r/c1/seccomp"]
    assert render.seccomp_policy({"security.syscalls.allow": "read\nwrite"}) == \
        "2\nallowlist\n[all]\nread\nwrite\n"
    assert render.seccomp_policy({"raw.seccomp": "2\ndenylist\n[all]\nbpf"}) == \
        "2\ndenylist\n[all]\nbpf\n"


def test_environment_sysctl_prlimit_memory() -> None:
    cfg = {"environment.FOO": "bar baz", "linux.sysctl.net.ipv4.ip_forward": "1",
           "limits.kernel.nofile": "1000:2000", "limits.memory": "256MiB",
           "limits.processes": "50"}
    out = render.render(_inp(config=cfg))
    assert "FOO=bar baz" in keys(out, "lxc.environment")
    assert keys(out, "lxc.sysctl.net.ipv4.ip_forward") == ["1"]
    assert keys(out, "lxc.prlimit.nofile") == ["1000:2000"]
    assert keys(out, "lxc.cgroup.memory.limit_in_bytes") == [str(256 << 20)]
    assert keys(out, "lxc.cgroup.pids.max") == ["50"]


def test_nesting_nics_mounts_raw() -> None:
    out = render.render(_inp(
        config={"security.nesting": "true", "raw.lxc": "lxc.apparmor.profile=unconfined\n"},
        nics=[render.Nic("eth0", "br0", "00:16:3e:00:00:01", mtu="1400")],
        mounts=[render.MountEntry("/srv", "/mnt/srv", "none", "bind,create=dir")]))
    assert "proc dev/.lxc/proc proc create=dir,optional 0 0" in keys(out, "lxc.mount.entry")
    assert keys(out, "lxc.net.0.type") == ["veth"]
    assert keys(out, "lxc.net.0.link") == ["br0"]
    assert keys(out, "lxc.net.0.mtu") == ["1400"]
    assert "/srv mnt/srv none bind,create=dir 0 0" in keys(out, "lxc.mount.entry")
    assert keys(out, "lxc.apparmor.profile") == ["unconfined"]


@pytest.mark.parametrize(("key", "value"), [
    ("lxc.environment", "A=b\nlxc.hook.pre-start=/bin/sh"),
    ("lxc.uts.name", "x\rY"),
    ("lxc.environment", "nul\0"),
    ("lxc.bad\nkey", "v"),
])
def test_to_text_refuses_line_breaks(key: str, value: str) -> None:
    with pytest.raises(InvalidConfig):
        render.to_text([(key, value)])


def test_to_text_format() -> None:
    text = render.to_text([("lxc.uts.name", "c1"), ("lxc.autodev", "1")])
    assert text.splitlines()[1:] == ["lxc.uts.name = c1", "lxc.autodev = 1"]


def test_autostart_maps_to_liblxc_order() -> None:
    out = render.render(_inp(config={"boot.autostart": "true", "boot.autostart.priority": "7",
                                     "boot.autostart.delay": "3"}))
    assert keys(out, "lxc.start.auto") == ["1"]
    assert keys(out, "lxc.start.order") == ["-7"]  # lxc-autostart: low first; LXD: high first
    assert keys(out, "lxc.start.delay") == ["3"]
    assert keys(render.render(_inp()), "lxc.start.auto") == []


def test_masking_kernel_files_is_optional_and_paths_are_escaped() -> None:
    out = render.render(_inp(mounts=[
        render.MountEntry("/dev/null", "/sys/module/apparmor/parameters/enabled", "none",
                          "bind,create=file"),
        render.MountEntry("/srv/my data", "/mnt/my data", "none", "bind,create=dir")]))
    assert keys(out, "lxc.mount.entry") == [
        "/dev/null sys/module/apparmor/parameters/enabled none bind,create=file,optional 0 0",
        "/srv/my\\040data mnt/my\\040data none bind,create=dir 0 0"]


def test_hooks_and_extra_keys() -> None:
    out = render.render(_inp(hooks=[("version", "1"), ("start-host", "/py -m lxdlib.hooks /r")],
                             extra=[("lxc.cgroup.devices.allow", "c 10:200 rwm")]))
    assert keys(out, "lxc.hook.version") == ["1"]
    assert keys(out, "lxc.hook.start-host") == ["/py -m lxdlib.hooks /r"]
    assert keys(out, "lxc.cgroup.devices.allow") == ["c 10:200 rwm"]
