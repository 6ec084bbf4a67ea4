"""The instance-option schema: every container key LXD knows, its validator, default, and whether
a change reaches a running instance without a restart.

Validators follow LXD's (``lxd/instance/instancetype/instance.go``) and use its messages where it
has them. Where LXD accepts a value that only fails later (at start, in liblxc, in the kernel) the
check here is stricter so the failure comes before anything is written: ``raw.lxc`` keys must be
liblxc 5.0 keys, ``raw.idmap`` must parse, ``limits.kernel.*`` must name a real resource,
``snapshots.pattern`` must be able to produce a valid name.

Every key and value is refused if it holds ``\\r`` or NUL, and every value is refused if it holds
``\\n`` unless the key is one of the few multi-line blobs that never land in a liblxc config line
(``raw.lxc`` is written line by line after each line is checked). A newline in
``environment.*`` is how CVE-2026-23953 injected ``lxc.hook.*`` lines into the container config.

Errors are :class:`~lxdlib.errors.InvalidConfig` with the key, the reason and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..errors import TYPE_CHECKING, InvalidArgument, InvalidConfig
from ..patterns import Pattern
from ..values import Value, assign
from . import limits as _limits
from .snapshots import validate_pattern, validate_schedule
from .syscalls import is_syscall
from .text import has_control, is_printable_name, is_utf8
from .units import INT64_MAX, is_bool, is_true, parse_expiry, parse_size, quoted

if TYPE_CHECKING:
    from typing import Any

Validator = Callable[[str], None]

# ------------------------------------------------------------------------------------------------
# Small validators. Each raises InvalidArgument(reason); validate_key adds the key and value.


def _fail(reason: str) -> InvalidArgument:
    return InvalidArgument(reason)


_GO_INT = Pattern(r"[+-]?[0-9]+")
_GO_UINT = Pattern(r"[0-9]+")


def is_any(value: str) -> None:
    """Any single value (the newline rules still apply)."""


def is_bool_value(value: str) -> None:
    if not is_bool(value):
        raise _fail(f"Invalid value for a boolean {quoted(value)}")


def is_int64(value: str) -> None:
    if not _GO_INT.fullmatch(value) or not -(2**63) <= int(value) <= INT64_MAX:
        raise _fail(f"Invalid value for an integer {quoted(value)}")


def is_positive_int64(value: str) -> None:
    is_int64(value)
    if int(value) <= 0:
        raise _fail(f"Invalid value {value!r}: must be greater than 0")


def is_uint(bits: int) -> Validator:
    def check(value: str) -> None:
        if not _GO_UINT.fullmatch(value) or int(value) >= 2**bits:
            raise _fail(f"Invalid value for uint{bits} {quoted(value)}")

    return check


is_uint8 = is_uint(8)
is_uint32 = is_uint(32)


def is_priority(value: str) -> None:
    """LXD ``IsPriority``: an integer 0..10."""
    if not _GO_INT.fullmatch(value):
        raise _fail(f"Invalid value for an integer {quoted(value)}")
    if not 0 <= int(value) <= 10:
        raise _fail(f"Invalid value for a limit {quoted(value)}. Must be between 0 and 10")


def is_one_of(*valid: str) -> Validator:
    def check(value: str) -> None:
        if value not in valid:
            raise _fail(f"Invalid value {value!r} (not one of {list(valid)})")

    return check


def is_size(value: str) -> None:
    parse_size(value)


def is_uuid(value: str) -> None:
    import uuid  # here: the one use (~0.6 ms of every command's start)
    try:
        uuid.UUID(value)
    except ValueError:
        raise _fail("Invalid UUID") from None


def optional(*validators: Validator) -> Validator:
    """LXD's ``validate.Optional``: the empty string passes; anything else must pass all."""

    def check(value: str) -> None:
        if value == "":
            return
        for v in validators:
            v(value)

    return check


def is_cpuset(value: str) -> None:
    try:
        _limits.cpu_limit(value)
    except InvalidConfig as e:
        raise _fail(e.reason) from e


def is_memory_limit(value: str) -> None:
    if value.endswith("%"):
        pct = value[:-1]
        if not _GO_INT.fullmatch(pct):
            raise _fail(f"Invalid value for an integer {quoted(pct)}")
        if int(pct) == 0:
            raise _fail("Memory limit cannot be 0%")
        if int(pct) < 0:
            raise _fail("Memory limit percentage must be positive")
        return
    n = parse_size(value)
    if n < 1024 * 1024:
        raise _fail("Memory limit is too low (minimum 1MiB)")


def is_cpu_allowance(value: str) -> None:
    try:
        _limits.parse_cpu_allowance(value)
    except InvalidConfig as e:
        raise _fail(e.reason) from e


def is_expiry(value: str) -> None:
    parse_expiry(value)


def is_schedule(value: str) -> None:
    try:
        validate_schedule(value)
    except InvalidConfig as e:
        raise _fail(e.reason) from e


def is_snapshot_pattern(value: str) -> None:
    try:
        validate_pattern(value)
    except InvalidConfig as e:
        raise _fail(e.reason) from e


