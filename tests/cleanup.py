"""Tear down everything that lives under a test root, whatever state a failed test left it in.

Only objects tied to that root are touched: containers in its lxcpath, mounts below it, loop
devices whose backing file is below it, processes whose pid files are below it, and the bridges
and nftables tables its network records name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path


def _containers(root: Path) -> None:
    lxcpath = root / "containers"
    if not lxcpath.is_dir():
        return
    import lxc
    for name in lxc.list_containers(active=True, defined=False, config_path=str(lxcpath)):
        c = lxc.Container(name, str(lxcpath))
        with contextlib.suppress(Exception):
            if c.state == "FROZEN":
                c.unfreeze()
            c.stop()
            deadline = time.monotonic() + 10
            while c.state != "STOPPED" and time.monotonic() < deadline:
                time.sleep(0.02)


def _orphan_monitors(root: Path) -> None:
    """Containers whose directory is gone are invisible to liblxc's listing, but their monitor
    process names the lxcpath: kill their init (the monitor's child), which ends them."""
    prefix = f"[lxc monitor] {root / 'containers'} ".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(prefix):
                continue
            children = (proc / "task" / proc.name / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(child), signal.SIGKILL)
    time.sleep(0.1)


def _pidfiles(root: Path) -> None:
    for pidfile in list(root.rglob("*.pid")):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (ValueError, OSError, IndexError):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline:  # started for this root: its args name the root
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _networks(root: Path) -> None:
    import yaml
    for rec in (root / "networks").glob("*.yaml") if (root / "networks").is_dir() else []:
        with contextlib.suppress(Exception):
            name = (yaml.safe_load(rec.read_text()) or {}).get("name") or rec.stem
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            for fam in ("inet", "ip", "ip6", "bridge"):  # bridge: mac filtering
                subprocess.run(["nft", "delete", "table", fam, f"lxdlib_{name}"],
                               capture_output=True)


def _mounts(root: Path) -> None:
    prefix = str(root)
    for _ in range(5):
        with open("/proc/self/mountinfo") as f:
            targets = [line.split()[4] for line in f]
        mine = [t for t in targets if t == prefix or t.startswith(prefix + "/")]
        if not mine:
            return
        for t in sorted(mine, key=len, reverse=True):
            subprocess.run(["umount", "-l", t], capture_output=True)


def _loops(root: Path) -> None:
    r = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return
    for dev in json.loads(r.stdout).get("loopdevices", []):
        backing = (dev.get("back-file") or "").removesuffix(" (deleted)")
        if backing.startswith(str(root) + "/"):
            subprocess.run(["losetup", "-d", dev["name"]], capture_output=True)


def _zpools(root: Path) -> None:
    r = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True)
    if r.returncode != 0:
        return
    for pool in r.stdout.split():
        st = subprocess.run(["zpool", "status", "-P", pool], capture_output=True, text=True)
        if str(root) in st.stdout:
            subprocess.run(["zpool", "destroy", "-f", pool], capture_output=True)


def teardown_root(root: Path) -> None:
    for step in (_containers, _orphan_monitors, _pidfiles, _networks, _zpools, _mounts, _loops):
        with contextlib.suppress(Exception):
            step(root)
