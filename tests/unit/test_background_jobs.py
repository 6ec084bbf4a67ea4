"""The suite's background jobs (tests/integration/background.py): a job's outcome is what
``subprocess.run`` would have given, its timeout holds, a job reaped by someone else is not taken
for a success, and removing a job ends its processes and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import background


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[background.Spec]:
    def prepare(base: Path) -> background.Command:
        (base / "input").write_text("from prepare\n")
        return background.Command(
            ["sh", "-c", 'cat input; echo "nice $(cut -d" " -f19 /proc/self/stat)"; '
                         'echo err >&2; echo made > output; exit 3'], cwd=base)
    yield background.Spec(prefix="job-", prepare=prepare, temp_dir=str(tmp_path))
    background.stop_all()


def test_outcome_is_the_commands(spec: background.Spec) -> None:
    job = background.Job("t", spec)
    r = job.wait(timeout=30)
    assert r.returncode == 3
    nice = min(19, os.nice(0) + background.NICENESS)  # lower than this process's priority
    assert r.stdout == f"from prepare\nnice {nice}\n" and r.stderr == "err\n"
    assert (job.base / "output").read_text() == "made\n"
    assert job.base.stat().st_mode & 0o777 == 0o711
    # its wrapper collected: no ended child of this process left for a waitpid(-1) elsewhere
    with pytest.raises(ChildProcessError):
        os.waitpid(job.proc.pid if job.proc else -1, os.WNOHANG)
    job.remove()
    assert not job.base.exists() and not job.logs.exists()


def test_timeout_counts_from_the_start_and_kills(tmp_path: Path) -> None:
    spec = background.Spec(prefix="job-", temp_dir=str(tmp_path), prepare=lambda base:
                           background.Command(["sh", "-c", "echo $$ > pid; exec sleep 600"],
                                              cwd=base))
    job = background.Job("t", spec)
    while not (job.base / "pid").exists() or not (job.base / "pid").read_text():
        time.sleep(0.02)
    pid = int((job.base / "pid").read_text())
    time.sleep(1)
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        job.wait(timeout=1.5)
    assert time.monotonic() - t0 < 1.5  # a second of the 1.5 had passed before the wait
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    job.remove()
    assert list(tmp_path.iterdir()) == []


def test_a_wrapper_reaped_elsewhere_is_no_success(spec: background.Spec) -> None:
    """Killed before it wrote the exit status, and reaped by a ``waitpid`` that is not the
    job's: Popen would call that a 0; the job says it has no exit status."""
    spec = background.Spec(prefix="job-", temp_dir=spec.temp_dir, prepare=lambda base:
                           background.Command(["sleep", "600"]))
    job = background.Job("t", spec)
    assert job.proc is not None
    os.kill(job.proc.pid, 9)
    os.waitpid(job.proc.pid, 0)
    with pytest.raises(AssertionError, match="without an exit status"):
        job.wait(timeout=30)
    job.remove()


def test_take_starts_what_was_not_started_and_stop_all_removes_the_rest(
        spec: background.Spec, tmp_path: Path) -> None:
    background.define("unit-a", spec)
    background.define("unit-b", background.Spec(
        prefix="job-", temp_dir=str(tmp_path),
        prepare=lambda base: background.Command([sys.executable, "-c",
                                                 "import time; time.sleep(600)"])))
    background.define("unit-never", background.Spec(
        prefix="job-", temp_dir=str(tmp_path), ready=lambda: False,
        prepare=lambda base: background.Command(["false"])))

    class Item:
        def __init__(self, *names: str) -> None:
            self.names = names

        def iter_markers(self, name: str) -> list[pytest.Mark]:
            assert name == "background"
            return [pytest.mark.background(n).mark for n in self.names]

    background.plan([Item("unit-b"), Item("unit-a", "unit-never")])  # type: ignore[list-item]
    assert len(list(tmp_path.iterdir())) == 2  # a and b started, never not
    assert background.take("unit-a").wait(timeout=30).returncode == 3
    # not planned, or not ready here: started by the test that takes it
    never = background.take("unit-never")
    assert never.wait(timeout=30).returncode == 1
    background.stop_all()
    assert list(tmp_path.iterdir()) == []
