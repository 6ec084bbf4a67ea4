"""The instance-option schema: every key's validator, the newline rules, profiles, server keys."""

from __future__ import annotations

from typing import Any

import pytest

from lxdlib.config.schema import (
    IdmapEntry,
    KeySpec,
    all_specs,
    is_live,
    is_lxc_key,
    parse_raw_idmap,
    parse_raw_lxc,
    server_setting,
    spec_for,
    validate_instance_config,
    validate_key,
    validate_server_config,
)
from lxdlib.errors import InvalidArgument, InvalidConfig

GOOD: list[tuple[str, str]] = [
    ("boot.autostart", "true"),
    ("boot.autostart", "0"),
    ("boot.autostart.delay", "5"),
    ("boot.autostart.priority", "-3"),
    ("boot.stop.priority", "10"),
    ("boot.host_shutdown_timeout", "30"),
    ("cloud-init.user-data", "#cloud-config\npackages:\n  - vim\n"),
    ("cloud-init.user-data", "#!/bin/sh\necho hi\n"),
    ("cloud-init.vendor-data", "#cloud-config\n{}"),
    ("cloud-init.network-config", "version: 2\nethernets: {}\n"),
    ("cloud-init.ssh-keys.mykey", "root:ssh-ed25519 AAAA"),
    ("cloud-init.ssh-keys.gh", "ubuntu:gh:someone"),
    ("cloud-init.ssh-keys.none", "none"),
    ("cluster.evacuate", "stop"),
    ("environment.FOO", "bar baz"),
    ("environment.http_proxy", "http://proxy:3128"),
    ("environment.EMPTYOK", ""),
    ("image.os", "Debian"),
    ("image.requirements.secureboot", "false"),
    ("limits.cpu", "2"),
    ("limits.cpu", "0"),
    ("limits.cpu", "0-3"),
    ("limits.cpu", "1,3"),
    ("limits.cpu", "1-1"),
    ("limits.cpu", "0-1,4,6-7"),
    ("limits.cpu.allowance", "50%"),
    ("limits.cpu.allowance", "200%"),
    ("limits.cpu.allowance", "25ms/100ms"),
    ("limits.cpu.allowance", "25/100"),
    ("limits.cpu.priority", "0"),
    ("limits.cpu.priority", "10"),
    ("limits.disk.priority", "5"),
    ("limits.memory", "512MiB"),
    ("limits.memory", "1MiB"),
    ("limits.memory", "10%"),
    ("limits.memory", "1GB"),
    ("limits.memory.enforce", "soft"),
    ("limits.memory.enforce", "hard"),
    ("limits.memory.swap", "false"),
    ("limits.memory.swap.priority", "3"),
    ("limits.processes", "100"),
    ("limits.hugepages.2MB", "1GiB"),
    ("limits.hugepages.64KB", "0"),
    ("limits.hugepages.1GB", "2GiB"),
    ("limits.hugepages.1MB", "10MB"),
    ("limits.kernel.nofile", "1000:2000"),
    ("limits.kernel.nofile", "unlimited"),
    ("limits.kernel.memlock", "unlimited:unlimited"),
    ("limits.kernel.core", "0"),
    ("limits.kernel.nproc", "100:unlimited"),
    ("limits.kernel.stack", "8388608 : 16777216"),
    ("linux.kernel_modules", "overlay,br_netfilter, ip_tables"),
    ("linux.kernel_modules.load", "boot"),
    ("linux.sysctl.net.ipv4.ip_forward", "1"),
    ("linux.sysctl.net.ipv4.conf.eth0/1.forwarding", "0"),
    ("migration.stateful", "true"),
    ("migration.incremental.memory.goal", "70"),
    ("raw.apparmor", "mount,\n"),
    ("raw.idmap", "both 1000 1000"),
    ("raw.idmap", "uid 1000-1009 0-9\ngid 50 50\n"),
    ("raw.lxc", "lxc.apparmor.profile=unconfined"),
    ("raw.lxc", "# comment\n\n  lxc.cgroup.devices.allow = a\nlxc.mount.entry = /a b none"),
    ("raw.lxc", "lxc.net.0.ipv4.address = 10.0.0.2/24\nlxc.cgroup2.memory.max=1G"),
    ("raw.lxc", "lxc.sysctl.net.ipv4.ip_forward=1\nlxc.include=/usr/share/lxc/config/nesting.conf"),
    ("raw.seccomp", "2\ndenylist\nreject_force_umount\n"),
    ("security.devlxd", "true"),
    ("security.idmap.base", "1065536"),
    ("security.idmap.isolated", "yes"),
    ("security.idmap.size", "65536"),
    ("security.nesting", "true"),
    ("security.privileged", "false"),
    ("security.protection.delete", "true"),
    ("security.protection.shift", "true"),
    ("security.protection.start", "on"),
    ("security.syscalls.deny", "kexec_load\nopen_by_handle_at"),
    ("security.syscalls.deny", "mount errno 4094\nreboot kill, kexec_load trap"),
    ("security.syscalls.deny", "mount  errno   38"),
    ("security.syscalls.allow", "read\nwrite allow\nopen errno 2, mount trap"),
    ("security.syscalls.deny_compat", "true"),
    ("security.syscalls.deny_default", "false"),
    ("security.syscalls.intercept.mknod", "false"),
    ("snapshots.expiry", "1M 2H 3d 4w 5m 6y"),
    ("snapshots.pattern", "snap%d"),
    ("snapshots.pattern", "auto-{{ creation_date|date:'2006-01-02' }}"),
    ("snapshots.pattern", "fixed"),
    ("snapshots.schedule", "@daily"),
    ("snapshots.schedule", "0 6 * * *"),
    ("snapshots.schedule", "*/15 * * * 1-5, @startup"),
    ("snapshots.schedule", "@HOURLY"),
    ("snapshots.schedule", "0 0 1 jan,JUL *"),
    ("snapshots.schedule.stopped", "true"),
    ("user.foo", "bar"),
    ("user.user-data", "#cloud-config\nfoo: bar\n"),
    ("user.a.b-c_d", "x"),
    ("volatile.base_image", "a" * 64),
    ("volatile.uuid", "5a0d5f3e-3d4b-4a6f-9a1e-0c1d2e3f4a5b"),
    ("volatile.eth0.hwaddr", "00:16:3e:00:00:01"),
    ("volatile.eth0.host_name", "veth1234"),
    ("volatile.root.apply_quota", "10GiB"),
    ("volatile.idmap.next", '[{"Isuid":true}]'),
    ("volatile.last_state.power", "RUNNING"),
]


