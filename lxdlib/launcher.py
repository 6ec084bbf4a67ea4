"""Launching many instances at once, over worker processes (``Host.launch_many``).

A launch is mostly CPU work split between Python (validation, rendering, records) and liblxc
(forking the monitor, setting up namespaces and cgroups), with the GIL held for the Python
part, so threads do not add throughput (150 launches: 10.4 s serial, 9.6 s with 4 threads,
4.9 s with 4 processes on 2 cores). Each worker is a fresh interpreter
(``python -c ...launcher.worker_main``) that opens the same root and launches what it is
given over a pipe of JSON lines: nothing is forked from the caller, so locks held by the
caller's other threads, liblxc's state in the caller and the caller's ``__main__`` are never
copied (a ``multiprocessing`` worker made by "fork" copies the first two; by "forkserver" or
"spawn" it re-imports the caller's script). liblxc daemonizes each container's monitor (a
double fork, its own session), so the instances outlive the worker that started them.

All or report: everything that can be checked before making anything is checked first for the
whole batch — names (valid, unique, free), profiles, config and devices, the image (a remote one
is downloaded once), and the host limits the batch would cross (``hostlimits``) — so a batch
that cannot succeed is refused with nothing made. A launch that fails later (liblxc refuses a
start) is undone by its worker — the instance is deleted — and named in ``BulkError`` with why,
beside the instances that were launched; by default no new launch is handed out after the first
failure, as the cause (a full disk, a limit) usually repeats.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import hostlimits, record
from .config import devices as devcfg
from .config import names, schema
from .config.text import check_flag
from .context import Context
from .errors import TYPE_CHECKING, AlreadyExists, BulkError, InvalidArgument
from .instance import expand_with_root, recover_leftover
from .instances import Instance, Instances
from .logs import get_logger
from .state import lock
from .values import Value, assign

if TYPE_CHECKING:
    from typing import IO, Any

    Item = str | Mapping[str, Any]

log = get_logger(__name__)


class Spec(Value, frozen=True):
    """One instance of a batch: what ``Host.launch`` takes, with the image resolved."""

    _fields = ("name", "image", "profiles", "config", "devices", "pool", "ephemeral", "description",
               "start")
    __slots__ = _fields

    name: str
    image: str | None
    profiles: list[str] | None
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    pool: str | None
    ephemeral: bool
    description: str
    start: bool

    def __init__(self, name: str, image: str | None, profiles: list[str] | None = None,
                 config: dict[str, str] | None = None,
                 devices: dict[str, dict[str, str]] | None = None, pool: str | None = None,
                 ephemeral: bool = False, description: str = "", start: bool = True) -> None:
        assign(self, "name", name)
        assign(self, "image", image)
        assign(self, "profiles", profiles)
        assign(self, "config", {} if config is None else config)
        assign(self, "devices", {} if devices is None else devices)
        assign(self, "pool", pool)
        assign(self, "ephemeral", ephemeral)
        assign(self, "description", description)
        assign(self, "start", start)

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON's types, sharing nothing mutable with it (for a worker process)."""
        out = {f: getattr(self, f) for f in self._fields}
        out["profiles"] = None if self.profiles is None else list(self.profiles)
        out["config"] = dict(self.config)
        out["devices"] = {k: dict(v) for k, v in self.devices.items()}
        return out


def make_specs(items: int | Sequence[Item], *, image: str | None, prefix: str,
               profiles: Sequence[str] | None, config: Mapping[str, str] | None,
               devices: Mapping[str, Mapping[str, str]] | None, pool: str | None,
               ephemeral: bool, description: str, start: bool) -> list[Spec]:
    """The batch as specs: ``items`` is a count (names ``<prefix>1``…), or names and mappings
    (``{"name": …, "config": {…}, "devices": {…}, "profiles": […], "image": …}``) whose
    config and devices are laid over the batch's and whose profiles/image/pool replace them."""
    if isinstance(items, int):
        if items < 0:
            raise InvalidArgument("launch_many: a negative count")
        items = [f"{prefix}{i}" for i in range(1, items + 1)]
    elif isinstance(items, (str, bytes)):
        raise InvalidArgument("launch_many takes a list of names or specs, or a count")
    specs = []
    for item in items:
        if isinstance(item, str):
            item = {"name": item}
        unknown = set(item) - {"name", "image", "profiles", "config", "devices", "pool",
                               "ephemeral", "description"}
        if unknown:
            raise InvalidArgument(f"launch_many: unknown spec keys {sorted(unknown)}")
        if not item.get("name"):
            raise InvalidArgument("launch_many: every spec needs a name")
        prof = item.get("profiles", profiles)
        specs.append(Spec(
            name=str(item["name"]), image=item.get("image", image),
            profiles=list(prof) if prof is not None else None,
            config={**(config or {}), **(item.get("config") or {})},
            devices={k: dict(v) for k, v in {**(devices or {}),
                                             **(item.get("devices") or {})}.items()},
            pool=item.get("pool", pool),
            ephemeral=check_flag(item.get("ephemeral", ephemeral), "ephemeral"),
            description=str(item.get("description", description)), start=start))
    return specs


