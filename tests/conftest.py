"""Shared fixtures: an isolated lxdlib root per test with real storage, torn down on failure too."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cleanup import teardown_root

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="session")
def busybox_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox image, built once per session (the build is deterministic)."""
    from lxdlib.imagestore.busybox import build_busybox_image
    out = tmp_path_factory.mktemp("image") / "busybox.tar.gz"
    return build_busybox_image(out)


@pytest.fixture
def root() -> Iterator[Path]:
    """A fresh root. Not under pytest's tmp_path: that is mode 0700, and an unprivileged
    container's root user must be able to walk down to its rootfs."""
    base = Path(tempfile.mkdtemp(prefix="lxdlib-test-", dir="/var/tmp"))
    base.chmod(0o711)
    r = base / "root"
    r.mkdir()
    try:
        yield r
    finally:
        teardown_root(r)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def host(root: Path, busybox_tarball: Path):  # type: ignore[no-untyped-def]
    """A Host on its own root: a 2 GiB loop-backed btrfs pool, a default profile with only a
    root disk (no network: tests that need one make their own bridge), the busybox image."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from lxdlib import Host
    h = Host(root)
    h.create_pool("default", "btrfs", {"size": "2GiB"})
    h.profiles.create("default", {}, {"root": {"type": "disk", "path": "/", "pool": "default"}})
    h.images.import_file(busybox_tarball, aliases=["busybox"])
    try:
        yield h
    finally:
        for inst in h.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        for name in h.pool_names():
            with contextlib.suppress(Exception):
                h.pool(name).unmount()


# -- slow, self-contained jobs that run beside the suite (tests/integration/background.py) ------

def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    from tests.integration import background
    background.plan(session.items)


def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests.integration import background
    background.tick()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.integration import background
    background.stop_all()
