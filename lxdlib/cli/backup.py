"""Backup and upkeep verbs: export, import, housekeeping, recover."""

from __future__ import annotations

import argparse

from ..errors import TYPE_CHECKING
from ..logs import get_logger

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host

log = get_logger(__name__)


def cmd_export(host: Host, a: argparse.Namespace) -> int:
    import os

    from ..backup import export_instance
    from ..progress import LineProgress, Sampled, growing_files
    where = a.file if a.file and os.path.isdir(a.file) else \
        (os.path.dirname(a.file) if a.file else "") or "."
    # the backup is written as ``.<name>.tmp<pid>`` and renamed: its growth is the progress
    with Sampled(LineProgress("Backing up instance", quiet=a.quiet),
                 lambda: (growing_files(where, ".", f".tmp{os.getpid()}"), 0)):
        out = export_instance(host.instances.get(a.instance), a.file,
                              instance_only=a.instance_only, optimized=a.optimized_storage,
                              compression_algorithm=a.compression)
    log.info("backup of %s written to %s", a.instance, out)
    if not a.quiet:
        print("Backup exported successfully!")
    return 0


def cmd_import(host: Host, a: argparse.Namespace) -> int:
    import os

    from ..progress import LineProgress, Sampled, read_position
    total = os.stat(a.file).st_size if os.path.isfile(a.file) else 0
    # the archive is read by tar and a decompressor: how far they are in it is the progress
    with Sampled(LineProgress("Importing instance", quiet=a.quiet),
                 lambda: (read_position(a.file), total)):
        inst = host.import_backup(a.file, a.name, pool=a.storage,
                                  allow_root_equivalent=a.allow_root_equivalent)
    log.info("instance %s imported from %s", inst.name, a.file)  # lxc import says nothing
    return 0


def _print_report(report: Any, quiet: bool) -> None:
    if quiet:
        return
    for what, items in (("Created", report.created), ("Expired", report.expired),
                        ("Recovered", report.recovered)):
        for item in items:
            print(f"{what}: {item}")
    for name, why in sorted(report.skipped.items()):
        print(f"Skipped: {name} ({why})")


def cmd_housekeeping(host: Host, a: argparse.Namespace) -> int:
    from ..housekeeping import run
    report = run(host, startup=a.startup)
    _print_report(report, a.quiet)
    return 1 if any(v != "busy" for v in report.skipped.values()) else 0


def _with_images(image_func: Any) -> Any:
    """One ``housekeeping`` for the whole root: the image store's (cache expiry, auto-update)
    and the snapshots' (schedules, expiry)."""
    def both(host: Host, a: argparse.Namespace) -> int:
        rc = int(image_func(host, a) or 0)
        return max(rc, cmd_housekeeping(host, a))
    return both


def cmd_recover(host: Host, a: argparse.Namespace) -> int:
    from ..housekeeping import recover
    report = recover(host)
    _print_report(report, a.quiet)
    if not a.quiet and not (report.recovered or report.skipped):
        print("Nothing to recover")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export an instance (with its snapshots) as a backup")
    p.add_argument("instance")
    p.add_argument("file", nargs="?")
    p.add_argument("--instance-only", action="store_true", help="without the snapshots")
    p.add_argument("--optimized-storage", action="store_true",
                   help="btrfs send streams instead of files (btrfs pools)")
    p.add_argument("--compression", default="gzip",
                   help="gzip (default), bzip2, xz, zstd, lzma, pigz, pzstd or none")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="create an instance from a backup made by export")
    p.add_argument("file")
    p.add_argument("name", nargs="?")
    p.add_argument("-s", "--storage", help="storage pool for the instance")
    p.add_argument("--allow-root-equivalent", action="store_true",
                   help="accept the backup's root-equivalent settings (raw.lxc, privileged, "
                   "host devices…); without it they are refused")
    p.set_defaults(func=cmd_import)

    existing = sub.choices.get("housekeeping")
    if existing is not None:  # the image store's housekeeping: one command does both
        existing.set_defaults(func=_with_images(existing.get_default("func")))
        p = existing
    else:
        p = sub.add_parser("housekeeping",
                           help="take due scheduled snapshots, remove expired ones (run it "
                                "from cron or a systemd timer every minute)")
        p.set_defaults(func=cmd_housekeeping)
    p.add_argument("--startup", action="store_true", help="the pass at host start (@startup)")

    p = sub.add_parser("recover", help="finish or undo operations interrupted by a crash")
    p.set_defaults(func=cmd_recover)