def _yaml_mapping(value: str) -> None:
    import yaml  # here: only a key holding YAML (cloud-init) needs PyYAML, ~14 ms to import
    try:
        data = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise _fail(f"Invalid YAML: {e}") from e
    if data is not None and not isinstance(data, dict):
        raise _fail("Invalid YAML: the document must be a mapping")


def is_yaml(value: str) -> None:
    _yaml_mapping(value)


def is_cloud_init_user_data(value: str) -> None:
    """``#cloud-config`` documents must be YAML; other user-data formats are passed through."""
    if value.startswith("#cloud-config\n"):
        _yaml_mapping(value[len("#cloud-config\n"):])


def is_user_ssh_key(value: str) -> None:
    if value == "none":
        return
    user, _, key = value.partition(":")
    if key == "":
        raise _fail("Key part must not be empty")
    if user == "":
        raise _fail("User part must not be empty")


# not starting with "-": modprobe would take the name for one of its options (``-C``, ``-v``)
_MODULE_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def is_kernel_modules(value: str) -> None:
    """``linux.kernel_modules``: a comma-separated list of module names."""
    for item in value.split(","):
        name = item.strip()
        if not _MODULE_NAME.fullmatch(name):
            raise _fail(f"Item {name!r}: invalid kernel module name")


def is_module_load(value: str) -> None:
    is_one_of("boot", "ondemand")(value)
    if value == "ondemand":
        raise _fail("Loading kernel modules on demand is not supported by lxdlib")


def is_prlimit_value(value: str) -> None:
    """``N``, ``unlimited`` or ``soft:hard`` (the resource name is checked with the key)."""
    try:
        _limits.parse_prlimit_value(value)
    except InvalidConfig as e:
        raise _fail(e.reason) from e


def is_syscall_list(value: str) -> None:
    """``security.syscalls.allow/deny``: syscall names, one per line (or comma-separated)."""
    for line in re.split(r"[\n,]", value):
        entry = line.strip()
        if entry and not re.fullmatch(r"[A-Za-z0-9_]+(?:\s.*)?", entry):
            raise _fail(f"Invalid syscall entry {entry!r}")
        name = entry.split()[0] if entry else ""
        if name and not is_syscall(name):
            raise _fail(f"Unknown syscall {name!r} (not a syscall name libseccomp knows)")


# What liblxc (5.0, through libseccomp) loads after a syscall name: an action other than the
# list's own default (a deny list allows, an allow list kills: naming it fails to load), and
# "log" it does not know; an errno must be below 4095 (MAX_ERRNO). It reads "killx" and
# "errno 1 junk" by their prefixes: refused here too. "notify" loads, but hands the call to a
# listener lxdlib does not have (the syscall fails with ENOSYS), and every exec then failed.
_SECCOMP_ACTION = Pattern(r"allow|kill|trap|errno\s+[0-9]{1,6}")
_MAX_SECCOMP_ERRNO = 4094


def _syscall_list_of(default: str) -> Validator:
    """``security.syscalls.allow`` (``default`` "kill") or ``.deny`` (``default`` "allow"):
    a syscall name per line, alone or with the action liblxc takes instead of the list's
    default. Anything else after the name was saved and then failed every start (liblxc
    refuses the policy), or every exec (``notify``)."""
    valid = ", ".join(a for a in ("allow", "kill", "trap") if a != default)

    def check(value: str) -> None:
        is_syscall_list(value)
        for line in re.split(r"[\n,]", value):
            name, _, action = line.strip().partition(" ")
            action = action.strip()
            if action and (action == default or not _SECCOMP_ACTION.fullmatch(action) or (
                    action.startswith("errno") and int(action[5:]) > _MAX_SECCOMP_ERRNO)):
                raise _fail(f"Invalid action {action!r} for {name!r} (one of: errno N with N "
                            f"0-{_MAX_SECCOMP_ERRNO}, {valid})")

    return check


def unsupported(feature: str, inner: Validator = is_any, *, allow_false: bool = True
                ) -> Validator:
    """A key LXD has and lxdlib cannot honour: accepted only when empty (or, for boolean
    switches, false)."""

    def check(value: str) -> None:
        inner(value)
        if value == "" or (allow_false and is_bool(value) and not is_true(value)):
            return
        raise _fail(f"{feature} is not supported by lxdlib")

    return check


# ------------------------------------------------------------------------------------------------
# raw.idmap


class IdmapEntry(Value, frozen=True):
    """One ``raw.idmap`` line: map ``size`` host ids from ``host`` to ``ns`` in the container."""

    _fields = ("kind", "host", "ns", "size")
    __slots__ = _fields

    kind: str  # "both" | "uid" | "gid"
    host: int
    ns: int
    size: int

    def __init__(self, kind: str, host: int, ns: int, size: int) -> None:
        assign(self, "kind", kind)
        assign(self, "host", host)
        assign(self, "ns", ns)
        assign(self, "size", size)

    @property
    def uid(self) -> bool:
        return self.kind in ("both", "uid")

    @property
    def gid(self) -> bool:
        return self.kind in ("both", "gid")


_ID_MAX = 2**32 - 2  # 2**32-1 is (uid_t)-1


