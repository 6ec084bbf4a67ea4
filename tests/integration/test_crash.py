"""kill -9 in the middle of snapshot, restore, copy (within a pool and across pools), import,
delete, rename and pool moves: the next lxdlib call leaves the old state or the new one, and the
invariant checker finds nothing half-made, no temporary name and no held lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lxdlib
from tests.integration import invariants

pytestmark = pytest.mark.root

_PROLOGUE = """
import sys, lxdlib
h = lxdlib.Host(sys.argv[1])
c = h.instances["c1" if "c1" in h.instances else "c2"]
print("ready", flush=True)
i = 0
while True:
    i += 1
"""

LOOPS = {
    "snapshot": """
    c.snapshots.create()
    names = c.snapshots.names()
    if len(names) > 3:
        c.snapshots.delete(names[0])
""",
    "restore": """
    c.snapshots.restore("s0" if i % 2 else "s1")
""",
    "copy": """
    n = f"cp{i}"
    h.copy("c1", n, pool="dp" if i % 2 else None)
    h.instances[n].delete()
""",
    "import": """
    n = f"im{i}"
    h.import_backup(sys.argv[2], n)
    h.instances[n].delete()
""",
    "delete": """
    n = f"d{i}"
    x = h.copy("c1", n)
    x.snapshots.create("extra")
    x.delete()
""",
    "rename-move": """
    c = c.rename("c2" if c.name == "c1" else "c1")
    from lxdlib.copy import move_to_pool
    move_to_pool(h, c.name, "dp" if c.record().pool == "default" else "default")
""",
}


def _spawn(root: Path, op: str, extra: str) -> subprocess.Popen[str]:
    script = _PROLOGUE + textwrap.indent(textwrap.dedent(LOOPS[op]), "    ")
    return subprocess.Popen([sys.executable, "-c", script, str(root), extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("delay", [0.05, 0.25, 0.6])
@pytest.mark.parametrize("op", sorted(LOOPS))
def test_kill_9_leaves_old_or_new(host: lxdlib.Host, tmp_path: Path, op: str,
                                  delay: float) -> None:
    host.create_pool("dp", "dir", {})
    c = host.create("busybox", "c1")
    vol = host.pool("default").volume_path("containers", "c1")
    (vol / "rootfs" / "root" / "f").write_text("zero\n")
    c.snapshots.create("s0")
    (vol / "rootfs" / "root" / "f").write_text("one\n")
    c.snapshots.create("s1")
    backup = host.export_backup("c1", tmp_path / "c1.tar.gz") if op == "import" else Path()
    p = _spawn(host.paths.root, op, str(backup))
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read() if p.stderr else ""
        time.sleep(delay)
        assert p.poll() is None, p.stderr.read() if p.stderr else ""  # still in its loop
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the process and the tools it runs (cp, tar, btrfs)
        p.communicate()
    fresh = lxdlib.Host(host.paths.root)
    names = fresh.instances.names()  # the next call: finishes or undoes what was cut short
    invariants.check(fresh)
    assert set(names) & {"c1", "c2"}, names
    main = fresh.instances["c1" if "c1" in names else "c2"]
    assert set(main.snapshots.names()) >= {"s0", "s1"} if op != "snapshot" else True
    # and the root goes on working: every instance starts, snapshots and copies
    for name in names:
        inst = fresh.instances[name]
        text = (fresh.pool(inst.record().pool).volume_path("containers", name) /
                "rootfs" / "root" / "f").read_text()
        assert text in ("zero\n", "one\n")
    main.snapshots.create("after")
    fresh.copy(main.name, "final")
    fresh.instances["final"].start()
    assert fresh.instances["final"].exec(["cat", "/root/f"]).text in ("zero\n", "one\n")
    invariants.check(fresh)


def test_recover_repairs_what_no_intent_names(host: lxdlib.Host) -> None:
    """After a power loss the intent files may be gone too: ``lxdlib recover`` compares the
    pools with the records instead."""
    from lxdlib.housekeeping import recover
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    pool = host.pool("default")
    pool.create_snapshot("c1", "unrecorded")  # a snapshot whose record write was lost
    pool.create_instance_volume("orphan", None)  # a volume no instance owns
    (pool.volume_path("containers", "x").parent / ".tmp-999999999-dead-x").mkdir()
    (host.paths.instance_dir("c1") / ".instance.yaml.tmp999999999").write_text("half")
    with pytest.raises(AssertionError):
        invariants.check(host)
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        "recover"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "c1/unrecorded" in r.stdout and "default:orphan" in r.stdout
    invariants.check(host)
    assert c.snapshots.names() == ["s0"]
    assert recover(host).recovered == []  # idempotent