@pytest.mark.parametrize(("key", "value"), GOOD)
def test_good_values(key: str, value: str) -> None:
    validate_key(key, value)
    out = validate_instance_config({key: value})
    assert out == ({key: value} if value else {})


BAD: list[tuple[str, str, str]] = [
    ("boot.autostart", "maybe", "Invalid value for a boolean"),
    ("boot.autostart.delay", "1.5", "Invalid value for an integer"),
    ("boot.autostart.priority", "x", "Invalid value for an integer"),
    ("boot.host_shutdown_timeout", "99999999999999999999", "Invalid value for an integer"),
    ("cloud-init.user-data", "#cloud-config\n: : :\n- [", "Invalid YAML"),
    ("cloud-init.network-config", "- a\n- b", "must be a mapping"),
    ("cloud-init.ssh-keys.k", "root:", "Key part must not be empty"),
    ("cloud-init.ssh-keys.k", ":ssh-rsa AAA", "User part must not be empty"),
    ("cluster.evacuate", "panic", "not one of"),
    ("limits.cpu", "a", "Invalid CPU limit syntax"),
    ("limits.cpu", "1-3,3", "Cannot define CPU multiple times"),
    ("limits.cpu", "1,1", "Cannot define CPU multiple times"),
    ("limits.cpu", "3-1", "end is below start"),
    ("limits.cpu", "0-99999", "out of range"),
    ("limits.cpu", "1-2-3", "Invalid CPU limit syntax"),
    ("limits.cpu", ",1", "Invalid CPU limit syntax"),
    ("limits.cpu", "1 ", "Invalid CPU limit syntax"),
    ("limits.cpu.allowance", "50", "Invalid allowance: 50"),
    ("limits.cpu.allowance", "x%", "Invalid value for an integer"),
    ("limits.cpu.allowance", "0%", "must be positive"),
    ("limits.cpu.allowance", "-5%", "must be positive"),
    ("limits.cpu.allowance", "25ms/0ms", "between 1ms and 1000ms"),
    ("limits.cpu.allowance", "0ms/100ms", "at least 1ms"),
    ("limits.cpu.allowance", "25s/100ms", "Invalid value for an integer"),
    ("limits.cpu.priority", "11", "Must be between 0 and 10"),
    ("limits.cpu.priority", "-1", "Must be between 0 and 10"),
    ("limits.cpu.priority", "high", "Invalid value for an integer"),
    ("limits.cpu.nodes", "0", "not supported by lxdlib"),
    ("limits.disk.priority", "20", "Must be between 0 and 10"),
    ("limits.memory", "0", "Memory limit is too low (minimum 1MiB)"),
    ("limits.memory", "0%", "Memory limit cannot be 0%"),
    ("limits.memory", "512KiB", "Memory limit is too low (minimum 1MiB)"),
    ("limits.memory", "-5%", "must be positive"),
    ("limits.memory", "x%", "Invalid value for an integer"),
    ("limits.memory", "1.5GiB", "Invalid value"),
    ("limits.memory", "1G", "Invalid value"),
    ("limits.memory.enforce", "medium", "not one of"),
    ("limits.memory.swap", "1GiB", "Invalid value for a boolean"),
    ("limits.memory.swap.priority", "11", "Must be between 0 and 10"),
    ("limits.processes", "0", "must be greater than 0"),
    ("limits.processes", "-1", "must be greater than 0"),
    ("limits.processes", "many", "Invalid value for an integer"),
    ("limits.hugepages.2MB", "lots", "Invalid value"),
    ("limits.kernel.nofile", "abc", "expected a number or 'unlimited'"),
    ("limits.kernel.nofile", "2000:1000", "soft limit cannot be above the hard limit"),
    ("limits.kernel.nofile", "unlimited:10", "soft limit cannot be above the hard limit"),
    ("limits.kernel.nofile", "1:2:3", "expected a number"),
    ("limits.kernel.nofile", "-1", "expected a number"),
    ("limits.kernel.bogus", "1", "Unknown kernel resource 'bogus'"),
    ("limits.kernel.bogus", "", "Unknown kernel resource 'bogus'"),
    ("linux.kernel_modules", "overlay,,ip_tables", "invalid kernel module name"),
    ("linux.kernel_modules", "a b", "invalid kernel module name"),
    ("linux.kernel_modules", "../x", "invalid kernel module name"),
    ("linux.kernel_modules", "overlay,-C", "invalid kernel module name"),
    ("linux.kernel_modules", "--dry-run", "invalid kernel module name"),
    ("linux.kernel_modules.load", "ondemand", "not supported by lxdlib"),
    ("linux.kernel_modules.load", "never", "not one of"),
    ("linux.sysctl.a b", "1", "whitespace"),
    ("linux.sysctl.=x", "1", "Invalid sysctl name"),
    ("raw.idmap", "both 1000", "Invalid ID map line"),
    ("raw.idmap", "all 1000 1000", "Invalid ID map type"),
    ("raw.idmap", "both 1000-1001 0", "different sizes"),
    ("raw.idmap", "both x 0", "Invalid ID map range"),
    ("raw.idmap", "both 5-1 0-4", "end is below start"),
    ("raw.idmap", "uid 1000 0\nuid 1000 1", "Host ID range"),
    ("raw.idmap", "both 1000 0\nuid 2000 0", "Container ID range"),
    ("raw.idmap", "both 4294967295 0", "below 4294967295"),
    ("raw.lxc", "a", "Invalid raw.lxc line: a"),
    ("raw.lxc", "lxc.notaconfigkey=invalid", "Unknown liblxc configuration key"),
    ("raw.lxc", "LXC.ARCH=x86_64", "Unknown liblxc configuration key"),
    ("raw.lxc", "lxc.log.file=/tmp/x", "Setting lxc.logfile is not allowed"),
    ("raw.lxc", "lxc.logfile=/tmp/x", "Setting lxc.logfile is not allowed"),
    ("raw.lxc", "LXC.LOG.FILE=/tmp/x", "Setting lxc.logfile is not allowed"),
    ("raw.lxc", "lxc.syslog=daemon", "Setting lxc.log.syslog is not allowed"),
    ("raw.lxc", "lxc.log.syslog=daemon", "Setting lxc.log.syslog is not allowed"),
    ("raw.lxc", "lxc.ephemeral=1", "Setting lxc.ephemeral is not allowed"),
    ("raw.lxc", "lxc.prlimit.nofile=10", 'Process limits should be set via "limits.kernel.'),
    ("raw.lxc", "lxc.apparmor.profile=x\r\n", "carriage returns"),
    ("raw.lxc", "lxc.net.0.bogus = 1", "Unknown liblxc configuration key"),
    ("raw.lxc", "lxc.cgroup. = 1", "Unknown liblxc configuration key"),
    ("security.idmap.base", "-1", "Invalid value for uint32"),
    ("security.idmap.size", "4294967296", "Invalid value for uint32"),
    ("security.nesting", "2", "Invalid value for a boolean"),
    ("security.syscalls.deny", "kexec_load;reboot", "Invalid syscall entry"),
    ("security.syscalls.deny", "mount notanaction", "Invalid action"),
    ("security.syscalls.deny", "mount errno abc", "Invalid action"),
    ("security.syscalls.deny", "mount errno 4095", "Invalid action"),
    ("security.syscalls.deny", "mount errno -5", "Invalid action"),
    ("security.syscalls.deny", "reboot\nmount allow", "Invalid action"),
    ("security.syscalls.deny", "mount log", "Invalid action"),
    ("security.syscalls.deny", "mount errno 1 junk", "Invalid action"),
    ("security.syscalls.allow", "read\nwrite kill", "Invalid action"),
    ("security.syscalls.allow", "read bogus", "Invalid action"),
    ("security.syscalls.allow", "read notify", "Invalid action"),
    ("security.syscalls.deny", "bpf notify", "Invalid action"),
    ("security.syscalls.allow", "read errno 5000", "Invalid action"),
    ("security.syscalls.intercept.mknod", "true", "not supported by lxdlib"),
    ("security.syscalls.intercept.mount.allowed", "ext4", "not supported by lxdlib"),
    ("security.delegate_bpf", "true", "not supported by lxdlib"),
    ("snapshots.expiry", "1 day", "Invalid expiry expression"),
    ("snapshots.pattern", "snap%d-%d", "may contain '%d' only once"),
    ("snapshots.pattern", "/", "Invalid snapshot name"),
    ("snapshots.pattern", "a b%d", "Invalid snapshot name"),
    ("snapshots.pattern", '{% include "/etc/hosts" %}', "not supported"),
    ("snapshots.pattern", "{{ creation_date }}", "Unsupported template expression"),
    ("snapshots.pattern", "{{ 1 }}", "Unsupported template expression"),
    ("snapshots.schedule", "@sometimes", "Schedule must be of the form"),
    ("snapshots.schedule", "0 6 * *", "Schedule must be of the form"),
    ("snapshots.schedule", "0  6 * * *", "Schedule must be of the form"),
    ("snapshots.schedule", "60 * * * *", "Error parsing schedule"),
    ("snapshots.schedule", "* 24 * * *", "Error parsing schedule"),
    ("snapshots.schedule", "* * 0 * *", "Error parsing schedule"),
    ("snapshots.schedule", "* * * 13 *", "Error parsing schedule"),
    ("snapshots.schedule", "* * * * 7", "Error parsing schedule"),
    ("snapshots.schedule", "*/0 * * * *", "Error parsing schedule"),
    ("snapshots.schedule", "5-1 * * * *", "Error parsing schedule"),
    ("snapshots.schedule", "@daily, bogus", "Schedule must be of the form"),
    ("user.\u237e", "foo", "Invalid key name"),
    ("user.a b", "foo", "whitespace"),
    ("volatile.bogus", "x", "Unknown configuration key"),
    ("volatile.uuid", "not-a-uuid", "Invalid UUID"),
    ("volatile.last_state.ready", "maybe", "Invalid value for a boolean"),
    ("volatile.eth0.created", "maybe", "Invalid value for a boolean"),
    ("environment.A=B", "x", "cannot contain '='"),
    ("nosuch.key", "x", "Unknown configuration key"),
    ("limits.network.priority", "5", "Unknown configuration key"),
    ("user.", "x", "requires a subkey"),
    ("environment.", "x", "requires a subkey"),
    ("volatile.", "x", "requires a subkey"),
    ("", "x", "cannot be empty"),
]


