"""``lxdlib copy c1 h2:c1``, ``move c1 h2:``, ``copy h2:c1 c1-back``: copy and move between hosts.

``copy``/``move`` are not forwarded like the other commands (``forward.py``): they need both
sides at once. When a name carries an SSH remote's prefix, the instance is streamed between this
root and the remote's lxdlib (or between two remotes, relayed here) by ``lxdlib.migrate``, each
side running the other's hidden ``migrate-send``/``migrate-receive`` over ``ssh``. Options that
change the copy on the way (profiles, config, devices, ephemeral) are refused rather than
ignored: between hosts the instance arrives as it left.
"""

from __future__ import annotations

import argparse

from ..errors import TYPE_CHECKING, InvalidArgument

if TYPE_CHECKING:
    from ..host import Host
    from ..imagestore.remotes import Remote


def _split(host: Host, ref: str) -> tuple[Remote | None, str, bool]:
    """(the SSH remote a reference names or None, the name after the prefix, whether a known
    remote's prefix was there at all)."""
    name, sep, tail = ref.partition(":")
    if not sep:
        return None, ref, False
    from ..imagestore.remotes import LOCAL
    remotes = {r.name: r for r in host.images.remotes.list()}
    if name == LOCAL:
        return None, tail, True
    r = remotes.get(name)
    if r is None:
        return None, ref, False
    if not r.is_ssh:
        raise InvalidArgument(f"remote {name!r} is an image server: instances can only be "
                              "copied to and from lxdlib hosts (ssh:// remotes)")
    return r, tail, True


def between_hosts(host: Host, a: argparse.Namespace, *, move: bool) -> int | None:
    """Run a copy or move that names another host; None when both ends are this root."""
    src_remote, src, _ = _split(host, a.source)
    dst_remote, dst, _ = _split(host, a.target) if a.target else (None, "", False)
    if src_remote is None and dst_remote is None:
        return None
    if "/" in src:
        raise InvalidArgument("a snapshot cannot be copied to another host: copy the "
                              "instance (its snapshots go with it)")
    if not src:
        raise InvalidArgument("copy and move need an instance name")
    from ..config.names import validate_instance_name
    # the names travel in the ssh command line, which the far side's shell reads: only valid
    # instance names get that far
    validate_instance_name(src)
    if dst:
        validate_instance_name(dst)
    pool = getattr(a, "storage", None) or None
    if pool is not None and not pool.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgument(f"invalid storage pool name {pool!r}")
    for flag, what in (("ephemeral", "--ephemeral"), ("profile", "--profile"),
                       ("no_profiles", "--no-profiles"), ("config", "--config"),
                       ("device", "--device")):
        if getattr(a, flag, None):
            raise InvalidArgument(f"{what} is not supported between hosts: the instance "
                                  "arrives as it left")
    if src_remote is not None and dst_remote is not None and src_remote.name == dst_remote.name:
        raise InvalidArgument("both ends are on the same remote: run the copy there "
                              f"(lxdlib {'move' if move else 'copy'} {src_remote.name}:"
                              f"{src} {dst_remote.name}:{dst or src})")
    from ..migrate import copy_between
    from ..sshhost import ssh_command
    out = copy_between(host.ctx, ssh_command(src_remote) if src_remote else None,
                       ssh_command(dst_remote) if dst_remote else None, src, dst or src,
                       move=move, refresh=bool(getattr(a, "refresh", False)),
                       instance_only=bool(getattr(a, "instance_only", False)),
                       stateless=bool(getattr(a, "stateless", False)),
                       pool=pool,
                       allow_root_equivalent=bool(getattr(a, "allow_root_equivalent", False)))
    if getattr(a, "start", False) and not out.started:
        if dst_remote is None:
            host.instances[out.name].start()
        else:
            from ..sshhost import connect
            with connect(dst_remote) as far:
                far.instances[out.name].start()
    return 0
