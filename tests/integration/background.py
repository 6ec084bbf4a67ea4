"""Slow, self-contained jobs that start when the session starts and run in processes of their
own while other tests run, so that their minutes overlap with the suite's waits on containers
(the suite leaves about two thirds of this machine's two cores idle).

A job is exactly what a fixture or test would otherwise run itself, with the same arguments: the
debootstrap image builds of test_docker.py and test_image_debian.py, and ``ansible-test sanity``
in test_ansible.py. A test module defines its job (``define``) and marks the tests that need it
(``@pytest.mark.background(name)``); tests/conftest.py starts the jobs the selected tests need
(``plan``), at most ``SLOTS`` at once, in the order the tests need them, at low CPU priority so
that the tests in the foreground keep the CPU they had. The test or fixture that needs a job
takes it (``take``: started then if it has not started yet, so a test run alone behaves as
before), waits for it and checks its outcome as it checked the in-process run, and removes it
(``Job.remove``: its directory and logs, also on failure). ``stop_all`` at the session's end
stops and removes the jobs nobody took (an early stop, an interrupted run).

Each job runs under a small wrapper that writes the command's exit status to a file: a
``waitpid(-1)`` elsewhere in the test process could reap the wrapper, and then only the file
tells how the command ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

#: Jobs running at once: more would slow the tests in the foreground more than they gain.
SLOTS = 2
#: The jobs' CPU priority (``nice``): they take the CPU the foreground leaves idle. A job keeps
#: the test process's session (a process group of its own, not a session): with the kernel's
#: autogroup scheduling (sched_autogroup_enabled, on here) a new session is a group of its own
#: that gets a full share of the CPU whatever its processes' nice value, and the first version,
#: with start_new_session, slowed the tests beside it by as much as the jobs saved.
NICENESS = 10

REPO = Path(__file__).resolve().parents[2]

#: Runs argv[2:] at low priority and writes its exit status to argv[1].
_WRAPPER = """\
import os, subprocess, sys
os.nice(int(os.environ.pop("LXDLIB_TEST_JOB_NICE")))
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1] + ".part", "w") as f:
    f.write(str(rc))
