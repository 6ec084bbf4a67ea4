"""The root a benchmark runs in: its own directory under /var/tmp, a loop-backed btrfs pool, a
default profile with only a root disk, and the busybox image built offline (as the tests'
``host`` fixture makes one) — removed at the end, also on failure.

The benches import it as ``roots`` (each puts the repository on ``sys.path`` and runs as a
script, so ``bench/`` is on it too).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from tests.cleanup import teardown_root


@contextlib.contextmanager
def busybox_root(prefix: str, pool_size: str = "2GiB", *,
                 profile_config: dict[str, str] | None = None) -> Iterator[lxdlib.Host]:
    """A fresh root for one run (``prefix``: of its directory's name), its ``default``
    profile holding ``profile_config`` and a root disk on the pool; everything in it is
    deleted when the block ends (instances, mounts, the loop device, the directory)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    tmp.chmod(0o711)  # unprivileged containers below it must reach their rootfs
    root = tmp / "root"
    try:
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": pool_size})
        host.profiles.create("default", profile_config or {},
                             {"root": {"type": "disk", "path": "/", "pool": "default"}})
        host.images.build_busybox("busybox")
        yield host
    finally:
        with contextlib.suppress(Exception):  # a root that never came to be has nothing
            teardown_root(root)
        shutil.rmtree(tmp, ignore_errors=True)
