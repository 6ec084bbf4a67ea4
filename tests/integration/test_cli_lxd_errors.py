"""The `lxdlib` command's error lines are LXD 5.0's own, word for word, with LXD's exit status.

Each expected line below was read off `lxc` of a running LXD 5.0.2 for the same command line on
the same state (a running c1, a stopped c2; tests/data/lxd/lxd.sh starts one). The library's
own messages, which name the object, are unchanged (tests/unit: lxdlib.errors); only the
command words them as `lxc` does (lxdlib/cli/lxdwords.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lxdlib

pytestmark = pytest.mark.root

RUNNING_STOPPED = "The instance is currently running, stop it first or pass --force"
SNAP_MISSING = ('Failed to fetch snapshot "nosnap" of instance "c1" in project "default": '
                "InstanceSnapshot not found")

#: (command line, what lxc prints on stderr); c1 is running, c2 stopped, p1 a profile, v1 a
#: custom volume; in order (a few change the state the next ones see)
CASES: list[tuple[tuple[str, ...], str]] = [
    # a missing instance, whatever the verb
    (("info", "nope"), "Instance not found"),
    (("start", "nope"), "Instance not found"),
    (("stop", "nope"), "Instance not found"),
    (("restart", "nope"), "Instance not found"),
    (("pause", "nope"), "Instance not found"),
    (("config", "show", "nope"), "Instance not found"),
    (("config", "set", "nope", "user.x", "y"), "Instance not found"),
    (("exec", "nope", "--", "true"), "Instance not found"),
    (("snapshot", "nope", "s"), "Instance not found"),
    (("rename", "nope", "x"), "Instance not found"),
    (("delete", "nope"), 'Failed checking instance exists "local:nope": Instance not found'),
    # the run state
    (("start", "c1"), "The instance is already running"),
    (("delete", "c1"), RUNNING_STOPPED),
    (("stop", "c2"), "The instance is already stopped"),
    (("restart", "c2"), "The instance is already stopped"),
    (("pause", "c2"), "The container isn't running"),
    (("exec", "c2", "--", "true"), "Instance is not running"),
    (("rename", "c1", "c9"), "Renaming of running container not allowed"),
    (("move", "c1", "c9"), "Renaming of running container not allowed"),
    (("rename", "c2", "c1"), 'Name "c1" already in use'),
    (("move", "c2", "c1"), 'Name "c1" already in use'),
    (("copy", "c2", "c1"), "Failed creating instance record: Add instance info to the "
                           'database: This "instances" entry already exists'),
    (("pause", "c1"), ""),
    (("pause", "c1"), "The container is already frozen"),
    (("exec", "c1", "--", "true"), "Instance is frozen"),
    (("start", "c1"), ""),
    # other missing objects
    (("profile", "show", "nope"), "Fetch profile: Profile not found"),
    (("profile", "delete", "nope"), "Profile not found"),
    (("image", "show", "nope"), "Image not found"),
    (("launch", "nosuchimage", "c4"), "Image not found"),
    (("image", "alias", "delete", "nope"), "Image alias not found"),
    (("image", "alias", "create", "al2", "busybox"), "Image not found"),  # an alias: not a target
    (("image", "copy", "busybox", "local:"), "The source and target servers must be different"),
    (("network", "show", "nope"), "Network not found"),
    (("network", "delete", "nope"), "Failed loading network: Network not found"),
    (("storage", "show", "nope"), "Storage pool not found"),
    (("storage", "volume", "show", "default", "nope"), "Storage pool volume not found"),
    (("storage", "volume", "delete", "default", "nope"), "Storage pool volume not found"),
    (("restore", "c1", "nosnap"), "Snapshot c1/nosnap does not exist"),
    (("config", "show", "c1/nosnap"), SNAP_MISSING),
    (("delete", "c1/nosnap"),
     f'Failed checking instance snapshot exists "local:c1/nosnap": {SNAP_MISSING}'),
    (("info", "c1/snap"), "Invalid instance name"),
    (("file", "pull", "c1/nonexistent", "-"), "Not Found"),
    (("file", "delete", "c1/nonexistent"), "Not Found"),
    (("file", "pull", "nope/x", "-"), "Instance not found"),
    # devices and profiles of an instance
    (("config", "device", "remove", "c1", "nodev"), "Device doesn't exist"),
    (("config", "device", "set", "c1", "nodev", "foo=bar"), "Device doesn't exist"),
    (("config", "device", "override", "c2", "nodev"), "The profile device doesn't exist"),
    (("config", "device", "add", "c2", "hdd", "none"), ""),
    (("config", "device", "add", "c2", "hdd", "none"), "The device already exists"),
    (("profile", "add", "c1", "default"), "Duplicate profile found in request"),
    # not a verb of lxc's: its words for an unknown command (lxdlib's name for lxc's)
    (("profile", "device", "override", "p1", "eth0"),
     'unknown command "override" for "lxdlib profile device"'),
    (("profile", "remove", "c1", "nope"), "Profile nope isn't currently applied to c1"),
    (("profile", "create", "p1"), 'Error inserting "p1" into database: The profile already '
                                  "exists"),
    (("profile", "rename", "p1", "default"), 'Name "default" already in use'),
    (("init", "busybox", "c3", "-p", "nope"), 'Requested profile "nope" doesn\'t exist'),
    (("storage", "volume", "create", "default", "v1"), "Volume by that name already exists"),
    # config keys and values
    (("config", "set", "c2", "nosuch.key", "v"),
     "Invalid config: Unknown configuration key: nosuch.key"),
    (("config", "set", "c2", "limits.cpu", "abc"), "Invalid config: Invalid CPU limit syntax"),
    (("config", "set", "c2", "limits.memory", "abc"), "Invalid config: Invalid value: abc"),
    (("config", "set", "c2", "limits.memory", "10XB"), "Invalid config: Invalid value: 10XB"),
    (("config", "set", "c2", "limits.processes", "abc"),
     'Invalid config: Invalid value for an integer "abc"'),
    (("config", "set", "c2", "security.nesting", "abc"),
     'Invalid config: Invalid value for a boolean "abc"'),
    (("config", "set", "c2", "limits.cpu.allowance", "abc"),
     "Invalid config: Invalid allowance: abc"),
    (("config", "unset", "c2", "nosuch.key"),
     "Can't unset key 'nosuch.key', it's not currently set"),
    (("profile", "set", "p1", "nosuch.key", "v"), "Unknown configuration key: nosuch.key"),
    # lxc leaves a key that is not set so, without complaint, if it is a key at all
    (("profile", "unset", "p1", "user.nothere"), ""),
    (("profile", "unset", "p1", "limits.cpu"), ""),
    (("profile", "unset", "p1", "nosuch.key"), "Unknown configuration key: nosuch.key"),
    (("init", "busybox", "c3", "-c", "nosuch.key=v"),
     "Failed creating instance record: Unknown configuration key: nosuch.key"),
    # a user's everyday slips (the trial of issue 13, read off lxc 5.0.2 the same way)
    (("rename", "c2", "c2"), 'Name "c2" already in use'),
    (("move", "c2", "c2"), 'Name "c2" already in use'),
    (("copy", "c2"), "Failed creating instance record: Add instance info to the database: This "
                     '"instances" entry already exists'),  # lxc copies to the same name
    (("snapshot", "c2", "s1"), ""),
    (("snapshot", "c2", "s1"), 'Failed creating instance snapshot record "s1": Add snapshot info '
                               'to the database: This "instances_snapshots" entry already '
                               "exists"),
    (("delete", "c2/s1"), ""),
    (("snapshot", "c2", "bad/name"), 'Invalid snapshot name: Cannot contain "/"'),
    (("snapshot", "c2", "bad name"), 'Failed creating instance snapshot record "bad name": '
                                     "Invalid instance snapshot name: Cannot contain space or / "
                                     "characters"),
    (("rename", "c2", "bad/name"), 'The character "/" is reserved for snapshots'),
    (("rename", "c2", "bad name"),
     "Invalid instance name: Name can only contain alphanumeric and hyphen characters"),
    (("init", "busybox", "bad/name"), 'The character "/" is reserved for snapshots'),
    (("init", "busybox", "c4", "-s", "nope"),
     'Failed loading storage pool "nope": Storage pool not found'),
    (("config", "set", "c2", "user.a"), "cannot set 'c2' to 'user.a': unknown key"),  # no value
    (("profile", "get", "nope", "x"), "Fetch profile: Profile not found"),
    (("profile", "edit", "nope"), 'Failed to retrieve profile "nope": Profile not found'),
    (("profile", "set", "p1", "user.a"), "Invalid key=value configuration: user.a"),
    (("network", "info", "nope"), 'Network interface "nope" not found'),
    (("export", "nope", "nope.tar.gz"), "Create instance backup: Instance not found"),
    (("remote", "remove", "nope"), "Remote nope doesn't exist"),
    (("file", "pull", "c1", "-"), "Invalid source c1"),
    (("file", "pull", "c1/etc", "-"), "Can't pull a directory without --recursive"),
    (("exec", "c1"), "Invalid number of arguments"),
    (("file", "push", "/etc/hostname", "c2"), "Invalid target c2"),
    (("storage", "volume", "show", "nope", "v1"), "Storage pool not found"),
    (("storage", "volume", "set", "default", "v1", "nosuch", "v"),
     'Invalid option for volume "default_v1" option "nosuch"'),
    (("storage", "volume", "set", "default", "v1", "size", "abc"),
     'Invalid value for volume "default_v1" option "size": Invalid value: abc'),
    (("config", "device", "add", "c2", "d1", "disk"), 'Invalid devices: Device validation '
     'failed for "d1": Disk entry is missing the required "source" or "path" property'),
    (("config", "device", "add", "c2", "d1", "disk", "path=/mnt"), 'Invalid devices: Device '
     'validation failed for "d1": Disk entry is missing the required "source" or "path" '
     "property"),
    (("config", "device", "add", "c2", "d1", "unix-char"), 'Invalid devices: Device validation '
     'failed for "d1": Unix device entry is missing the required "source" or "path" property'),
    (("config", "device", "add", "c2", "d1", "nosuchtype"), 'Invalid devices: Device '
     'validation failed for "d1": Failed loading device "d1": Unsupported device type'),
    (("profile", "device", "add", "p1", "d1", "nosuchtype"),
     'Device validation failed for "d1": Failed loading device "d1": Unsupported device type'),
    (("config", "device", "add", "c2", "d1", "none", "bad"), 'No value found in "bad"'),
    (("storage", "volume", "attach", "default", "nope", "c2", "/mnt"),
     'Failed add validation for device "nope": Failed loading custom volume: Storage volume '
     "not found"),
    (("storage", "volume", "attach", "default", "v1", "c2", "/mnt"), ""),
    (("storage", "volume", "attach", "default", "v1", "c2", "/mnt"), "Device already exists: v1"),
    (("storage", "volume", "detach", "default", "v1", "c2"), ""),
    (("storage", "volume", "detach", "default", "v1", "c2"),
     "No device found for this storage volume"),
    (("storage", "volume", "create", "default", "v9", "size=abc"),
     'Invalid value for volume "default_v9" option "size": Invalid value: abc'),
    (("storage", "volume", "create", "default", "v9", "nosuch=x"),
     'Invalid option for volume "default_v9" option "nosuch"'),
    (("network", "detach", "nope", "c2"), "No device found for this network"),
    (("config", "device", "add", "c2", "d1", "disk", "source=/nonexistent-src", "path=/mnt"),
     'Failed add validation for device "d1": Missing source path "/nonexistent-src" for disk '
     '"d1"'),
    # options lxc does not know, or without their value: its flag parser's words, status 1
    (("start", "c1", "--nosuch"), "unknown flag: --nosuch"),
    (("start", "c1", "--timeout=3"), "unknown flag: --timeout"),
    (("start", "c1", "-z"), "unknown shorthand flag: 'z' in -z"),
    (("stop", "c2", "--timeout"), "flag needs an argument: --timeout"),
    (("network", "list", "-c", "n"), "unknown shorthand flag: 'c' in -c"),
    # the server's words: not clustered, trusts no certificate
    (("cluster", "list"), "LXD server isn't part of a cluster"),
    (("config", "trust", "list", "-f", "csv"), ""),
]


def run(root: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ),
                          **({"input": input} if input is not None
                             else {"stdin": subprocess.DEVNULL}))


def test_error_lines_are_lxds(host: lxdlib.Host) -> None:
    host.launch("busybox", "c1")
    host.create("busybox", "c2")
    host.profiles.create("p1", {}, {})
    host.volumes.create("default/v1")
    wrong = []
    for args, said in CASES:
        r = run(host.paths.root, *args)
        want = (1, f"Error: {said}\n") if said else (0, "")
        if (r.returncode, r.stderr) != want:
            wrong.append(f"lxdlib {' '.join(args)}: {r.returncode} {r.stderr!r}, "
                         f"lxc: {want[0]} {want[1]!r}")
    assert not wrong, "\n".join(wrong)
    # and nothing the refusals touched changed
    assert host.instances["c1"].state == "RUNNING" and host.instances["c2"].state == "STOPPED"
    assert sorted(host.instances.names()) == ["c1", "c2"]
    assert host.instances["c1"].profiles == ["default"]


def test_wrong_argument_counts_are_lxcs_usage_error(host: lxdlib.Host) -> None:
    """A missing or extra argument: lxc's ``Invalid number of arguments`` and status 1 (lxc
    prints its help on stdout before it; lxdlib keeps stdout clean and gives the usage line on
    stderr). argparse's own status was 2. ``start`` with no name at all: lxc prints its help
    and exits 0; lxdlib refuses it the same way (the README's "does better" list)."""
    host.create("busybox", "c2")
    for args in (("info", "c2", "c3"), ("restore", "c2"), ("rename", "c2"),
                 ("file", "pull", "c2/etc/hostname"), ("start",)):
        r = run(host.paths.root, *args)
        assert (r.returncode, r.stdout) == (1, ""), args
        assert r.stderr.startswith("usage: ") and \
            r.stderr.endswith("\nError: Invalid number of arguments\n"), (args, r.stderr)


def test_an_edit_with_a_bad_device_says_what_lxc_says(host: lxdlib.Host) -> None:
    """Read off lxc 5.0.2: a device of an unknown type in `config edit` / `profile edit`."""
    host.create("busybox", "c2")
    host.profiles.create("p1", {}, {})
    bad = "devices:\n  d1:\n    type: nosuchtype\n"
    why = 'Device validation failed for "d1": Failed loading device "d1": Unsupported device type'
    r = run(host.paths.root, "config", "edit", "c2", input=bad)
    assert (r.returncode, r.stderr) == (1, f"Error: Invalid devices: {why}\n")
    r = run(host.paths.root, "profile", "edit", "p1", input=bad)
    assert (r.returncode, r.stderr) == (1, f"Error: {why}\n")
    assert host.instances["c2"].devices == {} and host.profiles.get("p1").devices == {}


def test_a_batch_tries_every_instance_and_reports_each_failure(host: lxdlib.Host) -> None:
    """`lxc start c1 c2 c3` with c1 running, c2 stopped, c3 missing (read off lxc 5.0.2):
    c2 starts all the same, each failure is one line under its name, then a blank line and
    the batch's error. lxdlib stopped at c1 and left c2 stopped."""
    host.launch("busybox", "c1")
    host.create("busybox", "c2")
    r = run(host.paths.root, "start", "c1", "c2", "c3")
    assert (r.returncode, r.stderr) == (1, "c1: error: The instance is already running\n"
                                           "c3: error: Instance not found\n"
                                           "\n"
                                           "Error: Some instances failed to start\n")
    assert host.instances["c2"].state == "RUNNING"
    r = run(host.paths.root, "stop", "-f", "c1", "c2")
    assert (r.returncode, r.stderr) == (0, "")
    assert {i.name: i.state for i in host.instances.list()} == {"c1": "STOPPED",
                                                                "c2": "STOPPED"}


def test_a_failed_start_points_at_the_log(host: lxdlib.Host) -> None:
    """As lxc: a start that liblxc failed ends with where to look; in a batch, each of its
    lines under the instance's name."""
    host.create("busybox", "c5", config={"raw.lxc": "lxc.hook.pre-start = /bin/false"})
    host.create("busybox", "c6")
    r = run(host.paths.root, "start", "c5")
    assert r.returncode == 1 and r.stderr.startswith("Error: ")
    assert r.stderr.endswith("\nTry `lxdlib info --show-log c5` for more info\n"), r.stderr
    r = run(host.paths.root, "start", "c5", "c6")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("c5: error: ")
    assert "c5: Try `lxdlib info --show-log c5` for more info" in lines
    assert all(line.startswith("c5: ") for line in lines[:-2])
    assert lines[-2:] == ["", "Error: Some instances failed to start"]
    assert host.instances["c6"].state == "RUNNING"
    host.instances["c6"].stop(force=True)


def test_trust_list_is_lxds_empty_table(host: lxdlib.Host) -> None:
    r = run(host.paths.root, "config", "trust", "list")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines()[1] == \
        "| TYPE | NAME | COMMON NAME | FINGERPRINT | ISSUE DATE | EXPIRY DATE |"


def test_library_messages_still_name_the_object(host: lxdlib.Host) -> None:
    """The API keeps lxdlib's messages: they say which object, which a caller needs."""
    with pytest.raises(lxdlib.errors.NotFound, match="instance 'nope' not found"):
        host.instances.get("nope")
    c1 = host.launch("busybox", "c1")
    with pytest.raises(lxdlib.errors.WrongState, match="'c1' is already running") as e:
        c1.start()
    assert e.value.state == "RUNNING"