os.rename(sys.argv[1] + ".part", sys.argv[1])
"""


@dataclasses.dataclass(frozen=True)
class Command:
    """What a job runs: ``argv`` in ``cwd`` with ``env`` (None: the test process's own)."""
    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None


def python_env() -> dict[str, str]:
    """The environment for a job that runs Python with this checkout's lxdlib, as the test
    process imports it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@dataclasses.dataclass(frozen=True)
class Spec:
    """``prepare(base)`` fills the job's fresh directory (mode 0711: an unprivileged
    container's root walks down to what a build makes there) and says what to run; ``ready()``
    says whether the job can run here at all (the tests that need it skip otherwise)."""
    prefix: str
    prepare: Callable[[Path], Command]
    ready: Callable[[], bool] = lambda: True
    temp_dir: str = "/var/tmp"


class Job:
    """One started job. ``base`` is its directory: what it makes is there."""

    def __init__(self, name: str, spec: Spec) -> None:
        self.name = name
        self.base = Path(tempfile.mkdtemp(prefix=spec.prefix, dir=spec.temp_dir))
        self.logs = Path(tempfile.mkdtemp(prefix=f"lxdlib-job-{name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        _alive.append(self)
        try:
            self.base.chmod(0o711)
            self.command = spec.prepare(self.base)
            env = dict(self.command.env if self.command.env is not None else os.environ)
            env["LXDLIB_TEST_JOB_NICE"] = str(NICENESS)  # the wrapper's, taken off for argv
            with open(self.logs / "stdout", "wb") as out, open(self.logs / "stderr", "wb") as err:
                self.started = time.monotonic()
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", _WRAPPER, str(self.logs / "rc"), *self.command.argv],
                    cwd=self.command.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, process_group=0)
        except BaseException:
            self.remove()
            raise

    @property
    def running(self) -> bool:
        if self.proc is None or (self.logs / "rc").exists():
            return False
        try:
            return self.proc.poll() is None
        except ChildProcessError:  # reaped elsewhere: the rc file has the word
            return False

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """The job's outcome, as ``subprocess.run(..., timeout=timeout)`` would give it had it
        started when the job did: past the timeout the job is killed and TimeoutExpired
        raised."""
        deadline = self.started + timeout
        while self.running:
            if time.monotonic() > deadline:
                self.stop()
                raise subprocess.TimeoutExpired(self.command.argv, timeout)
            time.sleep(0.1)
        self._reap()
        rc_file = self.logs / "rc"
        stdout = (self.logs / "stdout").read_text(errors="replace")
        stderr = (self.logs / "stderr").read_text(errors="replace")
        if not rc_file.exists():
            raise AssertionError(f"background job {self.name} ended without an exit status "
                                 f"(killed?):\n{stdout[-4000:]}\n{stderr[-4000:]}")
        return subprocess.CompletedProcess(self.command.argv, int(rc_file.read_text()), stdout,
                                           stderr)

    def _reap(self) -> None:
        """Collect the ended wrapper (it exits right after writing its status file): left a
        zombie, it would be the test process's child that a ``waitpid(-1)`` elsewhere finds
        (tests/unit/test_monitor_bounded.py asserts that a fork leaves no child behind)."""
        if self.proc is not None:
            with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Interrupt the job's whole process group (a build's ``finally`` unmounts and removes
        its work directory on the interrupt), killing it if it has not ended in 60 s."""
        if self.proc is None or not self.running:
            return
        for sig, grace in ((signal.SIGINT, 60.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + grace
            while self.running and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.running:
                break
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)

    def remove(self) -> None:
        """Stop the job if it runs, then remove what it made: mounts left below its directory
        first (rmtree must never walk into a live /proc), then the directory and the logs."""
        self.stop()
        self._reap()
        prefix = str(self.base) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
        for mp in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.logs, ignore_errors=True)
        if self in _alive:
            _alive.remove(self)


_specs: dict[str, Spec] = {}
_queue: list[str] = []         # planned, not started yet, in the order the tests need them
_started: dict[str, Job] = {}  # started, not taken yet
_alive: list[Job] = []         # every job not removed yet (taken or not)


def define(name: str, spec: Spec) -> None:
    """Called by the test module that owns the job, when it is imported (collection)."""
    _specs[name] = spec


def needed(items: Iterable[pytest.Item]) -> list[str]:
    """The jobs the selected tests are marked with, in the order the tests run."""
    names: list[str] = []
    for item in items:
        for mark in item.iter_markers("background"):
            if mark.args[0] not in names:
                names.append(mark.args[0])
    return names


def plan(items: Iterable[pytest.Item]) -> None:
    """Queue the jobs the selected tests need and start the first ``SLOTS`` of them."""
    _queue.extend(n for n in needed(items)
                  if n in _specs and _specs[n].ready() and n not in _queue)
    tick()


def tick() -> None:
    """Start queued jobs while fewer than ``SLOTS`` run (called before each test)."""
    while _queue and sum(j.running for j in _started.values()) < SLOTS:
        name = _queue.pop(0)
        # a job that cannot start here is left to its test, which starts it and fails then
        with contextlib.suppress(Exception):
            _started[name] = Job(name, _specs[name])


def take(name: str) -> Job:
    """The job for the test that needs it: the one started in the background, or, if it did not
    start (the test was not planned, or a start failed), one started now."""
    if name in _queue:
        _queue.remove(name)
    return _started.pop(name, None) or Job(name, _specs[name])


def stop_all() -> None:
    """At the session's end: stop and remove every job not removed yet."""
    _queue.clear()
    _started.clear()
    for job in list(_alive):
        job.remove()
