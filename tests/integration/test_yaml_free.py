"""The everyday commands on an instance never import PyYAML (~14 ms at every start): lxdlib's
own records are JSON. Checked with ``python -X importtime``, which names every module a command
imports on stderr, even when the command leaves by ``os._exit``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lxdlib

pytestmark = pytest.mark.root


def run(host: lxdlib.Host, *args: str) -> set[str]:
    """Run the command; the top-level packages it imported."""
    cmd = [sys.executable, "-X", "importtime", "-m", "lxdlib.cli.main",
           "--root", str(host.paths.root), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{args} failed ({r.returncode}): {r.stderr[-2000:]}"
    return {line.rsplit("|", 1)[1].strip().split(".")[0]
            for line in r.stderr.splitlines() if line.startswith("import time:")}


def test_everyday_commands_do_not_import_yaml(host: lxdlib.Host) -> None:
    assert "yaml" in run(host, "launch", "busybox", "c1")  # the image's metadata.yaml: LXD's
    for args in (["list"], ["list", "-f", "json"], ["info", "c1"],
                 ["exec", "c1", "--", "true"],
                 ["config", "set", "c1", "user.note", "yes"],
                 ["config", "get", "c1", "user.note"],
                 ["snapshot", "c1", "s0"],
                 ["stop", "c1", "--force"],
                 ["list"]):
        assert "yaml" not in run(host, *args), args
    # what they wrote is JSON (which YAML readers read too)
    rec = json.loads((host.paths.instance_record("c1")).read_bytes())
    assert rec["config"]["user.note"] == "yes" and rec["snapshots"][0]["name"] == "s0"
    assert rec["config"]["volatile.last_state.power"] == "STOPPED"
    # LXD's YAML stays YAML: ``show`` prints it
    assert "yaml" in run(host, "config", "show", "c1")


def test_the_image_metadata_is_parsed_once_per_text(host: lxdlib.Host) -> None:
    """A create reads the image's metadata.yaml (LXD's YAML) for its templates: parsed by the
    safe loader once and kept as JSON with the text it came from (one memo per text, in the
    root's run/image-metadata/); starts, copies and other instances of the image take it from
    there while the text is the same."""
    memos = host.paths.metadata_memos
    assert "yaml" in run(host, "init", "busybox", "c1")
    [memo] = memos.iterdir()
    kept = json.loads(memo.read_bytes())["value"]
    assert kept["templates"]["/etc/hostname"]["template"] == "hostname.tpl"
    assert "yaml" not in run(host, "init", "busybox", "c0")  # another of the same image
    assert "yaml" not in run(host, "start", "c1")
    assert host.instances["c1"].exec(["cat", "/etc/hostname"]).text == "c1\n"
    run(host, "stop", "c1", "--force")
    assert "yaml" not in run(host, "copy", "c1", "c2")
    assert "yaml" not in run(host, "start", "c2")
    assert host.instances["c2"].exec(["cat", "/etc/hostname"]).text == "c2\n"
    assert list(memos.iterdir()) == [memo]
    # a changed metadata.yaml is parsed again, even rewritten at once with the same size
    vol = host.pool("default").volume_path("containers", "c1")
    meta = (vol / "metadata.yaml").read_text()
    edited = meta.replace("- rename", "- renamX")
    assert len(edited) == len(meta) and edited != meta
    (vol / "metadata.yaml").write_text(edited)
    assert "yaml" in run(host, "start", "c1")
    assert len(list(memos.iterdir())) == 2