def prepare(ctx: Context, specs: Sequence[Spec], progress: Any = None) -> list[Spec]:
    """Check the whole batch before anything is made; the specs with each image resolved to
    its fingerprint. Also brings up the networks and unpacks the image volumes once, here,
    rather than in every worker at once."""
    from .images import Images
    seen: set[str] = set()
    for s in specs:
        names.validate_instance_name(s.name)
        if s.name in seen:
            raise InvalidArgument(f"launch_many: instance name {s.name!r} given twice")
        seen.add(s.name)
        if not record.exists(ctx.paths, s.name) and ctx.paths.instance_dir(s.name).exists():
            ctx.recover_leftover(s.name)  # a killed create or delete of this name: settled
        if record.exists(ctx.paths, s.name) or ctx.paths.instance_dir(s.name).exists():
            raise AlreadyExists("instance", s.name)
    fingerprints: dict[str, str] = {}
    for ref in sorted({s.image for s in specs if s.image is not None}):
        local = Images(ctx).resolve(ref, progress)
        fingerprints[ref] = ctx.images.get(local).fingerprint
    # one composition per distinct (profiles, config, devices, pool): a batch made from a
    # count composes once
    composed: dict[str, tuple[dict[str, str], dict[str, dict[str, str]], str]] = {}
    expanded = []
    pools: dict[str, set[str]] = {}
    bridges: set[str] = set()
    for s in specs:
        # no profiles named: the image's own list (each image may have another)
        key = json.dumps([s.profiles, s.config, s.devices, s.pool,
                          s.image if s.profiles is None else None], sort_keys=True)
        if key not in composed:
            local_cfg = schema.validate_instance_config(dict(s.config))
            local_devs = {n: devcfg.validate_device(n, d) for n, d in s.devices.items()}
            prof = ctx.new_instance_profiles(s.profiles, s.image)
            cfg, devs, root = expand_with_root(ctx, prof, local_cfg, local_devs, s.pool)
            composed[key] = (cfg, devs, root["pool"])
            for dev in devs.values():
                if dev.get("type") == "nic":
                    bridges.add(ctx.nic_link(dev))  # up now, and fails early if unknown
        cfg, devs, pool_name = composed[key]
        if s.start:
            expanded.append((cfg, devs))
        if s.image is not None:
            pools.setdefault(pool_name, set()).add(fingerprints[s.image])
    hostlimits.check(hostlimits.need_for(expanded))
    for pool_name, fps in pools.items():
        drv = ctx.pool(pool_name)
        for fp in fps:
            ctx.ensure_image_volume(drv, fp)
    return [s.evolve(image=fingerprints[s.image] if s.image is not None else None)
            for s in specs]


def launch_one(ctx: Context, spec: Spec) -> None:
    """Create and start one instance; a failed start deletes it again (nothing half-made)."""
    inst = Instances(ctx).create(spec.image, spec.name, profiles=spec.profiles,
                                 config=spec.config, devices=spec.devices, pool=spec.pool,
                                 ephemeral=spec.ephemeral, description=spec.description)
    if not spec.start:
        return
    try:
        inst.start()
    except BaseException:
        with contextlib.suppress(Exception):
            inst.delete(force=True)
        raise


def undo_leftover(ctx: Context, name: str) -> None:
    """What a worker that died mid-launch left of ``name``: a created instance is deleted, a
    half-made one removed as its intent record says."""
    with contextlib.suppress(Exception):
        if record.exists(ctx.paths, name):
            Instance(ctx, name).delete(force=True)
            return
        with lock(ctx.paths, "instance", name, timeout=30):
            recover_leftover(ctx, name)


