"""Everyday ``lxc`` lines beyond the seed article, as one ordered script, recorded once against
LXD 5.0.2 (``tests/data/lxd/record.py --suite cli`` writes tests/data/lxd/cli/recording.json)
and run with ``lxdlib`` by tests/integration/test_cli_shapes.py, which compares each output's
shape, its error line word for word and its YAML key order.

What it covers: the flags lxc takes that lxdlib refused (``--all`` on the state verbs,
``--project default``, ``--force-local``, ``list --all-projects``, ``exec -n``, ``start
--stateless``, ``storage info --bytes``, ``storage show --resources``, ``storage volume create
--type``, ``--target`` and ``--vm`` refused in LXD's words), ``delete -i``'s question and
refusal, the words of Go's flag parser for a number flag given a word, the refusals of a
profile's device through ``config device``, and the YAML of ``storage show|info`` and
``storage volume show``.

The lines use names of their own (``hcpc…``): the recorder clears only those. No line depends
on a network (the recording LXD's default profile has a nic, the test's has none): the
``list`` lines show no address column while an instance runs.
"""

from __future__ import annotations

from tests.seed_steps import TABLE, TEXT, YAML, Step

S = Step
_T = "--target n1"
STEPS: tuple[Step, ...] = (
    S("launch", "", "lxc launch busybox hcpc1"),
    S("init", "", "lxc init busybox hcpc2"),
    S("snapshot", "", "lxc snapshot hcpc2 s0"),
    # -- the state verbs' --all: what each picks, as LXD's bulk state change does ------------
    S("start-all", "", "lxc start --all"),
    S("list-all-started", "", "lxc list -c ns -f csv"),
    S("pause", "", "lxc pause hcpc1"),
    S("start-all-leaves-frozen", "", "lxc start --all"),
    S("list-frozen", "", "lxc list -c ns -f csv"),
    S("start-all-and-name", "", "lxc start --all hcpc2"),
    S("stop-all-stops-frozen", "", "lxc stop --all --force"),
    S("list-all-stopped", "", "lxc list -c ns -f csv"),
    S("stop-all-none-running", "", "lxc stop --all"),
    S("pause-all-none-running", "", "lxc pause --all"),
    S("start-stateless", "", "lxc start hcpc2 --stateless"),
    S("restart-all", "", "lxc restart --all --force"),
    S("pause-all", "", "lxc pause --all"),
    S("list-paused", "", "lxc list -c ns -f csv"),
    S("stop-all", "", "lxc stop --all --force"),
    # -- global flags anywhere on the line, list --all-projects --------------------------------
    S("list-all-projects", "", "lxc list --all-projects", TABLE),
    S("list-all-projects-csv", "", "lxc list --all-projects -f csv"),
    S("list-all-projects-columns", "", "lxc list --all-projects -c ns -f csv"),
    S("project-default", "", "lxc list --project default -c ns -f csv"),
    S("project-default-first", "", "lxc --project=default list -c n -f csv"),
    S("force-local", "", "lxc --force-local list -c n -f csv"),
    S("project-missing-value", "", "lxc list --project"),
    S("project-other", "", "lxc info hcpc1 --project nope"),
    # -- delete -i: the question on stdout, only `yes` goes on --------------------------------
    S("delete-i-no", "", "lxc delete -i hcpc2/s0", stdin="no\n"),
    S("delete-i-y", "", "lxc delete -i hcpc2/s0", stdin="y\n"),
    S("delete-i-eof", "", "lxc delete -i hcpc2/s0", stdin=""),
    S("delete-i-instance-no", "", "lxc delete -i hcpc2", stdin="no\n"),
    S("delete-i-yes", "", "lxc delete -i hcpc2/s0", stdin="YES\n"),
    S("snapshot-again", "", "lxc snapshot hcpc2 s0"),
    # -- exec's flags --------------------------------------------------------------------------
    S("start", "", "lxc start hcpc1"),
    S("exec-n", "", "lxc exec hcpc1 -n -- cat", stdin="not for the command\n"),
    S("exec-disable-stdin", "", "lxc exec hcpc1 --disable-stdin -- echo hi"),
    S("exec-env-bare", "", 'lxc exec hcpc1 --env HCPC_X -- sh -c "echo x$HCPC_X-"'),
    S("exec-user-word", "", "lxc exec hcpc1 --user abc -- id"),
    S("exec-group-word", "", "lxc exec hcpc1 --group abc -- id"),
    S("stop-timeout-word", "", "lxc stop hcpc1 --timeout abc"),
    # -- --target and --vm: what a root (never a cluster, containers only) cannot do ----------
    S("target-init", "", f"lxc init busybox hcpc3 {_T}"),
    S("target-info-instance", "", f"lxc info hcpc1 {_T}"),
    S("target-info-server", "", f"lxc info {_T}"),
    S("target-config-show", "", f"lxc config show hcpc2 {_T}"),
    S("target-config-get", "", f"lxc config get hcpc2 user.x {_T}"),
    S("target-config-get-server", "", f"lxc config get core.https_address {_T}"),
    S("target-copy", "", f"lxc copy hcpc2 hcpc4 {_T}"),
    S("target-move", "", f"lxc move hcpc2 hcpc4 {_T}"),
    S("target-storage-create", "", f"lxc storage create hcpcpool dir {_T}"),
    S("target-storage-show", "", f"lxc storage show default {_T}"),
    S("target-storage-get", "", f"lxc storage get default size {_T}"),
    S("target-storage-info", "", f"lxc storage info default {_T}"),
    S("target-volume-create", "", f"lxc storage volume create default hcpcv {_T}"),
    S("target-volume-show", "", f"lxc storage volume show default hcpcv {_T}"),
    S("target-volume-get", "", f"lxc storage volume get default hcpcv size {_T}"),
    S("target-volume-list", "", f"lxc storage volume list default {_T}"),
    S("target-network-create", "", f"lxc network create hcpcnet {_T}"),
    S("target-network-show", "", f"lxc network show hcpcnet {_T}"),
    S("target-network-info", "", f"lxc network info hcpcnet {_T}"),
    S("launch-vm", "", "lxc launch busybox hcpc3 --vm"),
    # -- a profile's device through config device ----------------------------------------------
    S("device-list-none", "", "lxc config device list hcpc2"),
    S("device-get-profiles", "", "lxc config device get hcpc2 root path"),
    S("device-set-profiles", "", "lxc config device set hcpc2 root size=1GiB"),
    S("device-unset-profiles", "", "lxc config device unset hcpc2 root pool"),
    S("device-remove-profiles", "", "lxc config device remove hcpc2 root"),
    # -- storage YAML ----------------------------------------------------------------------------
    S("profile-create", "", "lxc profile create hcpcp"),
    S("profile-device-list-none", "", "lxc profile device list hcpcp"),
    S("profile-delete", "", "lxc profile delete hcpcp"),
    S("storage-show", "", "lxc storage show default", YAML),
    S("storage-list-yaml", "", "lxc storage list -f yaml", YAML),
    S("storage-show-resources", "", "lxc storage show default --resources", YAML),
    S("storage-info", "", "lxc storage info default", YAML),
    S("storage-info-bytes", "", "lxc storage info default --bytes", YAML),
    S("volume-create-type", "", "lxc storage volume create default hcpcv --type filesystem"),
    S("volume-show", "", "lxc storage volume show default hcpcv", YAML),
    S("volume-create-bad-type", "", "lxc storage volume create default hcpcw --type nope"),
    S("volume-delete", "", "lxc storage volume delete default hcpcv"),
    S("delete", "", "lxc delete --force hcpc1 hcpc2"),
    S("list-none", "", "lxc list", TABLE),
)

#: Nothing of the script is left unrecorded.
NOT_RECORDED: dict[str, str] = {}

#: What the script creates (the recorder clears them before and after).
INSTANCES = ("hcpc1", "hcpc2", "hcpc3", "hcpc4")
PROFILES = ("hcpcp",)
IMAGES: tuple[str, ...] = ()
VOLUMES = ("hcpcv", "hcpcw")
NETWORKS = ("hcpcnet",)
POOLS = ("hcpcpool",)

__all__ = ["IMAGES", "INSTANCES", "NETWORKS", "NOT_RECORDED", "POOLS", "PROFILES", "STEPS",
           "TEXT", "VOLUMES"]
