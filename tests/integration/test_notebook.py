"""The example notebook runs end to end in a real Jupyter kernel (nbclient, the test's own
interpreter as the kernel), the notebook reprs are tables, and the example scripts work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lxdlib

pytestmark = pytest.mark.root

REPO = Path(lxdlib.__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _kernelspec(tmp: Path) -> str:
    """A kernel spec pointing at this interpreter, visible only to this test (JUPYTER_PATH)."""
    name = "lxdlib-test"
    d = tmp / "jupyter" / "kernels" / name
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lxdlib test", "language": "python"}))
    return name


def test_notebook_runs_end_to_end(host: lxdlib.Host, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("LXDLIB_ROOT", str(host.paths.root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("HOME", str(tmp_path))  # ipython writes its profile there
    kernel = _kernelspec(tmp_path)
    nb = nbformat.read(EXAMPLES / "lxdlib.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=180,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs: list[dict[str, Any]] = [o for c in nb.cells if c.cell_type == "code"
                                     for o in c.get("outputs", [])]
    htmls = [o["data"]["text/html"] for o in outputs
             if o.get("output_type") == "execute_result" and "text/html" in o.get("data", {})]
    # host, images, instances, one instance, snapshots, profiles, pools, the final instances
    assert len(htmls) >= 8 and all("<table" in h for h in htmls)
    assert any("3 instances (3 running)" in h for h in htmls)
    assert any("before-change" in h for h in htmls)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "hello from the notebook" in text and "tick 3" in text and "changed" not in text
    assert "0 instances" in htmls[-1]
    assert len(host.instances) == 0


def test_reprs_and_key_completion(host: lxdlib.Host) -> None:
    inst = host.launch("busybox", "r1")
    inst.snapshots.create("s0")
    for obj in (host, host.instances, inst, host.images, host.images["busybox"], host.profiles,
                host.profiles["default"], host.pools, inst.snapshots, host.networks):
        html = obj._repr_html_()
        assert html.startswith("<table") and html.endswith("</table>"), type(obj)
    assert "r1" in host.instances._repr_html_() and "Running" in inst._repr_html_()
    assert host.instances._ipython_key_completions_() == ["r1"]
    assert host.profiles._ipython_key_completions_() == ["default"]
    assert host.pools._ipython_key_completions_() == ["default"]
    assert inst.snapshots._ipython_key_completions_() == ["s0"]
    assert host.pools["default"].name == "default"
    with pytest.raises(lxdlib.NotFound):
        host.pools["nope"]


def test_tqdm_progress_adapter(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    from lxdlib.progress import tqdm_progress
    cb = tqdm_progress("copy", file=sys.stderr, mininterval=0)
    for done in (0, 512, 1024, 2048):
        cb(done, 2048)
    assert cb.bar is not None and cb.bar.n == 2048 and cb.bar.disable  # closed at the end
    err = capsys.readouterr().err
    assert "copy" in err and "100%" in err
    unknown = tqdm_progress("stream", file=sys.stderr)
    with unknown:
        unknown(10, 0)
        unknown(30, 0)
    assert unknown.bar.n == 30


def run_example(host: lxdlib.Host, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args,
                           "--root", str(host.paths.root)], capture_output=True, text=True,
                          env=env, timeout=180)


def test_example_scripts(host: lxdlib.Host, tmp_path: Path) -> None:
    r = run_example(host, "launch_many.py", "--count", "3", "--prefix", "ex",
                    "--command", "echo ok-$(hostname)")
    assert r.returncode == 0, r.stderr
    assert sorted(line.split(": ")[-1] for line in r.stdout.splitlines() if "exit 0" in line) \
        == ["ok-ex-0", "ok-ex-1", "ok-ex-2"]
    assert len(host.instances) == 0
    web = host.launch("busybox", "web")
    web.files.put("/etc/version", b"1\n")
    r = run_example(host, "snapshot_before_upgrade.py", "web",
                    "--upgrade", "echo 2 > /etc/version; exit 1")
    assert r.returncode == 1 and "restoring" in r.stdout
    assert web.files.get("/etc/version") == b"1\n" and len(web.snapshots) == 1
    r = run_example(host, "snapshot_before_upgrade.py", "web", "--upgrade",
                    "echo 2 > /etc/version", "--check", "grep -q 2 /etc/version", "--drop")
    assert r.returncode == 0, r.stderr
    assert web.files.get("/etc/version") == b"2\n" and len(web.snapshots) == 1
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "x.txt").write_text("x")
    r = run_example(host, "file_sync.py", "push", str(site), "/srv/site", "web")
    assert r.returncode == 0, r.stderr
    r = run_example(host, "file_sync.py", "pull", "/srv/site", str(tmp_path / "back"), "web")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back" / "web" / "a" / "x.txt").read_text() == "x"
