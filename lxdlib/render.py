"""PURE: an expanded instance becomes an ordered list of liblxc keys.

liblxc's defaults are not LXD's (no seccomp unless asked, all capabilities kept), so lxdlib writes
the whole config itself: the security baseline LXD applies, the id map, limits, environment, network
and mounts. A container described entirely by this file keeps its behaviour when the Python process
that started it is gone, and ``lxc-*`` tools still work on it.

Every value is checked once more for newline, carriage return and NUL right before it is written:
one of those would let a value add arbitrary liblxc keys (``lxc.hook.*`` = code as host root).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .config import limits
from .config.idrange import IdRange
from .config.text import is_utf8
from .errors import InvalidConfig
from .values import Value, assign

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LXCFS_INCLUDE = Path("/usr/share/lxc/config/common.conf.d")

# LXD's default seccomp denylist (errno 38 = ENOSYS), plus finit_module as liblxc's own policy does.
SECCOMP_POLICY = """2
denylist
reject_force_umount  # comment this to allow umount -f;  not recommended
[all]
kexec_load errno 38
open_by_handle_at errno 38
init_module errno 38
finit_module errno 38
delete_module errno 38
"""

_ARCH_PERSONALITY = {"x86_64": "linux64", "aarch64": "linux64", "i686": "linux32",
                     "armv7l": "linux32", "ppc64le": "linux64", "s390x": "linux64",
                     "riscv64": "linux64"}

PRIVILEGED_DEVICES = (
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:229 rwm", "c 10:200 rwm",
)


class Nic(Value, frozen=True):
    """A nic device resolved against the host: which bridge, which MAC."""

    _fields = ("name", "link", "hwaddr", "mtu", "host_name")
    __slots__ = _fields

    name: str
    link: str
    hwaddr: str
    mtu: str | None
    host_name: str | None

    def __init__(self, name: str, link: str, hwaddr: str, mtu: str | None = None,
                 host_name: str | None = None) -> None:
        assign(self, "name", name)
        assign(self, "link", link)
        assign(self, "hwaddr", hwaddr)
        assign(self, "mtu", mtu)
        assign(self, "host_name", host_name)


class MountEntry(Value, frozen=True):
    """One ``lxc.mount.entry``: a host path onto a path inside the rootfs."""

    _fields = ("source", "target", "fstype", "options")
    __slots__ = _fields

    source: str
    target: str  # relative to the rootfs
    fstype: str
    options: str

    def __init__(self, source: str, target: str, fstype: str = "none",
                 options: str = "bind,create=dir") -> None:
        assign(self, "source", source)
        assign(self, "target", target)
        assign(self, "fstype", fstype)
        assign(self, "options", options)


class RenderInput(Value, frozen=True):
    """Everything one liblxc config is rendered from (``architecture``: the host's when not
    given)."""

    _fields = ("name", "rootfs", "config", "log_file", "console_log", "seccomp_file", "idmap",
               "idmapped_rootfs", "nics", "mounts", "hooks", "extra", "cgroup_version",
               "host_cpus", "mem_total", "chosen_cpus", "architecture", "lxcfs",
               "swap_accounting")
    __slots__ = _fields

    name: str
    rootfs: Path
    config: Mapping[str, str]
    log_file: Path
    console_log: Path
    seccomp_file: Path
    idmap: Sequence[IdRange]
    idmapped_rootfs: bool
    nics: Sequence[Nic]
    mounts: Sequence[MountEntry]
    hooks: Sequence[tuple[str, str]]
    extra: Sequence[tuple[str, str]]
    cgroup_version: int
    host_cpus: int
    mem_total: int
    chosen_cpus: Sequence[int] | None
    architecture: str
    lxcfs: bool
    swap_accounting: bool

    def __init__(self, name: str, rootfs: Path, config: Mapping[str, str], log_file: Path,
                 console_log: Path, seccomp_file: Path, idmap: Sequence[IdRange] = (),
                 idmapped_rootfs: bool = True, nics: Sequence[Nic] = (),
                 mounts: Sequence[MountEntry] = (), hooks: Sequence[tuple[str, str]] = (),
                 extra: Sequence[tuple[str, str]] = (), cgroup_version: int = 1,
                 host_cpus: int = 1, mem_total: int = 0,
                 chosen_cpus: Sequence[int] | None = None, architecture: str | None = None,
                 lxcfs: bool = False, swap_accounting: bool = True) -> None:
        assign(self, "name", name)
        assign(self, "rootfs", rootfs)
        assign(self, "config", config)
        assign(self, "log_file", log_file)
        assign(self, "console_log", console_log)
        assign(self, "seccomp_file", seccomp_file)
        assign(self, "idmap", idmap)
        assign(self, "idmapped_rootfs", idmapped_rootfs)
        assign(self, "nics", nics)
        assign(self, "mounts", mounts)
        assign(self, "hooks", hooks)
        assign(self, "extra", extra)
        assign(self, "cgroup_version", cgroup_version)
        assign(self, "host_cpus", host_cpus)
        assign(self, "mem_total", mem_total)
        assign(self, "chosen_cpus", chosen_cpus)
        assign(self, "architecture", os.uname().machine if architecture is None
               else architecture)
        assign(self, "lxcfs", lxcfs)
        assign(self, "swap_accounting", swap_accounting)


def _bool(config: Mapping[str, str], key: str) -> bool:
    return config.get(key, "").lower() in ("true", "1", "yes", "on")


def _fstab(path: str) -> str:
    """fstab-style escaping: mount entries are split on whitespace."""
    return (path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011"))


def render(inp: RenderInput) -> list[tuple[str, str]]:
    cfg = inp.config
    privileged = _bool(cfg, "security.privileged")
    out: list[tuple[str, str]] = []
    add = out.append

    add(("lxc.uts.name", inp.name))
    add(("lxc.arch", _ARCH_PERSONALITY.get(inp.architecture, "linux64")))
    add(("lxc.rootfs.path", f"dir:{inp.rootfs}"))
    if not privileged and inp.idmapped_rootfs:
        add(("lxc.rootfs.options", "idmap=container"))
    add(("lxc.log.file", str(inp.log_file)))
    add(("lxc.log.level", "WARN"))
    add(("lxc.console.logfile", str(inp.console_log)))
    add(("lxc.console.size", "auto"))
    add(("lxc.autodev", "1"))
    add(("lxc.pty.max", "1024"))
    add(("lxc.tty.max", "0"))

    if privileged:
        add(("lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed"))
        add(("lxc.cap.drop", "sys_time sys_module sys_rawio mac_admin mac_override"))
        prefix = "lxc.cgroup2" if inp.cgroup_version == 2 else "lxc.cgroup"
        add((f"{prefix}.devices.deny", "a"))
        for rule in PRIVILEGED_DEVICES:
            add((f"{prefix}.devices.allow", rule))
    else:
        cg = "cgroup:rw:force" if inp.cgroup_version == 2 else "cgroup:mixed"
        add(("lxc.mount.auto", f"proc:rw sys:rw {cg}"))
        for r in inp.idmap:
            add(("lxc.idmap", r.lxc_value()))

    if _bool(cfg, "security.nesting"):
        add(("lxc.mount.entry", "proc dev/.lxc/proc proc create=dir,optional 0 0"))
        add(("lxc.mount.entry", "sys dev/.lxc/sys sysfs create=dir,optional 0 0"))

    if seccomp_policy(cfg) is not None or _deny_default(cfg):
        add(("lxc.seccomp.profile", str(inp.seccomp_file)))

    if inp.lxcfs:
        add(("lxc.include", str(LXCFS_INCLUDE)))

    # environment for init (exec merges it again per call)
    add(("lxc.environment", f"PATH={DEFAULT_PATH}"))
    for key in sorted(cfg):
        if key.startswith("environment."):
            add(("lxc.environment", f"{key[len('environment.'):]}={cfg[key]}"))

    for key in sorted(cfg):
        if key.startswith("linux.sysctl."):
            add((f"lxc.sysctl.{key[len('linux.sysctl.'):]}", cfg[key]))
    for res, value in sorted(limits.prlimits(cfg).items()):
        add((f"lxc.prlimit.{res}", value))

    prefix = "lxc.cgroup2" if inp.cgroup_version == 2 else "lxc.cgroup"
    cgroup = limits.cgroup_settings(cfg, cgroup_version=inp.cgroup_version,
                                    host_cpus=inp.host_cpus, mem_total=inp.mem_total,
                                    chosen_cpus=list(inp.chosen_cpus) if inp.chosen_cpus else None,
                                    swap_accounting=inp.swap_accounting)
    for key, value in cgroup.items():
        add((f"{prefix}.{key}", value))

    if _bool(cfg, "boot.autostart"):
        # lxc-autostart starts low orders first; LXD starts high priorities first
        add(("lxc.start.auto", "1"))
        add(("lxc.start.delay", cfg.get("boot.autostart.delay") or "0"))
        add(("lxc.start.order", str(-int(cfg.get("boot.autostart.priority") or 0))))

    if not inp.nics:
        add(("lxc.net.0.type", "empty"))
    for i, nic in enumerate(inp.nics):
        add((f"lxc.net.{i}.type", "veth"))
        add((f"lxc.net.{i}.link", nic.link))
        add((f"lxc.net.{i}.name", nic.name))
        if nic.hwaddr:
            add((f"lxc.net.{i}.hwaddr", nic.hwaddr))
        add((f"lxc.net.{i}.flags", "up"))
        if nic.mtu:
            add((f"lxc.net.{i}.mtu", nic.mtu))
        if nic.host_name:
            add((f"lxc.net.{i}.veth.pair", nic.host_name))

    for m in inp.mounts:
        target = m.target.lstrip("/")
        opts = m.options
        if target.startswith(("sys/", "proc/")) and "optional" not in opts.split(","):
            # Kernel filesystems cannot create mount targets: masking a file the host's kernel
            # lacks (the docker profile's AppArmor parameter on a kernel without AppArmor)
            # degrades to nothing instead of failing the start.
            opts += ",optional"
        add(("lxc.mount.entry", f"{_fstab(m.source)} {_fstab(target)} {m.fstype} {opts} 0 0"))

    for hook, cmd in inp.hooks:
        add((f"lxc.hook.{hook}", cmd))
    out.extend(inp.extra)

    raw = cfg.get("raw.lxc", "")
    for line in raw.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        add((key.strip(), value.strip()))
    return out


def _deny_default(cfg: Mapping[str, str]) -> bool:
    return cfg.get("security.syscalls.deny_default", "true").lower() not in ("false", "0", "no",
                                                                             "off")


def _syscall_lines(value: str) -> list[str]:
    """``security.syscalls.*`` entries (newline- or comma-separated), one policy line each."""
    return [e.strip() for e in value.replace(",", "\n").split("\n") if e.strip()]


def seccomp_policy(cfg: Mapping[str, str]) -> str | None:
    """The instance's own seccomp policy (liblxc's format), or None when the root's shared
    default policy (``SECCOMP_POLICY``) or none at all applies.

    As LXD: ``raw.seccomp`` is the whole policy; ``security.syscalls.allow`` makes an
    allowlist; ``security.syscalls.deny`` entries are added to the denylist, after the default
    entries unless ``security.syscalls.deny_default`` is false.
    """
    raw = cfg.get("raw.seccomp", "")
    if raw:
        return raw if raw.endswith("\n") else raw + "\n"
    allow = _syscall_lines(cfg.get("security.syscalls.allow", ""))
    if allow:
        return "2\nallowlist\n[all]\n" + "".join(f"{line}\n" for line in allow)
    deny = _syscall_lines(cfg.get("security.syscalls.deny", ""))
    if not deny:
        return None
    head = SECCOMP_POLICY if _deny_default(cfg) else "2\ndenylist\n[all]\n"
    return head + "".join(f"{line}\n" for line in deny)


def to_text(lines: Sequence[tuple[str, str]]) -> str:
    """The config file; refuses any key or value that could smuggle in another line."""
    parts = []
    for key, value in lines:
        line = f"{key} = {value}"
        if "\n" in line or "\r" in line or "\0" in line:
            what = "key" if "\n" in key or "\r" in key or "\0" in key else "value"
            raise InvalidConfig(key, f"{what} contains a newline, carriage return or NUL", value)
        if not line.isascii() and not is_utf8(line):
            raise InvalidConfig(key, "holds bytes that are not UTF-8", value)
        parts.append(line + "\n")
    return "# Generated by lxdlib: changes are overwritten at the next start.\n" + "".join(parts)
