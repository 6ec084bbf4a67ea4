"""The ``zfs`` driver, through the ``zfs``/``zpool`` commands (here served by the zfs-fuse daemon).

Layout under the pool's root dataset ``R`` (a zpool lxdlib made on ``<root>/disks/<name>.img``,
or an existing dataset named by ``source``), mounted at ``<root>/storage-pools/<name>/``; the
volume datasets inherit their mount points from it:

- ``R/images/<fp>`` with ``@readonly``: an image volume; instances are ``zfs clone``s of that
  snapshot. Deleting an image that still has clones only marks it (``lxdlib:deleted=yes``,
  unmounted, ``canmount=noauto``): it no longer counts as a volume and is destroyed with its
  last clone (or by ``cleanup_leftovers``); creating the same fingerprint again revives it. LXD
  renames such an image to ``R/deleted/…`` instead, but zfs-fuse keeps answering "dataset is
  busy" to renaming a dataset whose clones are mounted, so lxdlib never renames an origin.
- ``R/containers/<name>`` with ``@snapshot-<snap>``; ``R/custom/<name>``.

Copies (``copy_instance_volume``) are full ``zfs send | zfs receive`` copies, never clones, so no
instance ever depends on another one. zfs-fuse specifics: no idmapped mounts (FUSE), no ``.zfs``
directory (snapshot contents are not browsable at ``volume_path('containers-snapshots', …)``), a
dataset must be unmounted and not ``readonly`` to be renamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .. import pidfd
from ..config.units import parse_bool, parse_size
from ..errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidConfig,
    NotFound,
    StorageError,
    ToolMissing,
    WrongState,
)
from ..logs import get_logger
from ..patterns import Pattern
from ..state import Paths, lock
from .base import PoolDriver, PoolUsage, close_volume_dir
from .dir import (
    BASE_MODE,
    CUSTOM_SNAPSHOTS,
    LAYOUT_MODES,
    SNAPSHOTS,
    VOLUME_KINDS,
    check_keys,
    check_volume_name,
)
from .loop import (
    TMP,
    create_sparse_file,
    is_mounted,
    mounts,
    parse_temp_name,
    pid_alive,
    run,
    temp_name,
)

log = get_logger(__name__)

DEFAULT_SIZE = "5GiB"
MIN_SIZE = 64 * 1024 * 1024  # ZFS refuses smaller vdevs
SNAP_PREFIX = "snapshot-"
DELETED_PROP = "lxdlib:deleted"
DAEMON = "zfs-fuse"
_ZPOOL_NAME = Pattern(r"[A-Za-z][A-Za-z0-9_.:-]*")
_DATASET_NAME = Pattern(r"[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*")
_RESERVED_ZPOOLS = ("mirror", "raidz", "spare", "log", "cache")
#: zfs/zpool subcommands that change something (the rest only read): each one run is logged.
_CHANGES = frozenset({"create", "destroy", "snapshot", "clone", "rename", "set", "inherit",
                      "mount", "unmount", "rollback", "receive", "import", "export"})


def _logged(cmd: Sequence[str]) -> None:
    """Log a zfs/zpool command that has just changed something (reads are not logged)."""
    if len(cmd) > 1 and cmd[1] in _CHANGES:
        log.debug("ran %s", " ".join(cmd))

# -- the zfs-fuse daemon --------------------------------------------------------------------------


def _daemon_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="utf-8") as f:
                    if f.read().strip() == DAEMON:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _daemon_answers() -> bool:
    try:
        proc = subprocess.run(["zpool", "list", "-H"], capture_output=True, timeout=30,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolMissing("zpool is not installed (Debian package zfs-fuse)") from None
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def _wait_ready(timeout: float) -> bool:
    """Wait until the running zfs-fuse answers (True), or until none runs any more (False: one
    that was stopping, e.g. a service being shut down, must not leave us waiting for nothing)."""
    deadline = time.monotonic() + timeout
    while not _daemon_answers():
        if not _daemon_pids():
            return False
        if time.monotonic() > deadline:
            raise StorageError("the zfs-fuse daemon does not answer zpool commands")
        time.sleep(0.05)
    return True


def ensure_zfs_daemon(paths: Paths, timeout: float = 30.0) -> int | None:
    """Start zfs-fuse if no zfs-fuse process runs; return the pid started (None if one ran).

    Without the daemon every zfs/zpool command fails. It is started with its pid file under
    ``paths.run`` and without the kstat mount, and outlives this process like a system service.
    """
    if _daemon_pids() and _wait_ready(timeout):
        return None
    paths.run.mkdir(parents=True, exist_ok=True)
    with lock(paths, "daemon", DAEMON):
        if _daemon_pids() and _wait_ready(timeout):
            return None
        pidfile = paths.run / f"{DAEMON}.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()  # zfs-fuse refuses to start over a stale pid file
        # zfs-fuse takes its lock in /var/lock/zfs and exits when it cannot; /var/lock points
        # into /run, which only systemd-tmpfiles fills at boot (absent on minimal systems)
        os.makedirs(os.path.realpath("/var/lock"), mode=0o755, exist_ok=True)
        proc = run([DAEMON, "--no-kstat-mount", "--pidfile", str(pidfile)], check=False)
        deadline = time.monotonic() + timeout
        pid: int | None = None
        while pid is None and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int(pidfile.read_text().strip())
            if pid is None:
                time.sleep(0.02)
        if pid is None:
            if _daemon_pids() and _wait_ready(timeout):  # another root's lxdlib started one
                return None
            why = (proc.stderr or proc.stdout or "").strip() or (
                f"exit status {proc.returncode}; it reports to syslog only")
            raise StorageError(f"zfs-fuse did not start: {why}")
        if not _wait_ready(max(1.0, deadline - time.monotonic())):
            raise StorageError(f"zfs-fuse (pid {pid}) exited as it started; it reports to syslog")
        log.info("started the zfs-fuse daemon (pid %d, pid file %s)", pid, pidfile)
        return pid


def stop_zfs_daemon(pid: int | None, timeout: float = 60.0) -> None:
    """Stop the zfs-fuse started by :func:`ensure_zfs_daemon` (by its pid) and wait for it.

    The daemon is held by a pidfd before its name is checked, and signalled and waited for
    through it: once it has ended, its pid may be another process's, which must be neither
    waited for nor killed."""
    if pid is None:
        return
    with pidfd.held(pid) as fd:
        if fd is None:
            return
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                if f.read().strip() != DAEMON:
                    return  # that pid is no longer our daemon
        except FileNotFoundError:
            return
        pidfd.send(fd, signal.SIGTERM)
        if not pidfd.exited(fd, timeout):
            log.warning("zfs-fuse (pid %d) did not stop within %.0fs: killing it", pid, timeout)
            pidfd.send(fd, signal.SIGKILL)
            pidfd.exited(fd, 10)
    log.info("stopped the zfs-fuse daemon (pid %d)", pid)


def busy_retry(cmd: list[str], timeout: float = 10.0) -> None:
    """Run a zfs/zpool command that zfs-fuse may refuse for a moment after an unmount ("dataset
    is busy" while the kernel lets go of the FUSE mount): retry until it passes."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        proc = run(cmd, check=False)
        if proc.returncode == 0:
            _logged(cmd)
            return
        if "busy" not in proc.stderr or time.monotonic() > deadline:
            raise StorageError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


# -- the driver -----------------------------------------------------------------------------------


class ZfsPool(PoolDriver):
    """ZFS datasets under one root dataset, mounted below ``<root>/storage-pools/<name>/``."""

    driver = "zfs"
    supports_idmapped_mounts = False
    snapshot_needs_freeze = False
    restores_latest_snapshot_only = True
    KEYS = frozenset({"source", "size", "zfs.pool_name", "zfs.use_refquota",
                      "zfs.remove_snapshots"})
    #: read at each quota, usage and restore: a change applies from the next one (as in LXD,
    #: quotas already set stay as they are)
    RECORDED_KEYS = frozenset({"zfs.use_refquota", "zfs.remove_snapshots"})

    # -- config ---------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config: dict[str, str]) -> dict[str, str]:
        check_keys(cls.driver, config, cls.KEYS)
        out = dict(config)
        source = config.get("source", "")
        pool_name = config.get("zfs.pool_name", "")
        if source:
            if source.startswith("/"):
                raise InvalidConfig("source", "must be empty (a loop file) or the name of an "
                                    "existing zpool or dataset; devices are not supported",
                                    source)
            if not _DATASET_NAME.fullmatch(source):
                raise InvalidConfig("source", "is not a valid zpool or dataset name", source)
            if pool_name and pool_name != source:
                raise InvalidConfig("zfs.pool_name", "must equal source when source is set",
                                    pool_name)
        if pool_name and not source:
            cls._check_zpool_name("zfs.pool_name", pool_name)
        size = config.get("size", "")
        if size:
            if source:
                raise InvalidConfig("size", "applies only to a loop-file pool (empty source)",
                                    size)
            try:
                nbytes = parse_size(size)
            except InvalidArgument as e:
                raise InvalidConfig("size", str(e), size) from None
            if nbytes < MIN_SIZE:
                raise InvalidConfig("size", "a zfs pool needs at least 64MiB", size)
        elif not source:
            out["size"] = DEFAULT_SIZE
        for key in ("zfs.use_refquota", "zfs.remove_snapshots"):
            if key in config:
                try:
                    parse_bool(config[key])
                except InvalidArgument:
                    raise InvalidConfig(key, "must be a boolean (true/false)",
                                        config[key]) from None
        out["source"] = source
        return out

    @staticmethod
    def _check_zpool_name(key: str, name: str) -> None:
        if not _ZPOOL_NAME.fullmatch(name) or name.startswith(_RESERVED_ZPOOLS) or (
                len(name) > 1 and name[0] == "c" and name[1].isdigit()):
            raise InvalidConfig(key, "is not a valid zpool name (a letter, then letters, digits "
                                "and _ - . :; not mirror/raidz/spare/log/cache/c<digit>)", name)

    # -- where things are -----------------------------------------------------------------------
    @property
    def owns_zpool(self) -> bool:
        """True when lxdlib made the zpool (on its loop file) and so may export/destroy it."""
        return not self.config.get("source")

    @property
    def root(self) -> str:
        return (self.config.get("zfs.pool_name") or self.config.get("source")
                or self.name)

    @property
    def mountpoint(self) -> Path:
        return self.paths.pools / self.name

    @property
    def shown_source(self) -> str:
        return os.fspath(self.loop_file) if self.owns_zpool else self.config["source"]

    @property
    def loop_file(self) -> Path:
        return self.paths.disks / f"{self.name}.img"

    def _flag(self, key: str) -> bool:
        value = self.config.get(key, "")
        return bool(value) and parse_bool(value)

    def dataset(self, kind: str, name: str) -> str:
        """The dataset (or ``dataset@snapshot``) that holds a volume."""
        if kind in (SNAPSHOTS, CUSTOM_SNAPSHOTS):  # an instance's snapshot, a custom volume's
            parent, what = ("containers", "instance") if kind == SNAPSHOTS else ("custom",
                                                                                 "volume")
            vol, sep, snap = name.partition("/")
            if not sep:
                raise InvalidArgument(f"snapshot {name!r} must be given as '<{what}>/<snap>'")
            check_volume_name(parent, vol)
            check_volume_name(kind, snap)
            return f"{self.root}/{parent}/{vol}@{SNAP_PREFIX}{snap}"
        if kind not in VOLUME_KINDS:
            raise InvalidArgument(f"unknown volume kind {kind!r}")
        check_volume_name(kind, name)
        return f"{self.root}/{kind}/{name}"

    def volume_path(self, kind: str, name: str) -> Path:
        """Mount point of a volume. Snapshots are not mounted on zfs-fuse (no ``.zfs``): their
        path is where LXD would show them, and it stays empty."""
        self.dataset(kind, name)  # validates
        return self.mountpoint / kind / name

    # -- running zfs ----------------------------------------------------------------------------
    @staticmethod
    def _zfs(*args: str) -> str:
        out = run(["zfs", *args]).stdout
        _logged(["zfs", *args])
        return out

    @staticmethod
    def _zfs_busy_retry(*args: str) -> None:
        busy_retry(["zfs", *args])

    @staticmethod
    def _exists(ds: str) -> bool:
        return run(["zfs", "list", "-H", "-o", "name", ds], check=False).returncode == 0

    def _get(self, prop: str, ds: str) -> str:
        return self._zfs("get", "-H", "-p", "-o", "value", prop, ds).strip()

    def _rows(self, *props: str, kind: str = "filesystem") -> list[list[str]]:
        out = self._zfs("list", "-H", "-t", kind, "-o", ",".join(props), "-r", self.root)
        return [line.split("\t") for line in out.splitlines() if line]

    def _require(self, kind: str, name: str) -> str:
        ds = self.dataset(kind, name)
        if not self.volume_exists(kind, name):
            label = {"images": "image volume", "containers": "instance volume",
                     "custom": "custom volume", SNAPSHOTS: "snapshot",
                     CUSTOM_SNAPSHOTS: "custom volume snapshot"}[kind]
            raise NotFound(label, name, f"in storage pool {self.name!r}")
        return ds

    def _destroy(self, ds: str) -> None:
        if self._exists(ds):
            self._zfs_busy_retry("destroy", "-r", ds)

    def _discard(self, ds: str) -> None:
        try:
            self._destroy(ds)
        except Exception as e:
            log.warning("zfs pool %s: cannot destroy %s (left to the next clean-up): %s",
                        self.name, ds, e)

    def _rename(self, old: str, new: str, *, read_only: bool = False) -> None:
        """zfs-fuse renames only unmounted, writable datasets: unmount, rename, (make
        read-only: it takes effect at mount time only), mount."""
        if self._get("mounted", old) == "yes":
            self._zfs_busy_retry("unmount", old)
        try:
            self._zfs_busy_retry("rename", old, new)
        except StorageError:
            if not (self._exists(new) and not self._exists(old)):  # else it did happen
                try:
                    self._mount_ds(old)
                except StorageError as e:
                    log.warning("zfs pool %s: cannot mount %s again after a failed rename: %s",
                                self.name, old, e)
                if self._exists(new):
                    raise AlreadyExists("dataset", new) from None
                raise
        if read_only:
            self._zfs("set", "readonly=on", new)
        self._mount_ds(new)

    def _read_only(self, ds: str) -> bool:
        """zfs-fuse mounts a read-only dataset "rw" and then shows readonly as a "temporary"
        off while it still refuses writes: that source means read-only too."""
        value, source = self._zfs("get", "-H", "-o", "value,source", "readonly",
                                  ds).split()
        return value == "on" or source == "temporary"

    def _mount_ds(self, ds: str) -> None:
        if self._get("mountpoint", ds) not in ("none", "legacy") and \
                self._get("mounted", ds) != "yes":
            self._zfs("mount", ds)

    def list_volumes(self, kind: str) -> list[str]:
        if kind not in VOLUME_KINDS:
            raise InvalidArgument(f"unknown volume kind {kind!r}")
        out = run(["zfs", "list", "-H", "-o", "name", "-d", "1", f"{self.root}/{kind}"],
                  check=False).stdout
        prefix = f"{self.root}/{kind}/"
        names = [line[len(prefix):] for line in out.splitlines() if line.startswith(prefix)]
        names = [n for n in names if not n.startswith(".")]
        if kind == "images" and names:
            gone = {row[0] for row in self._rows("name", DELETED_PROP) if row[1] == "yes"}
            names = [n for n in names if f"{prefix}{n}" not in gone]
        return sorted(names)

    def volume_exists(self, kind: str, name: str) -> bool:
        ds = self.dataset(kind, name)
        return self._exists(ds) and not (kind == "images" and self._deleted(ds))

    # -- pool lifecycle -------------------------------------------------------------------------
    def create(self) -> None:
        ensure_zfs_daemon(self.paths)
        with lock(self.paths, "storage-pool-mount", self.name):
            self.config["zfs.pool_name"] = self.root
            # Refusals first, while nothing has been touched.
            if self.owns_zpool:
                self._check_zpool_name("zfs.pool_name", self.root)
                self._check_zpool_free()
            else:
                self._check_dataset()
            try:
                if self.owns_zpool:
                    self._create_zpool()
                else:
                    self._adopt_dataset()
                for kind in VOLUME_KINDS:
                    self._zfs("create", f"{self.root}/{kind}")
                    self._mount_ds(f"{self.root}/{kind}")
                self._secure_layout()
            except BaseException:
                try:
                    self._undo_create()
                except Exception:
                    log.warning("zfs pool %s: undoing its creation failed", self.name,
                                exc_info=True)
                raise

    def _secure_layout(self) -> None:
        """A new dataset's top directory is 0755: give the pool's and the layout datasets'
        the layout modes (``dir.LAYOUT_MODES``), also on pools an older lxdlib made."""
        for d, mode in [(self.mountpoint, BASE_MODE),
                        *((self.mountpoint / kind, LAYOUT_MODES[kind]) for kind in VOLUME_KINDS)]:
            try:
                if os.stat(d).st_mode & 0o7777 != mode:
                    os.chmod(d, mode)
                    log.debug("zfs pool %s: mode of %s set to %o", self.name, d, mode)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StorageError(f"cannot set the mode of {d}: {e.strerror or e}") from e

    def _zpool_vdevs(self, zpool: str) -> list[str]:
        out = run(["zpool", "status", zpool], check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip().startswith("/")]

    def _check_zpool_free(self) -> None:
        """A zpool of that name is refused unless it is on this pool's own loop file (then it
        is debris of a create that died before writing the record, and is replaced)."""
        zpool = self.root
        if run(["zpool", "list", "-H", zpool], check=False).returncode == 0 and \
                str(self.loop_file) not in self._zpool_vdevs(zpool):
            raise InvalidConfig("zfs.pool_name", "a zpool of that name already exists", zpool)

    def _create_zpool(self) -> None:
        zpool = self.root
        if run(["zpool", "list", "-H", zpool], check=False).returncode == 0:
            busy_retry(["zpool", "destroy", "-f", zpool])  # our debris (_check_zpool_free)
        with contextlib.suppress(FileNotFoundError):
            self.loop_file.unlink()
        self.paths.disks.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_sparse_file(self.loop_file, parse_size(self.config["size"]))
        self.mountpoint.mkdir(mode=0o711, parents=True, exist_ok=True)
        cmd = ["zpool", "create", "-o", "cachefile=none", "-m", str(self.mountpoint),
               zpool, str(self.loop_file)]
        run(cmd)
        _logged(cmd)

    def _check_dataset(self) -> None:
        ds = self.root
        if not self._exists(ds):
            raise InvalidConfig("source", "no such zpool or dataset", ds)
        children = run(["zfs", "list", "-H", "-o", "name", "-r", ds]).stdout.split()
        if children != [ds]:
            raise InvalidConfig("source", "dataset is not empty (it has child datasets)", ds)

    def _adopt_dataset(self) -> None:
        ds = self.root
        self.mountpoint.mkdir(mode=0o711, parents=True, exist_ok=True)
        self._zfs("set", f"mountpoint={self.mountpoint}", ds)
        self._mount_ds(ds)

    def _undo_create(self) -> None:
        if self.owns_zpool:
            if run(["zpool", "list", "-H", self.root], check=False).returncode == 0:
                busy_retry(["zpool", "destroy", "-f", self.root])
            with contextlib.suppress(FileNotFoundError):
                self.loop_file.unlink()
                log.debug("zfs pool %s: removed loop file %s", self.name, self.loop_file)
        else:
            for kind in VOLUME_KINDS:
                self._destroy(f"{self.root}/{kind}")
            if self._exists(self.root):
                try:
                    self._zfs_busy_retry("unmount", self.root)
                except StorageError as e:
                    log.warning("zfs pool %s: cannot unmount dataset %s: %s", self.name,
                                self.root, e)
                self._zfs("inherit", "mountpoint", self.root)
        self._remove_mountpoint()

    def _remove_mountpoint(self) -> None:
        """Remove the (now empty) mount point tree unless something is still mounted in it."""
        top = str(self.mountpoint)
        if any(mp == top or mp.startswith(top + "/") for mp, _, _ in mounts()):
            log.warning("zfs pool %s: mount point %s kept: something is still mounted in it",
                        self.name, top)
            return
        shutil.rmtree(self.mountpoint, ignore_errors=True)
        if os.path.lexists(self.mountpoint):
            log.warning("zfs pool %s: cannot remove mount point %s", self.name, top)

    def delete(self) -> None:
        with lock(self.paths, "storage-pool-mount", self.name):
            ensure_zfs_daemon(self.paths)
            self._undo_create()

    def mount(self) -> None:
        """Import the zpool if needed (after a reboot or a daemon restart) and mount every
        dataset; cheap when the pool's root is mounted already."""
        if is_mounted(self.mountpoint):
            return
        with lock(self.paths, "storage-pool-mount", self.name):
            if is_mounted(self.mountpoint):
                return
            ensure_zfs_daemon(self.paths)
            if not self._exists(self.root):
                zpool = self.root.split("/")[0]
                cmd = ["zpool", "import"]
                if self.owns_zpool:
                    if not self.loop_file.exists():
                        raise StorageError(f"storage pool {self.name!r}: loop file "
                                           f"{self.loop_file} is missing")
                    # Not in the host's zpool cache: a test root's pool must not come back
                    # by itself when the daemon restarts.
                    cmd += ["-o", "cachefile=none", "-d", str(self.paths.disks)]
                run([*cmd, zpool])
                _logged([*cmd, zpool])
            self._mount_all()

    def _mount_all(self) -> None:
        for name, mountpoint, mounted, canmount in self._rows("name", "mountpoint", "mounted",
                                                               "canmount"):
            if mounted != "yes" and canmount == "on" and mountpoint not in ("none", "legacy"):
                self._zfs("mount", name)

    def unmount(self) -> None:
        with lock(self.paths, "storage-pool-mount", self.name):
            if not _daemon_pids() or not self._exists(self.root):
                return
            if self.owns_zpool:
                busy_retry(["zpool", "export", self.root.split("/")[0]])
                return
            rows = self._rows("name", "mounted")
            for name, mounted in sorted(rows, key=lambda r: -r[0].count("/")):
                if mounted == "yes":
                    self._zfs_busy_retry("unmount", name)

    def usage(self) -> PoolUsage:
        used, avail = self._zfs("get", "-H", "-p", "-o", "value", "used,available",
                                self.root).split()
        return PoolUsage(used=int(used), total=int(used) + int(avail))

    def cleanup_leftovers(self) -> None:
        """Destroy temporary datasets and snapshots of dead processes, finish image volumes
        whose creator died between rename and read-only, drop deleted images without clones, and
        mount whatever is not."""
        rows = self._rows("name", "origin", DELETED_PROP)
        origins = {origin.split("@")[0] for _, origin, _ in rows if origin != "-"}
        for name, _, deleted in rows:
            parts = name[len(self.root) + 1:].split("/")
            if len(parts) != 2:
                continue
            kind, leaf = parts
            parsed = parse_temp_name(leaf)
            if kind in VOLUME_KINDS and parsed is not None and not pid_alive(parsed[1]):
                self._discard(name)
            elif kind == "images" and deleted == "yes":
                if name not in origins:
                    self._discard(name)
            elif kind == "images" and parsed is None and not self._read_only(name):
                # Its creator died between the rename and making it read-only.
                self._zfs("set", "readonly=on", name)
                if self._get("mounted", name) == "yes":
                    self._zfs_busy_retry("unmount", name)  # remounted read-only below
        for (snap,) in self._rows("name", kind="snapshot"):
            parsed = parse_temp_name("." + snap.split("@", 1)[1])
            if parsed is not None and not pid_alive(parsed[1]):
                try:
                    self._zfs_busy_retry("destroy", snap)
                except StorageError as e:
                    log.warning("zfs pool %s: cannot destroy leftover snapshot %s: %s",
                                self.name, snap, e)
        self._mount_all()
        self._secure_layout()

    # -- images ---------------------------------------------------------------------------------
    def create_image_volume(self, fingerprint: str, fill: Callable[[Path], None]) -> Path:
        final = self.dataset("images", fingerprint)
        path = self.volume_path("images", fingerprint)
        if self._exists(final):
            self._revive(final)
            return path
        leaf = temp_name(TMP, fingerprint)
        tmp = f"{self.root}/images/{leaf}"
        self._zfs("create", tmp)
        try:
            self._mount_ds(tmp)
            fill(self.mountpoint / "images" / leaf)
            close_volume_dir(self.mountpoint / "images" / leaf, 0)  # whatever the unpack did
            self._zfs("snapshot", f"{tmp}@readonly")
            try:
                self._rename(tmp, final, read_only=True)
            except AlreadyExists:
                self._discard(tmp)  # another process won the race: keep its volume
                self._revive(final)
                return path
        except BaseException:
            self._discard(tmp)
            raise
        return path

    def _clones_of(self, ds: str) -> list[str]:
        return [name for name, origin in self._rows("name", "origin")
                if origin.split("@")[0] == ds]

    def _deleted(self, ds: str) -> bool:
        return self._get(DELETED_PROP, ds) == "yes"

    def _revive(self, ds: str) -> None:
        """Take back an image volume marked deleted (same fingerprint, same content)."""
        if self._deleted(ds):
            self._zfs("inherit", DELETED_PROP, ds)
            self._zfs("set", "canmount=on", ds)
            self._mount_ds(ds)

    def delete_image_volume(self, fingerprint: str) -> None:
        """Destroy ``images/<fp>`` (idempotent); while instances are clones of it, only mark it
        deleted: the last clone's deletion destroys it."""
        ds = self.dataset("images", fingerprint)
        if not self._exists(ds):
            return
        if not self._clones_of(ds):
            self._destroy(ds)
            return
        self._zfs("set", f"{DELETED_PROP}=yes", ds)
        self._zfs("set", "canmount=noauto", ds)
        if self._get("mounted", ds) == "yes":
            try:
                self._zfs_busy_retry("unmount", ds)
            except StorageError as e:  # still mounted is harmless
                log.debug("zfs pool %s: deleted image %s stays mounted: %s", self.name, ds, e)

    # -- instances ------------------------------------------------------------------------------
    def create_instance_volume(self, name: str, image: str | None = None) -> Path:
        """``zfs clone`` of the image's ``@readonly`` (or an empty dataset): one atomic
        command, so no temporary name is needed."""
        final = self.dataset("containers", name)
        if self._exists(final):
            raise AlreadyExists("instance volume", name)
        if image is not None:
            src = self._require("images", image)
            cmd = ["zfs", "clone", f"{src}@readonly", final]
        else:
            cmd = ["zfs", "create", final]
        proc = run(cmd, check=False)
        if proc.returncode != 0:
            if "exists" in proc.stderr:
                raise AlreadyExists("instance volume", name)
            raise StorageError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        _logged(cmd)
        self._mount_ds(final)
        path = self.volume_path("containers", name)
        close_volume_dir(path, 0)  # an image volume of an older lxdlib may be open
        return path

    def delete_instance_volume(self, name: str) -> None:
        ds = self.dataset("containers", name)
        if not self._exists(ds):
            return
        origin = self._get("origin", ds).split("@")[0]
        self._destroy_past_dead_clones(ds, "-r")
        if origin != "-" and self._deleted(origin) and not self._clones_of(origin):
            self._discard(origin)

    def rename_instance_volume(self, old: str, new: str) -> None:
        src = self._require("containers", old)
        dst = self.dataset("containers", new)
        if self._exists(dst):
            raise AlreadyExists("instance volume", new)
        try:
            self._rename(src, dst)
        except AlreadyExists:
            raise AlreadyExists("instance volume", new) from None

    def copy_instance_volume(self, src: str, dst: str, snapshot: str | None = None) -> Path:
        """A full ``send | receive`` copy (not a clone), so neither side depends on the other."""
        self._send_copy("containers", src, dst, snapshot)
        path = self.volume_path("containers", dst)
        close_volume_dir(path, os.lstat(path).st_uid)  # the copy's owner is set at its commit
        return path

    def _send_copy(self, kind: str, src: str, dst: str, snapshot: str | None = None,
                   chain: Sequence[str] = ()) -> None:
        """``<kind>/<dst>`` received from ``src`` (or its snapshot) under a temporary name,
        renamed into place whole; ``chain``: snapshots of ``src`` (datasets, oldest first)
        that the copy keeps, sent first, each as an increment on the one before."""
        label = "instance volume" if kind == "containers" else "custom volume"
        source = self._require(kind, src)
        final = self.dataset(kind, dst)
        if self._exists(final):
            raise AlreadyExists(label, dst)
        made_snap = None
        if snapshot is None:
            made_snap = f"{source}@{temp_name(TMP, 'copy')[1:]}"
            self._zfs("snapshot", made_snap)
            snap = made_snap
        else:
            snap = self._require(SNAPSHOTS, f"{src}/{snapshot}")
        tmp = f"{self.root}/{kind}/{temp_name(TMP, dst)}"
        try:
            previous = None
            for kept in chain:
                self._send_receive(kept, tmp, previous)
                previous = kept
            self._send_receive(snap, tmp, previous)
            self._zfs_busy_retry("destroy", f"{tmp}@{snap.split('@', 1)[1]}")
            try:
                self._rename(tmp, final)
            except AlreadyExists:
                raise AlreadyExists(label, dst) from None
        except BaseException:
            self._discard(tmp)
            raise
        finally:
            if made_snap is not None:
                try:
                    self._zfs_busy_retry("destroy", made_snap)
                except StorageError as e:
                    log.warning("zfs pool %s: cannot destroy the temporary snapshot %s (left "
                                "to the next clean-up): %s", self.name, made_snap, e)

    @staticmethod
    def _send_receive(snap: str, target: str, previous: str | None = None) -> None:
        """``zfs send`` of ``snap`` (an increment on ``previous``) into ``target``."""
        send_argv = ["zfs", "send", *(["-i", previous] if previous else []), snap]
        with subprocess.Popen(send_argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as send:
            recv = subprocess.run(["zfs", "receive", "-u", target], stdin=send.stdout,
                                  capture_output=True, check=False)
            assert send.stdout is not None
            send.stdout.close()
            send_err = send.stderr.read() if send.stderr else b""
            send.wait()
        if send.returncode != 0 or recv.returncode != 0:
            err = (send_err + recv.stderr).decode(errors="replace").strip()
            raise StorageError(f"zfs send {snap} | zfs receive {target} failed: {err}")
        log.debug("ran %s | zfs receive -u %s", " ".join(send_argv), target)

    def set_quota(self, kind: str, name: str, size: int | None) -> None:
        """``quota`` (counts the volume's snapshots) or ``refquota`` with zfs.use_refquota."""
        if kind == SNAPSHOTS:
            raise InvalidArgument("snapshots are read-only: they take no quota")
        if size is not None and size <= 0:
            raise InvalidArgument(f"quota must be a positive number of bytes, not {size}")
        ds = self._require(kind, name)
        self._set_quota(ds, size)

    def _set_quota(self, ds: str, size: int | None) -> None:
        used, unused = ("refquota", "quota") if self._flag("zfs.use_refquota") else (
            "quota", "refquota")
        self._zfs("set", f"{unused}=none", ds)
        self._zfs("set", f"{used}={size if size is not None else 'none'}", ds)

    def volume_usage(self, kind: str, name: str) -> int | None:
        prop = "referenced" if self._flag("zfs.use_refquota") or kind == SNAPSHOTS else "used"
        return int(self._get(prop, self._require(kind, name)))

    def volumes_usage(self, kind: str, names: Iterable[str]) -> dict[str, int | None]:
        """One ``zfs get`` of the kind's datasets answers for all (``volume_usage`` runs two
        commands per volume: a listing of hundreds would run hundreds)."""
        if kind in (SNAPSHOTS, "images"):  # an image may be marked deleted: asked one by one
            return super().volumes_usage(kind, names)
        wanted = {self.dataset(kind, name): name for name in names}
        if not wanted:
            return {}
        prop = "referenced" if self._flag("zfs.use_refquota") else "used"
        # `zfs get`, not `zfs list`: zfs-fuse's list has no -p (exact bytes); snapshots' rows
        # (name@snap) match no volume
        proc = run(["zfs", "get", "-H", "-p", "-r", "-o", "name,value", prop,
                    f"{self.root}/{kind}"], check=False)
        if proc.returncode != 0:  # no dataset of that kind yet: no volume either
            return {}
        out: dict[str, int | None] = {}
        for line in proc.stdout.splitlines():
            ds, _, value = line.partition("\t")
            name = wanted.get(ds)
            if name is not None:
                out[name] = int(value) if value.isdigit() else None
        return out

    # -- snapshots ------------------------------------------------------------------------------
    def create_snapshot(self, name: str, snap: str) -> Path:
        self._require("containers", name)
        return self._zfs_snapshot(SNAPSHOTS, name, snap, "snapshot")

    def _zfs_snapshot(self, kind: str, name: str, snap: str, label: str) -> Path:
        """``zfs snapshot`` of volume ``name`` as ``snap`` (``kind``: an instance's snapshots
        or a custom volume's): atomic, refused with ``AlreadyExists`` when taken."""
        ds = self.dataset(kind, f"{name}/{snap}")
        proc = run(["zfs", "snapshot", ds], check=False)
        if proc.returncode != 0:
            if "exists" in proc.stderr:
                raise AlreadyExists(label, f"{name}/{snap}")
            raise StorageError(f"zfs snapshot {ds} failed: {proc.stderr.strip()}")
        _logged(["zfs", "snapshot", ds])
        return self.volume_path(kind, f"{name}/{snap}")

    def delete_snapshot(self, name: str, snap: str) -> None:
        self._destroy_past_dead_clones(self._require(SNAPSHOTS, f"{name}/{snap}"))

    def _destroy_past_dead_clones(self, ds: str, *flags: str) -> None:
        """``zfs destroy`` of ``ds`` (an instance volume or its snapshot). A read of a snapshot
        (publish, export) clones it under a temporary name: one a kill -9 left keeps the
        snapshot from being destroyed until a clean-up of the pool, which runs once per
        process; in a process that opened the pool before that kill it is removed here."""
        try:
            self._zfs_busy_retry("destroy", *flags, ds)
        except StorageError:
            # clones of ds (a snapshot), or of any snapshot of ds (a volume)
            dead = [name for name, origin in self._rows("name", "origin")
                    if (origin if "@" in ds else origin.split("@")[0]) == ds
                    and (parsed := parse_temp_name(name.rsplit("/", 1)[-1])) is not None
                    and not pid_alive(parsed[1])]
            if not dead:
                raise
            for name in dead:
                self._destroy(name)
            self._zfs_busy_retry("destroy", *flags, ds)

    def rename_snapshot(self, name: str, old: str, new: str) -> None:
        src = self._require(SNAPSHOTS, f"{name}/{old}")
        dst = self.dataset(SNAPSHOTS, f"{name}/{new}")
        if self._exists(dst):
            raise AlreadyExists("snapshot", f"{name}/{new}")
        self._zfs("rename", src, dst)

    def _snapshot_names(self, ds: str) -> list[str]:
        out = self._zfs("list", "-H", "-t", "snapshot", "-o", "name", "-s", "createtxg",
                        "-d", "1", ds)
        return [line.split("@", 1)[1] for line in out.splitlines() if "@" in line]

    def restore_snapshot(self, name: str, snap: str) -> None:
        """``zfs rollback``: atomic, but only to the latest snapshot unless
        ``zfs.remove_snapshots=true``, which destroys the later ones (as in LXD)."""
        ds = self._require("containers", name)
        target = self._require(SNAPSHOTS, f"{name}/{snap}")
        later = self._snapshot_names(ds)
        later = later[later.index(target.split("@", 1)[1]) + 1:]
        if later and not self._flag("zfs.remove_snapshots"):
            shown = ", ".join(s.removeprefix(SNAP_PREFIX) for s in later)
            raise WrongState(
                f"snapshot {name}/{snap} cannot be restored: later snapshots exist ({shown}); "
                "ZFS can only roll back to the latest one (set zfs.remove_snapshots=true on the "
                "pool to destroy the later snapshots)")
        path = self.volume_path("containers", name)
        owner = os.lstat(path).st_uid  # the instance root's host uid, which the snapshot
        self._zfs_busy_retry("rollback", *(["-r"] if later else []), target)
        close_volume_dir(path, owner)  # may not have had (an id map changed since, or older)

    def list_snapshots(self, name: str) -> list[str]:
        """Snapshot names, oldest first."""
        ds = self._require("containers", name)
        return [s[len(SNAP_PREFIX):] for s in self._snapshot_names(ds)
                if s.startswith(SNAP_PREFIX)]

    # -- custom volumes -------------------------------------------------------------------------
    def create_custom_volume(self, name: str, size: int | None = None) -> Path:
        if size is not None and size <= 0:
            raise InvalidArgument(f"size must be a positive number of bytes, not {size}")
        ds = self.dataset("custom", name)
        cmd = ["zfs", "create"]
        if size is not None:
            prop = "refquota" if self._flag("zfs.use_refquota") else "quota"
            cmd += ["-o", f"{prop}={size}"]
        proc = run([*cmd, ds], check=False)
        if proc.returncode != 0:
            if "exists" in proc.stderr:
                raise AlreadyExists("custom volume", name)
            raise StorageError(f"zfs create {ds} failed: {proc.stderr.strip()}")
        _logged([*cmd, ds])

        self._mount_ds(ds)
        return self.volume_path("custom", name)

    def delete_custom_volume(self, name: str) -> None:
        self._zfs_busy_retry("destroy", "-r", self._require("custom", name))

    def rename_custom_volume(self, old: str, new: str) -> None:
        src = self._require("custom", old)
        dst = self.dataset("custom", new)
        if self._exists(dst):
            raise AlreadyExists("custom volume", new)
        try:
            self._rename(src, dst)
        except AlreadyExists:
            raise AlreadyExists("custom volume", new) from None

    def copy_custom_volume(self, src: str, dst: str, snapshots: Sequence[str] = ()) -> Path:
        """A full ``send | receive`` copy, as an instance's: the copy outlives its source. The
        ``snapshots`` (oldest first) go along, each an incremental stream on the last."""
        self._send_copy("custom", src, dst, chain=[
            self._require(CUSTOM_SNAPSHOTS, f"{src}/{s}") for s in snapshots])
        return self.volume_path("custom", dst)

    # -- custom volume snapshots ----------------------------------------------------------------
    def create_custom_snapshot(self, name: str, snap: str) -> Path:
        """``zfs snapshot <volume>@snapshot-<snap>``: atomic."""
        self._require("custom", name)
        return self._zfs_snapshot(CUSTOM_SNAPSHOTS, name, snap, "custom volume snapshot")

    def delete_custom_snapshot(self, name: str, snap: str) -> None:
        """Destroy the snapshot (idempotent: a clean-up may find it gone)."""
        ds = self.dataset(CUSTOM_SNAPSHOTS, f"{name}/{snap}")
        if self._exists(ds):
            self._zfs_busy_retry("destroy", ds)

    def rename_custom_snapshot(self, name: str, old: str, new: str) -> None:
        """``zfs rename <volume>@snapshot-<old> <volume>@snapshot-<new>``: atomic, and the
        snapshot keeps its ``createtxg`` (its place in the order)."""
        src = self._require(CUSTOM_SNAPSHOTS, f"{name}/{old}")
        dst = self.dataset(CUSTOM_SNAPSHOTS, f"{name}/{new}")
        if self._exists(dst):
            raise AlreadyExists("custom volume snapshot", f"{name}/{new}")
        self._zfs("rename", src, dst)

    def list_custom_snapshots(self, name: str) -> list[str]:
        """Snapshot names, oldest first (none for a missing volume)."""
        try:
            snaps = self._snapshot_names(self.dataset("custom", name))
        except StorageError:  # no such dataset
            return []
        return [s.removeprefix(SNAP_PREFIX) for s in snaps if s.startswith(SNAP_PREFIX)]

    def all_custom_snapshots(self) -> dict[str, list[str]]:
        """The custom volumes that have snapshots, with them (one ``zfs list``)."""
        proc = run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-s", "createtxg",
                    "-r", f"{self.root}/custom"], check=False)
        prefix = f"{self.root}/custom/"
        out: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            vol, sep, snap = line.removeprefix(prefix).partition(f"@{SNAP_PREFIX}")
            if line.startswith(prefix) and sep and "/" not in vol:
                out.setdefault(vol, []).append(snap)
        return out

    def restore_custom_snapshot(self, name: str, snap: str, size: int | None = None) -> None:
        """``zfs rollback`` (atomic; the dataset keeps its quota). Only the latest snapshot:
        the caller deletes the later ones first where the pool allows it."""
        ds = self._require("custom", name)
        target = self._require(CUSTOM_SNAPSHOTS, f"{name}/{snap}")
        later = [s for s in self._snapshot_names(ds) if s.startswith(SNAP_PREFIX)]
        later = later[later.index(target.split("@", 1)[1]) + 1:]
        if later:
            shown = ", ".join(s.removeprefix(SNAP_PREFIX) for s in later)
            raise WrongState(f"snapshot {name}/{snap} cannot be restored: later snapshots "
                             f"exist ({shown}); ZFS can only roll back to the latest one")
        self._zfs_busy_retry("rollback", target)