def _id_range(r: str) -> tuple[int, int]:
    base_s, dash, end_s = r.partition("-")
    if not _GO_UINT.fullmatch(base_s) or (dash and not _GO_UINT.fullmatch(end_s)):
        raise _fail(f"Invalid ID map range {r!r}")
    base = int(base_s)
    end = int(end_s) if dash else base
    if end < base:
        raise _fail(f"Invalid ID map range {r!r}: end is below start")
    if end > _ID_MAX:
        raise _fail(f"Invalid ID map range {r!r}: IDs must be below 4294967295")
    return base, end - base + 1


def parse_raw_idmap(value: str) -> list[IdmapEntry]:
    """Parse ``raw.idmap``: lines ``both|uid|gid <host>[-<end>] <ns>[-<end>]``.

    Refuses ranges of different sizes and an id mapped twice (host side or container side).
    """
    entries: list[IdmapEntry] = []
    for line in value.split("\n"):
        if line.strip() == "":
            continue
        fields = line.split()
        if len(fields) != 3:
            raise _fail(f"Invalid ID map line {line!r}")
        kind = fields[0]
        if kind not in ("both", "uid", "gid"):
            raise _fail(f"Invalid ID map type {line!r}")
        host, host_size = _id_range(fields[1])
        ns, ns_size = _id_range(fields[2])
        if host_size != ns_size:
            raise _fail(f"The ID map ranges are of different sizes {line!r}")
        entry = IdmapEntry(kind, host, ns, host_size)
        for other in entries:
            shares_kind = (entry.uid and other.uid) or (entry.gid and other.gid)
            if not shares_kind:
                continue
            if _overlap(entry.host, entry.size, other.host, other.size):
                raise _fail(f"Host ID range in {line!r} is already mapped")
            if _overlap(entry.ns, entry.size, other.ns, other.size):
                raise _fail(f"Container ID range in {line!r} is already mapped")
        entries.append(entry)
    return entries


def _overlap(a: int, a_size: int, b: int, b_size: int) -> bool:
    return a < b + b_size and b < a + a_size


def is_raw_idmap(value: str) -> None:
    parse_raw_idmap(value)


# ------------------------------------------------------------------------------------------------
# raw.lxc

# liblxc 5.0's config keys (src/lxc/confile.c): exact keys, and prefixes that take a sub-key.
LXC_KEYS = frozenset({
    "lxc.arch", "lxc.apparmor.profile", "lxc.apparmor.allow_incomplete",
    "lxc.apparmor.allow_nesting", "lxc.apparmor.raw", "lxc.autodev.tmpfs.size", "lxc.autodev",
    "lxc.cap.drop", "lxc.cap.keep", "lxc.cgroup.dir.monitor.pivot", "lxc.cgroup.dir.monitor",
    "lxc.cgroup.dir.container.inner", "lxc.cgroup.dir.container", "lxc.cgroup.dir",
    "lxc.cgroup.relative", "lxc.console.buffer.size", "lxc.console.logfile", "lxc.console.path",
    "lxc.console.rotate", "lxc.console.size", "lxc.sched.core", "lxc.environment",
    "lxc.ephemeral", "lxc.execute.cmd", "lxc.group", "lxc.hook.autodev", "lxc.hook.clone",
    "lxc.hook.destroy", "lxc.hook.mount", "lxc.hook.post-stop", "lxc.hook.pre-mount",
    "lxc.hook.pre-start", "lxc.hook.start", "lxc.hook.start-host", "lxc.hook.stop",
    "lxc.hook.version", "lxc.hook", "lxc.idmap", "lxc.include", "lxc.init.cmd", "lxc.init.gid",
    "lxc.init.groups", "lxc.init.uid", "lxc.init.cwd", "lxc.keyring.session", "lxc.log.file",
    "lxc.log.level", "lxc.log.syslog", "lxc.monitor.unshare", "lxc.monitor.signal.pdeath",
    "lxc.mount.auto", "lxc.mount.entry", "lxc.mount.fstab", "lxc.namespace.clone",
    "lxc.namespace.keep", "lxc.time.offset.boot", "lxc.time.offset.monotonic", "lxc.net",
    "lxc.no_new_privs", "lxc.pty.max", "lxc.rootfs.managed", "lxc.rootfs.mount",
    "lxc.rootfs.options", "lxc.rootfs.path", "lxc.seccomp.allow_nesting",
    "lxc.seccomp.notify.cookie", "lxc.seccomp.notify.proxy", "lxc.seccomp.profile",
    "lxc.selinux.context.keyring", "lxc.selinux.context", "lxc.signal.halt", "lxc.signal.reboot",
    "lxc.signal.stop", "lxc.start.auto", "lxc.start.delay", "lxc.start.order", "lxc.tty.dir",
    "lxc.tty.max", "lxc.uts.name",
})
LXC_KEY_PREFIXES = ("lxc.cgroup2.", "lxc.cgroup.", "lxc.namespace.share.", "lxc.prlimit.",
                    "lxc.sysctl.", "lxc.proc.")
LXC_NET_SUBKEYS = frozenset({
    "flags", "hwaddr", "ipv4.address", "ipv4.gateway", "ipv6.address", "ipv6.gateway", "link",
    "l2proxy", "macvlan.mode", "ipvlan.mode", "ipvlan.isolation", "mtu", "name", "script.down",
    "script.up", "type", "vlan.id", "veth.mode", "veth.n_rxqueues", "veth.n_txqueues",
    "veth.pair", "veth.ipv4.route", "veth.ipv6.route", "veth.vlan.id", "veth.vlan.tagged.id",
})
_LXC_NET = Pattern(r"lxc\.net\.([0-9]+)(?:\.(.+))?")