@pytest.mark.parametrize(("key", "value", "reason"), BAD)
def test_bad_values(key: str, value: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_instance_config({key: value})
    assert reason in exc.value.reason
    assert exc.value.key == key
    with pytest.raises(InvalidConfig):
        validate_key(key, value)


# Newlines: every single-line key refuses \n; every key refuses \r and NUL (CVE-2026-23953).
SINGLE_LINE_KEYS = [
    s.key + ("X" if s.is_prefix else "")
    for s in all_specs()
    if not s.multiline and s.key != "user."
]


@pytest.mark.parametrize("key", SINGLE_LINE_KEYS)
def test_newline_refused_in_single_line_keys(key: str) -> None:
    with pytest.raises(InvalidConfig, match="line breaks"):
        validate_key(key, "true\nlxc.hook.pre-start=/bin/evil")


@pytest.mark.parametrize("key", [s.key + ("X" if s.is_prefix else "") for s in all_specs()])
@pytest.mark.parametrize("bad", ["\r", "\0"])
def test_cr_and_nul_refused_everywhere(key: str, bad: str) -> None:
    with pytest.raises(InvalidConfig):
        validate_key(key, f"a{bad}b")


def test_environment_newline_message() -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_instance_config({"environment.FOO": "bar\nlxc.hook.pre-start = /tmp/x"})
    assert exc.value.reason == "Environment variables cannot contain line breaks"


@pytest.mark.parametrize("key", ["user.foo", "image.os", "linux.sysctl.kernel.x", "volatile.uuid"])
def test_newline_refused_in_prefix_and_volatile_keys(key: str) -> None:
    with pytest.raises(InvalidConfig, match="line breaks"):
        validate_key(key, "a\nb")


@pytest.mark.parametrize("key", ["a\nb", "user.a\nb", "user.a\0", "environment.A\rB"])
def test_control_chars_in_keys_refused(key: str) -> None:
    with pytest.raises(InvalidConfig):
        validate_instance_config({key: "x"})


@pytest.mark.parametrize(
    ("key", "value"),
    [("raw.lxc", "lxc.apparmor.profile=unconfined\nlxc.arch=x86_64"),
     ("raw.idmap", "both 1000 1000\nboth 2000 2000"),
     ("security.syscalls.allow", "read\nwrite"),
     ("cloud-init.user-data", "#cloud-config\na: 1\n"),
     ("user.meta-data", "a: 1\nb: 2\n")],
)
def test_multiline_keys_accept_newlines(key: str, value: str) -> None:
    validate_key(key, value)


def test_profile_refuses_volatile_and_image_keys() -> None:
    with pytest.raises(InvalidConfig, match="Volatile keys can only be set on instances"):
        validate_instance_config({"volatile.base_image": "x"}, profile=True)
    with pytest.raises(InvalidConfig, match="Image keys can only be set on instances"):
        validate_instance_config({"image.os": "x"}, profile=True)
    assert validate_instance_config({"limits.cpu": "1"}, profile=True) == {"limits.cpu": "1"}


def test_normalisation() -> None:
    cfg: dict[str, Any] = {"limits.cpu": 2, "security.nesting": True, "user.x": "",
                           "boot.autostart": False}
    assert validate_instance_config(cfg) == {
        "limits.cpu": "2", "security.nesting": "true", "boot.autostart": "false",
    }
    # a value without one text in LXD's config is refused, not stored as Python's str()
    for value in (1.5, b"2", None, ["2"]):
        with pytest.raises(InvalidConfig, match="must be strings"):
            validate_instance_config({"limits.cpu": value})
    with pytest.raises(InvalidConfig):
        validate_instance_config({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(InvalidConfig):
        validate_instance_config(["limits.cpu"])  # type: ignore[arg-type]


def test_input_not_modified() -> None:
    cfg = {"limits.cpu": "1", "user.a": ""}
    validate_instance_config(cfg)
    assert cfg == {"limits.cpu": "1", "user.a": ""}


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"raw.seccomp": "x", "security.syscalls.deny": "kexec_load"},
         "raw.seccomp is mutually exclusive with security.syscalls*"),
        ({"raw.seccomp": "x", "security.syscalls.deny_default": "true"},
         "raw.seccomp is mutually exclusive with security.syscalls*"),
        ({"security.syscalls.allow": "read", "security.syscalls.deny": "write"},
         "security.syscalls.allow is mutually exclusive with security.syscalls.deny*"),
        ({"security.syscalls.allow": "read", "security.syscalls.deny_compat": "yes"},
         "security.syscalls.allow is mutually exclusive with security.syscalls.deny*"),
    ],
)
def test_exclusive_combinations(config: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_instance_config(config)
    assert exc.value.reason == reason


def test_raw_seccomp_with_deny_default_false_is_fine() -> None:
    validate_instance_config({"raw.seccomp": "x", "security.syscalls.deny_default": "false"})


def test_spec_for_and_is_live() -> None:
    assert spec_for("limits.memory").live is True
    assert spec_for("limits.memory").default is None
    assert spec_for("limits.cpu.priority").default == "10"
    assert spec_for("snapshots.pattern").default == "snap%d"
    assert spec_for("environment.FOO").key == "environment."
    assert spec_for("limits.kernel.nofile").key == "limits.kernel."
    assert spec_for("cloud-init.ssh-keys.x").key == "cloud-init.ssh-keys."
    assert isinstance(spec_for("user.x"), KeySpec)
    assert is_live("limits.cpu") and is_live("limits.processes") and is_live("user.x")
    assert not is_live("limits.kernel.nofile")
    assert not is_live("security.privileged") and not is_live("raw.lxc")
    assert not is_live("security.nesting") and not is_live("linux.sysctl.a")
    with pytest.raises(InvalidConfig) as exc:
        spec_for("nope")
    assert exc.value.reason == "Unknown configuration key"


def test_every_documented_container_key_is_known() -> None:
    keys = {s.key for s in all_specs()}
    documented = {
        "boot.autostart", "boot.autostart.priority", "boot.autostart.delay", "boot.stop.priority",
        "boot.host_shutdown_timeout", "environment.", "limits.cpu", "limits.cpu.allowance",
        "limits.cpu.priority", "limits.memory", "limits.memory.enforce", "limits.memory.swap",
        "limits.memory.swap.priority", "limits.processes", "limits.hugepages.64KB",
        "limits.hugepages.1MB", "limits.hugepages.2MB", "limits.hugepages.1GB",
        "limits.disk.priority", "limits.kernel.", "linux.kernel_modules", "linux.sysctl.",
        "migration.stateful", "raw.idmap", "raw.lxc", "raw.seccomp", "raw.apparmor",
        "security.privileged", "security.nesting", "security.idmap.isolated",
        "security.idmap.base", "security.idmap.size", "security.protection.delete",
        "security.protection.shift", "security.protection.start",
        "security.syscalls.deny_default", "security.syscalls.deny_compat",
        "security.syscalls.deny", "security.syscalls.allow", "security.devlxd",
        "snapshots.pattern", "snapshots.schedule", "snapshots.schedule.stopped",
        "snapshots.expiry", "user.", "image.", "cloud-init.user-data", "cloud-init.vendor-data",
        "cloud-init.network-config", "cloud-init.ssh-keys.",
    }
    assert documented <= keys


def test_raw_idmap_parse() -> None:
    assert parse_raw_idmap("both 1000 1000\nuid 2000-2001 10-11\n\ngid 3 4") == [
        IdmapEntry("both", 1000, 1000, 1),
        IdmapEntry("uid", 2000, 10, 2),
        IdmapEntry("gid", 3, 4, 1),
    ]
    e = IdmapEntry("uid", 1, 1, 1)
    assert e.uid and not e.gid
    # uid and gid maps of the same ids do not collide
    assert len(parse_raw_idmap("uid 1000 0\ngid 1000 0")) == 2


def test_raw_lxc_parse() -> None:
    assert parse_raw_lxc(" \tlxc.arch = x86_64 \n#x\n\nlxc.mount.auto=proc:rw") == [
        ("lxc.arch", "x86_64"), ("lxc.mount.auto", "proc:rw"),
    ]


@pytest.mark.parametrize(
    ("key", "known"),
    [("lxc.arch", True), ("lxc.cgroup.memory.limit_in_bytes", True), ("lxc.cgroup2.cpu.max", True),
     ("lxc.net.0.type", True), ("lxc.net.12.veth.pair", True), ("lxc.net", True),
     ("lxc.net.0", True), ("lxc.prlimit.nofile", True), ("lxc.sysctl.x", True),
     ("lxc.proc.oom_score_adj", True), ("lxc.namespace.share.net", True),
     ("lxc.cgroup", False), ("lxc.cgroup2", False), ("lxc.network.type", False),
     ("lxc.utsname", False), ("lxc.net.x.type", False), ("lxc.nope", False)],
)
def test_is_lxc_key(key: str, known: bool) -> None:
    assert is_lxc_key(key) is known


# -- server config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("images.remote_cache_expiry", "10"), ("images.remote_cache_expiry", "0"),
     ("images.auto_update_interval", "0"), ("images.auto_update_interval", "6"),
     ("images.auto_update_cached", "false"), ("images.compression_algorithm", "gzip"),
     ("images.compression_algorithm", "none"), ("images.compression_algorithm", "zstd -19"),
     ("images.compression_algorithm", "xz -T0"), ("images.default_architecture", "x86_64"),
     ("user.note", "hi")],
)
def test_server_config_ok(key: str, value: str) -> None:
    assert validate_server_config({key: value}) == {key: value}


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [("images.remote_cache_expiry", "ten", "Invalid value for an integer"),
     ("images.auto_update_interval", "1.5", "Invalid value for an integer"),
     ("images.auto_update_cached", "maybe", "Invalid value for a boolean"),
     ("images.compression_algorithm", "ls", "Invalid compression algorithm 'ls'"),
     ("images.compression_algorithm", "zstd -d -f -o /tmp/x", "is not allowed"),
     ("images.default_architecture", "z80", "not one of"),
     ("core.https_address", ":8443", "Unknown configuration key"),
     ("user.\u237e", "foo", "Invalid key name"),
     ("images.auto_update_cached", "true\nx", "line breaks")],
)
def test_server_config_refused(key: str, value: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_server_config({key: value})
    assert reason in exc.value.reason


def test_server_setting_defaults() -> None:
    assert server_setting({}, "images.remote_cache_expiry") == "10"
    assert server_setting({}, "images.auto_update_interval") == "6"
    assert server_setting({}, "images.auto_update_cached") == "true"
    assert server_setting({}, "images.compression_algorithm") == "gzip"
    cfg = {"images.auto_update_interval": "0"}
    assert server_setting(cfg, "images.auto_update_interval") == "0"
    with pytest.raises(InvalidConfig):
        server_setting({}, "core.x")
    assert validate_server_config({"images.auto_update_cached": True}) == {
        "images.auto_update_cached": "true"}
    with pytest.raises(InvalidArgument):
        validate_server_config({"images.auto_update_cached": None})