def _failure(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# What starting a worker costs (an interpreter and lxdlib's launch path: ~0.2 s of CPU) is
# worth about eight launches, so a small batch gets fewer workers.
LAUNCHES_PER_WORKER = 8


def worker_count(batch: int, asked: int | None, cpus: int) -> int:
    """Workers for a batch: as many as asked (at most one per launch), else two per CPU —
    a start waits on liblxc's processes about half of its time — but no more than the batch
    repays; 1 means launching in the caller, one after the other."""
    if asked is not None:
        return max(1, min(asked, batch))
    return max(1, min(2 * cpus, batch // LAUNCHES_PER_WORKER))


def run(ctx: Context, specs: Sequence[Spec], workers: Workers | None, *, keep_going: bool,
        on_done: Callable[[str, str | None], None] | None = None) -> list[Instance]:
    """Launch ``specs`` (already ``prepare``d) over ``workers`` (None: here, one after the
    other); the instances in the order given, or ``BulkError`` naming what failed and why
    (failed ones leave nothing)."""
    results: dict[str, str | None] = {}
    if workers is None:
        for s in specs:
            try:
                launch_one(ctx, s)
                results[s.name] = None
            except Exception as e:  # reported with the others, as from a worker
                results[s.name] = _failure(e)
            if on_done:
                on_done(s.name, results[s.name])
            if results[s.name] is not None and not keep_going:
                break
    else:
        workers.run(specs, results, keep_going, on_done)
    for s in specs:
        results.setdefault(s.name, "not attempted: the batch stopped at the first failure")
    failures = {n: why for n, why in results.items() if why is not None}
    done = [Instance(ctx, s.name) for s in specs if results[s.name] is None]
    if failures:
        raise BulkError("launch_many", failures, done)
    return done


class Workers:
    """Worker processes fed from one queue; a thread here per worker writes its next spec and
    reads the answer (the threads only wait on pipes). Started when made, so that their
    start-up overlaps the batch's checks; ``close`` (or leaving the ``with``) ends them."""

    def __init__(self, ctx: Context, count: int) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        self.mutex = threading.Lock()
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for _ in range(count):
                self.procs.append(self._spawn())
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the workers: each finishes what it is doing, then sees its input end."""
        for p in self.procs:
            with contextlib.suppress(OSError):
                if p.stdin:
                    p.stdin.close()
        for p in self.procs:
            p.wait()

    def run(self, specs: Sequence[Spec], results: dict[str, str | None], keep_going: bool,
            on_done: Callable[[str, str | None], None] | None) -> None:
        todo: queue.SimpleQueue[Spec] = queue.SimpleQueue()
        for s in specs:
            todo.put(s)
        threads = [threading.Thread(target=self._feed, daemon=True, name=f"lxdlib-launch-{i}",
                                    args=(p, todo, results, keep_going, on_done))
                   for i, p in enumerate(self.procs)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # joined in steps, so Ctrl-C reaches this thread
        except BaseException:
            self.stop.set()  # each worker finishes the launch it is in; no new one is given
            for t in threads:
                t.join()
            raise

    def _spawn(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        # the worker imports the same lxdlib as this process, wherever it was imported from
        src = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        return subprocess.Popen(
            [sys.executable, "-c", "from lxdlib.launcher import worker_main; worker_main()",
             str(self.ctx.paths.root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            close_fds=True, bufsize=1,
            # out of the terminal's process group: Ctrl-C is the caller's to handle, and a
            # worker finishes the launch it is in, then sees EOF
            start_new_session=True)

    def _feed(self, proc: subprocess.Popen[str], todo: queue.SimpleQueue[Spec],
              results: dict[str, str | None], keep_going: bool,
              on_done: Callable[[str, str | None], None] | None) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while not self.stop.is_set():
            try:
                spec = todo.get_nowait()
            except queue.Empty:
                return
            why = _ask(proc.stdin, proc.stdout, spec)
            if why is not None and why.startswith("worker exited"):
                undo_leftover(self.ctx, spec.name)
            with self.mutex:
                results[spec.name] = why
            if on_done:
                on_done(spec.name, why)
            if why is not None:
                if not keep_going:
                    self.stop.set()
                if why.startswith("worker exited"):
                    return


def _ask(stdin: IO[str], stdout: IO[str], spec: Spec) -> str | None:
    """One launch by a worker: None when it succeeded, else why it failed."""
    try:
        stdin.write(json.dumps(spec.to_json()) + "\n")
        stdin.flush()
        line = stdout.readline()
    except (OSError, ValueError) as e:
        return f"worker exited: {e}"
    if not line:
        return "worker exited before answering"
    answer = json.loads(line)
    return None if answer.get("ok") else str(answer.get("error"))


def worker_main() -> None:
    """A launch worker: ``argv[1]`` is the root; reads specs as JSON lines on stdin, answers
    each with ``{"ok": true}`` or ``{"ok": false, "error": …}`` on stdout; ends at EOF."""
    from .state import Paths
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else writes to stdout (C code, a print) cannot break the protocol
    sys.stdout = sys.stderr
    try:
        ctx = Context.open(Paths.at(sys.argv[1]))
    except Exception as e:  # every spec gets the reason
        for _ in sys.stdin:
            out.write(json.dumps({"ok": False, "error": _failure(e)}) + "\n")
        return
    for line in sys.stdin:
        spec = Spec(**json.loads(line))
        try:
            launch_one(ctx, spec)
            answer: dict[str, Any] = {"ok": True}
        except Exception as e:
            log.debug("launch of %s failed: %s", spec.name, e)
            answer = {"ok": False, "error": _failure(e)}
        out.write(json.dumps(answer) + "\n")