def is_lxc_key(key: str) -> bool:
    """Whether liblxc 5.0 knows ``key`` (so ``lxc.notaconfigkey`` is refused before start)."""
    if key in LXC_KEYS:
        return True
    m = _LXC_NET.fullmatch(key)
    if m is not None:
        return m.group(2) is None or m.group(2) in LXC_NET_SUBKEYS
    return any(key.startswith(p) and len(key) > len(p) for p in LXC_KEY_PREFIXES)


def parse_raw_lxc(value: str) -> list[tuple[str, str]]:
    """``raw.lxc`` -> ``[(key, value), ...]``, checked as LXD does and against liblxc's keys.

    Blank lines and ``#`` comments are skipped; every other line must be ``key = value``.
    LXD's refusals: ``lxc.logfile``/``lxc.log.file``, ``lxc.syslog``/``lxc.log.syslog``,
    ``lxc.ephemeral``, ``lxc.prlimit.*`` (use ``limits.kernel.*``).
    """
    out: list[tuple[str, str]] = []
    for raw_line in value.split("\n"):
        if raw_line == "":
            continue
        line = raw_line.lstrip("\t ")
        if line == "" or line.startswith("#"):
            continue
        key, eq, val = line.partition("=")
        if not eq:
            raise _fail(f"Invalid raw.lxc line: {line}")
        key = key.strip(" \t")
        val = val.strip(" \t")
        low = key.lower()
        if low in ("lxc.logfile", "lxc.log.file"):
            raise _fail("Setting lxc.logfile is not allowed")
        if low in ("lxc.syslog", "lxc.log.syslog"):
            raise _fail("Setting lxc.log.syslog is not allowed")
        if low == "lxc.ephemeral":
            raise _fail("Setting lxc.ephemeral is not allowed")
        if low.startswith("lxc.prlimit."):
            raise _fail(
                'Process limits should be set via "limits.kernel.[limit name]" and not '
                'directly via "lxc.prlimit.[limit name]"'
            )
        if not is_lxc_key(key):
            raise _fail(f"Unknown liblxc configuration key {key!r}")
        out.append((key, val))
    return out


def is_raw_lxc(value: str) -> None:
    parse_raw_lxc(value)


# ------------------------------------------------------------------------------------------------
# The schema


class KeySpec(Value, frozen=True):
    """One instance option. A ``key`` ending in ``.`` is a prefix (``user.``, ``environment.``)."""

    _fields = ("key", "validate", "live", "default", "description", "multiline")
    __slots__ = _fields

    key: str
    validate: Validator
    live: bool
    default: str | None
    description: str
    multiline: bool

    def __init__(self, key: str, validate: Validator, live: bool, default: str | None = None,
                 description: str = "", multiline: bool = False) -> None:
        assign(self, "key", key)
        assign(self, "validate", validate)
        assign(self, "live", live)
        assign(self, "default", default)
        assign(self, "description", description)
        assign(self, "multiline", multiline)

    @property
    def is_prefix(self) -> bool:
        return self.key.endswith(".")


def _k(key: str, validate: Validator, live: bool, default: str | None, description: str,
       *, multiline: bool = False) -> KeySpec:
    return KeySpec(key, validate, live, default, description, multiline)


_B = optional(is_bool_value)

# ``live`` means: a change takes effect on a running instance without a restart. Metadata keys
# (boot.*, snapshots.*, protection, user.*) count as live: nothing needs to restart for them.
_SPECS: tuple[KeySpec, ...] = (
    # boot
    _k("boot.autostart", _B, True, None, "Start the instance when the host starts"),
    _k("boot.autostart.delay", optional(is_int64), True, "0",
       "Seconds to wait after starting this instance at host start"),
    _k("boot.autostart.priority", optional(is_int64), True, "0",
       "Start order at host start (higher first)"),
    _k("boot.stop.priority", optional(is_int64), True, "0",
       "Stop order at host shutdown (higher first)"),
    _k("boot.host_shutdown_timeout", optional(is_int64), True, "30",
       "Seconds to wait for a clean shutdown before forcing"),
    # cloud-init
    _k("cloud-init.network-config", optional(is_yaml), False, None,
       "Network configuration for cloud-init", multiline=True),
    _k("cloud-init.user-data", optional(is_cloud_init_user_data), False, None,
       "User data for cloud-init", multiline=True),
    _k("cloud-init.vendor-data", optional(is_cloud_init_user_data), False, None,
       "Vendor data for cloud-init", multiline=True),
    _k("cloud-init.ssh-keys.", optional(is_user_ssh_key), False, None,
       "An SSH key for cloud-init, as <user>:<key>"),
    # cluster / misc metadata
    _k("cluster.evacuate", optional(is_one_of("auto", "migrate", "live-migrate", "stop")), True,
       "auto", "What to do when the host is evacuated (kept for LXD compatibility)"),
    _k("ubuntu_pro.guest_attach", optional(is_one_of("off", "on", "available")), True, None,
       "Ubuntu Pro guest attach (kept for LXD compatibility; no effect)"),
    # limits
    _k("limits.cpu", optional(is_cpuset), True, None,
       "CPUs: a count to load-balance (2) or a set to pin (0-3, 1,3, 1-1)"),
    _k("limits.cpu.allowance", optional(is_cpu_allowance), True, "100%",
       "CPU share (50%, soft) or quota (25ms/100ms, hard)"),
    _k("limits.cpu.priority", optional(is_priority), True, "10",
       "CPU scheduling priority 0..10"),
    _k("limits.cpu.nodes", unsupported("NUMA placement (limits.cpu.nodes)", is_cpuset,
                                         allow_false=False), True, None,
       "NUMA nodes for the instance's CPUs"),
    _k("limits.disk.priority", optional(is_priority), True, "5", "I/O priority 0..10"),
    _k("limits.memory", optional(is_memory_limit), True, None,
       "Memory limit: a size (>= 1MiB) or a percentage of host memory"),
    _k("limits.memory.enforce", optional(is_one_of("soft", "hard")), True, "hard",
       "Whether the memory limit is hard or soft"),
    _k("limits.memory.swap", _B, True, "true", "Whether the instance may swap"),
    _k("limits.memory.swap.priority", optional(is_priority), True, "10",
       "Swap priority 0..10 (cgroup v1 swappiness 70-N)"),
    _k("limits.processes", optional(is_positive_int64), True, None, "Maximum number of processes"),
    _k("limits.hugepages.64KB", optional(is_size), True, None, "64KB huge pages limit"),
    _k("limits.hugepages.1MB", optional(is_size), True, None, "1MB huge pages limit"),
    _k("limits.hugepages.2MB", optional(is_size), True, None, "2MB huge pages limit"),
    _k("limits.hugepages.1GB", optional(is_size), True, None, "1GB huge pages limit"),
    _k("limits.kernel.", optional(is_prlimit_value), False, None,
       "Kernel resource limit (prlimit): N, unlimited or soft:hard"),
    # linux
    _k("linux.kernel_modules", optional(is_kernel_modules), True, None,
       "Kernel modules to load before start (comma-separated)"),
    _k("linux.kernel_modules.load", optional(is_module_load), False, "boot",
       "How to load kernel modules (lxdlib: only 'boot')"),
    _k("linux.sysctl.", is_any, False, None, "A sysctl inside the container (lxc.sysctl.*)"),
    # migration
    _k("migration.stateful", _B, False, "false", "Allow stateful stop/snapshot (CRIU)"),
    _k("migration.incremental.memory", _B, True, "false",
       "Incremental memory transfer (kept for LXD compatibility)"),
    _k("migration.incremental.memory.iterations", optional(is_uint32), True, "10",
       "Incremental memory transfer iterations (kept for LXD compatibility)"),
    _k("migration.incremental.memory.goal", optional(is_uint32), True, "70",
       "Incremental memory transfer goal (kept for LXD compatibility)"),
    # raw
    _k("raw.apparmor", is_any, True, None, "AppArmor profile entries (no AppArmor: ignored)",
       multiline=True),
    _k("raw.idmap", is_raw_idmap, False, None, "Extra id mappings: both|uid|gid <host> <ns>",
       multiline=True),
    _k("raw.lxc", is_raw_lxc, False, None, "liblxc config lines appended to the generated one",
       multiline=True),
    _k("raw.seccomp", is_any, False, None, "Raw seccomp policy", multiline=True),
    # security
    _k("security.devlxd", _B, False, "true", "/dev/lxd (lxdlib has none; kept for compatibility)"),
    _k("security.devlxd.images", _B, True, "false",
       "/dev/lxd image API (lxdlib has none; kept for compatibility)"),
    _k("security.idmap.base", optional(is_uint32), False, None, "First host id of the idmap"),
    _k("security.idmap.isolated", _B, False, "false", "Use an idmap no other instance shares"),
    _k("security.idmap.size", optional(is_uint32), False, None, "Size of the idmap"),
    _k("security.nesting", _B, False, "false", "Allow nested containers"),
    _k("security.privileged", _B, False, "false", "Run without a user namespace"),
    _k("security.protection.delete", _B, True, "false", "Refuse to delete the instance"),
    _k("security.protection.shift", _B, True, "false", "Refuse to shift the rootfs ownership"),
    _k("security.protection.start", _B, True, "false", "Refuse to start the instance"),
    _k("security.syscalls.allow", optional(_syscall_list_of("kill")), False, None,
       "Syscalls to allow (newline-separated)", multiline=True),
    _k("security.syscalls.deny", optional(_syscall_list_of("allow")), False, None,
       "Syscalls to deny (newline-separated)", multiline=True),
    _k("security.syscalls.deny_compat", _B, False, "false", "Block compat_* syscalls"),
    _k("security.syscalls.deny_default", _B, False, "true", "Use the default syscall deny list"),
    # snapshots
    _k("snapshots.expiry", optional(is_expiry), True, None,
       "Snapshot lifetime, e.g. 1M 2H 3d 4w 5m 6y"),
    _k("snapshots.pattern", optional(is_snapshot_pattern), True, "snap%d",
       "Name template for unnamed snapshots"),
    _k("snapshots.schedule", optional(is_schedule), True, None,
       "Cron spec(s) or @hourly/@daily/... for automatic snapshots"),
    _k("snapshots.schedule.stopped", _B, True, "false", "Also snapshot stopped instances"),
    # prefixes
    _k("environment.", is_any, True, None,
       "Environment variable for init (restart) and for exec (immediately)"),
    _k("image.", is_any, True, None, "Properties of the image the instance came from"),
    _k("user.", is_any, True, None, "Free-form user metadata"),
)

_UNSUPPORTED: dict[str, str] = {
    "security.syscalls.intercept.bpf": "Syscall interception (bpf)",
    "security.syscalls.intercept.bpf.devices": "Syscall interception (bpf devices)",
    "security.syscalls.intercept.mknod": "Syscall interception (mknod)",
    "security.syscalls.intercept.mount": "Syscall interception (mount)",
    "security.syscalls.intercept.mount.shift": "Syscall interception (mount shift)",
    "security.syscalls.intercept.sched_setscheduler": "Syscall interception (sched_setscheduler)",
    "security.syscalls.intercept.setxattr": "Syscall interception (setxattr)",
    "security.syscalls.intercept.sysinfo": "Syscall interception (sysinfo)",
    "security.delegate_bpf": "BPF token delegation",
}
_UNSUPPORTED_ANY: dict[str, str] = {
    "security.syscalls.intercept.mount.allowed": "Syscall interception (mount allow-list)",
    "security.syscalls.intercept.mount.fuse": "Syscall interception (mount to FUSE)",
    "security.delegate_bpf.cmd_types": "BPF token delegation",
    "security.delegate_bpf.map_types": "BPF token delegation",
    "security.delegate_bpf.prog_types": "BPF token delegation",
    "security.delegate_bpf.attach_types": "BPF token delegation",
}

# Volatile keys: written by lxdlib itself (and by LXD, for records imported from it).
VOLATILE_KEYS = frozenset({
    "volatile.apply_template", "volatile.attached_volumes", "volatile.base_image",
    "volatile.cloud-init.instance-id", "volatile.evacuate.origin", "volatile.cluster.group",
    "volatile.last_state.power", "volatile.last_state.ready", "volatile.apply_quota",
    "volatile.uuid", "volatile.uuid.generation", "volatile.last_state.idmap",
    "volatile.idmap.base", "volatile.idmap.current", "volatile.idmap.next",
    "volatile.idmap.size",  # lxdlib: the size of an isolated allocation
})
# volatile.<device>.<suffix>
VOLATILE_DEVICE_SUFFIXES = (
    ".hwaddr", ".name", ".host_name", ".mtu", ".created", ".id", ".vlan", ".spoofcheck",
    ".last_state.vf.parent", ".apply_quota", ".ceph_rbd", ".last_state.pci.driver",
    ".last_state.usb.bus", ".last_state.usb.device", ".uuid", ".last_state.ready", ".bus",
    ".devlxd.owner",
)
MULTILINE_USER_KEYS = frozenset({
    "user.user-data", "user.vendor-data", "user.network-config", "user.meta-data",
})

_BY_KEY: dict[str, KeySpec] = {s.key: s for s in _SPECS if not s.is_prefix}
_PREFIXES: tuple[KeySpec, ...] = tuple(
    sorted((s for s in _SPECS if s.is_prefix), key=lambda s: -len(s.key))
)
for _key, _what in _UNSUPPORTED.items():
    _BY_KEY[_key] = KeySpec(_key, unsupported(_what, optional(is_bool_value)), False, "false",
                            f"{_what}: not supported by lxdlib")
for _key, _what in _UNSUPPORTED_ANY.items():
    _BY_KEY[_key] = KeySpec(_key, unsupported(_what, allow_false=False), False, None,
                            f"{_what}: not supported by lxdlib")

def all_specs() -> list[KeySpec]:
    """Every exact key and prefix the schema knows, sorted by key."""
    return sorted([*_BY_KEY.values(), *_PREFIXES], key=lambda s: s.key)


def _volatile_spec(key: str) -> KeySpec | None:
    if key in VOLATILE_KEYS:
        check: Validator = is_any
        if key in ("volatile.uuid", "volatile.uuid.generation", "volatile.cloud-init.instance-id"):
            check = optional(is_uuid)
        elif key == "volatile.last_state.ready":
            check = is_bool_value
        return KeySpec(key, check, True, None, "Internal state written by lxdlib")
    rest = key[len("volatile."):]
    for suffix in VOLATILE_DEVICE_SUFFIXES:
        if rest.endswith(suffix) and len(rest) > len(suffix):
            check = is_any
            if suffix == ".created":
                check = optional(is_bool_value)
            elif suffix == ".last_state.ready":
                check = is_bool_value
            elif suffix == ".bus":
                check = optional(is_uint8)
            return KeySpec(key, check, True, None, "Internal device state written by lxdlib")
    return None


_PREFIX_NAMES = ("environment.", "user.", "image.", "cloud-init.ssh-keys.", "linux.sysctl.",
                 "limits.kernel.", "volatile.")


def spec_for(key: str) -> KeySpec:
    """The spec for ``key``; InvalidConfig ``Unknown configuration key`` if there is none."""
    if not isinstance(key, str):
        raise InvalidConfig(repr(key), "Configuration keys must be strings")
    spec = _BY_KEY.get(key)
    if spec is not None:
        return spec
    if key in _PREFIX_NAMES:
        raise InvalidConfig(key, f"{key!r} requires a subkey")
    if key.startswith("volatile."):
        vspec = _volatile_spec(key)
        if vspec is not None:
            return vspec
        raise InvalidConfig(key, "Unknown configuration key")
    for p in _PREFIXES:
        if key.startswith(p.key) and len(key) > len(p.key):
            return p
    raise InvalidConfig(key, "Unknown configuration key")


def is_live(key: str) -> bool:
    """Whether changing ``key`` takes effect on a running instance without a restart."""
    return spec_for(key).live


# ------------------------------------------------------------------------------------------------
# Key and value text rules


_SYSCTL_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
_ENV_FORBIDDEN = Pattern(r"[=\s]")


def _check_key_text(key: str) -> None:
    if key == "":
        raise InvalidConfig(key, "Configuration keys cannot be empty")
    if has_control(key) or any(ch.isspace() for ch in key):
        raise InvalidConfig(
            key, "Configuration keys cannot contain whitespace or control characters"
        )


def _check_value_text(key: str, value: str, multiline: bool) -> None:
    if not is_utf8(value):
        raise InvalidConfig(key, "Values cannot hold bytes that are not UTF-8", value)
    if "\0" in value:
        raise InvalidConfig(key, "Values cannot contain NUL characters", value)
    if "\r" in value:
        raise InvalidConfig(key, "Values cannot contain carriage returns", value)
    if "\n" in value and not multiline:
        if key.startswith("environment."):
            raise InvalidConfig(key, "Environment variables cannot contain line breaks", value)
        raise InvalidConfig(key, "Values cannot contain line breaks", value)


def _check_suffix(key: str, value: str) -> None:
    """Rules for the part of a prefix key after the prefix."""
    for prefix in ("user.", "image.", "cloud-init.ssh-keys."):
        if key.startswith(prefix):
            if not is_printable_name(key[len(prefix):]):
                raise InvalidConfig(key, "Invalid key name", value)
            return
    if key.startswith("environment."):
        name = key[len("environment."):]
        if _ENV_FORBIDDEN.search(name):
            raise InvalidConfig(key, "Environment variable names cannot contain '=' or spaces",
                                value)
    elif key.startswith("linux.sysctl."):
        if not _SYSCTL_NAME.fullmatch(key[len("linux.sysctl."):]):
            raise InvalidConfig(key, "Invalid sysctl name", value)
    elif key.startswith("limits.kernel."):
        _limits.validate_prlimit(key, value or "unlimited")


def _coerce(key: str, value: Any) -> str:
    """A value as text. A Python caller writes ``limits.cpu=2`` or ``security.nesting=True``:
    an int or a bool has one text in LXD's config (``"2"``, ``"true"``), as YAML's scalars do
    (``config.text.scalar_text``), and is stored as that. Anything else — bytes, None, a float,
    a list — has none, and is refused rather than stored as Python's ``str()`` of it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise InvalidConfig(key, f"Values must be strings, got {type(value).__name__}", repr(value))


def validate_key(key: str, value: str, *, profile: bool = False) -> None:
    """Check one key and its value for an instance (or a profile)."""
    if not isinstance(key, str):
        raise InvalidConfig(repr(key), "Configuration keys must be strings")
    value = _coerce(key, value)
    _check_key_text(key)
    if profile and key.startswith("volatile."):
        raise InvalidConfig(key, "Volatile keys can only be set on instances", value)
    if profile and key.startswith("image."):
        raise InvalidConfig(key, "Image keys can only be set on instances", value)
    spec = spec_for(key)
    multiline = spec.multiline or key in MULTILINE_USER_KEYS
    _check_value_text(key, value, multiline)
    _check_suffix(key, value)
    try:
        spec.validate(value)
    except InvalidConfig as e:
        raise InvalidConfig(key, e.reason, value) from e
    except InvalidArgument as e:
        raise InvalidConfig(key, str(e), value) from e


def check_combinations(config: Mapping[str, str]) -> None:
    """The rules across keys, for one config and for an expanded one (an instance's own keys
    over its profiles'): a ``security.syscalls.deny`` beside a profile's ``raw.seccomp`` or
    ``security.syscalls.allow`` was saved and then silently not applied (the render takes one
    policy), as LXD refuses it (its ``ValidConfig`` of the expanded config)."""
    raw_seccomp = "raw.seccomp" in config
    allow = "security.syscalls.allow" in config
    deny = "security.syscalls.deny" in config
    deny_default = is_true(config.get("security.syscalls.deny_default"))
    deny_compat = is_true(config.get("security.syscalls.deny_compat"))
    if raw_seccomp and (allow or deny or deny_default or deny_compat):
        raise InvalidConfig(
            "raw.seccomp", "raw.seccomp is mutually exclusive with security.syscalls*"
        )
    if allow and (deny or deny_default or deny_compat):
        raise InvalidConfig(
            "security.syscalls.allow",
            "security.syscalls.allow is mutually exclusive with security.syscalls.deny*",
        )


def image_config(properties: Mapping[str, Any]) -> dict[str, str]:
    """The ``image.*`` keys an instance made from an image gets: one per property that makes a
    valid key with a valid value. An image's properties are its author's (a remote's, a
    tarball's ``metadata.yaml``, ``image set-property``): one no config may hold — a name
    with a space or a line break, a multi-line value — is left out. Kept, it made a config
    that every later edit of the instance refused (an edit checks the whole config), and an
    export that would not import."""
    out: dict[str, str] = {}
    for k, v in properties.items():
        key, value = f"image.{k}", str(v)
        try:
            validate_key(key, value)
        except InvalidConfig:
            continue
        out[key] = value
    return out


def unholdable_keys(config: Mapping[str, Any]) -> set[str]:
    """The keys of ``config`` that no instance config may hold (each refused by
    ``validate_key``): what an older lxdlib stored (an image property with a space or a
    line break in its name, copied into ``image.*``), kept in a record since."""
    bad: set[str] = set()
    for key, value in config.items():
        try:
            validate_key(key, value)
        except InvalidConfig:
            bad.add(key)
    return bad


def check_mapping(config: Any) -> None:
    """A config's shape, before anything reads its keys: a mapping whose keys are strings
    (``Instance.update`` checks it before it sets the volatile keys apart)."""
    if not isinstance(config, Mapping):
        raise InvalidConfig("config", "The configuration must be a mapping of strings",
                            repr(config))
    for key in config:
        if not isinstance(key, str):
            raise InvalidConfig(repr(key), "Configuration keys must be strings")


def validate_instance_config(
    config: Mapping[str, Any], *, profile: bool = False
) -> dict[str, str]:
    """Validate every key and value of an instance's (or, with ``profile=True``, a profile's)
    config; raise InvalidConfig on the first bad one (keys checked in sorted order).

    Returns a copy without the keys whose value is the empty string (in LXD an empty value
    means "unset"). Keys and values must be strings.
    """
    check_mapping(config)
    out: dict[str, str] = {}
    for key in sorted(config, key=str):
        value = _coerce(key, config[key])
        validate_key(key, value, profile=profile)
        if value != "":
            out[key] = value
    check_combinations(out)
    return out


# ------------------------------------------------------------------------------------------------
# Server (host) configuration

SERVER_DEFAULTS: dict[str, str] = {
    "images.auto_update_cached": "true",
    "images.auto_update_interval": "6",
    "images.compression_algorithm": "gzip",
    "images.remote_cache_expiry": "10",
}
COMPRESSION_ALGORITHMS = ("bzip2", "gzip", "lzma", "pigz", "pzstd", "squashfs", "xz", "zstd")
ARCHITECTURES = ("i686", "x86_64", "armv6l", "armv7l", "armv8l", "aarch64", "ppc", "ppc64",
                 "ppc64le", "s390x", "mips", "mips64", "riscv32", "riscv64", "loongarch64")
_COMPRESSION_ARG = Pattern(r"-(?:[0-9]+|T[0-9]+|-fast|-best)")


def is_compression_algorithm(value: str) -> None:
    """``none`` or one of LXD's compressors, with at most level/thread options (``zstd -19``,
    ``xz -T0``). Other arguments are refused: they allowed writing files (LXD's
    ``--compression="zstd -d -f ... -o ..."`` attack)."""
    if value == "none":
        return
    fields = value.split()
    if not fields:
        raise _fail("No compression algorithm specified")
    if fields[0] not in COMPRESSION_ALGORITHMS:
        raise _fail(f"Invalid compression algorithm {fields[0]!r}")
    for arg in fields[1:]:
        if not _COMPRESSION_ARG.fullmatch(arg):
            raise _fail(f"Compression argument {arg!r} is not allowed")


_SERVER_SPECS: dict[str, Validator] = {
    "images.auto_update_cached": is_bool_value,
    "images.auto_update_interval": is_int64,
    "images.compression_algorithm": is_compression_algorithm,
    "images.default_architecture": optional(is_one_of(*ARCHITECTURES)),
    "images.remote_cache_expiry": is_int64,
}


def validate_server_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Validate host-wide settings (``images.*``, ``user.*``); unknown keys are refused.

    Returns a normalised copy without empty values (empty means "back to the default").
    """
    if not isinstance(config, Mapping):
        raise InvalidConfig("config", "The configuration must be a mapping of strings")
    out: dict[str, str] = {}
    for key in sorted(config, key=str):
        if not isinstance(key, str):
            raise InvalidConfig(repr(key), "Configuration keys must be strings")
        value = _coerce(key, config[key])
        _check_key_text(key)
        _check_value_text(key, value, multiline=False)
        if key.startswith("user."):
            if not is_printable_name(key[len("user."):]):
                raise InvalidConfig(key, "Invalid key name", value)
        elif key in _SERVER_SPECS:
            if value != "":
                try:
                    _SERVER_SPECS[key](value)
                except InvalidArgument as e:
                    raise InvalidConfig(key, str(e), value) from e
        else:
            raise InvalidConfig(key, "Unknown configuration key")
        if value != "":
            out[key] = value
    return out


def server_setting(config: Mapping[str, str], key: str) -> str:
    """A server setting's value, or its default."""
    if key not in _SERVER_SPECS:
        raise InvalidConfig(key, "Unknown configuration key")
    return config.get(key) or SERVER_DEFAULTS.get(key, "")
