"""The seed article's commands as one ordered script, run against LXD's ``lxc`` once to record
its outputs (tests/data/lxd/record.py) and against ``lxdlib`` by the shape test
(tests/integration/test_seed_shapes.py), so both sides run exactly the same lines.

Substitutions, the same on both sides: the article's remote images (``ubuntu:``, ``images:…``,
``ubuntu-daily:16.04``) become the local ``busybox`` image (LXD refuses plain-http image servers
and this machine has no network), placeholders (<container>, <snapshot name>, …) get the names
the article uses elsewhere, the proxy device listens on a free port given at run time. The
article's lines that only work against a real image server are listed in ``NOT_RECORDED`` with
the reason; tests/integration/test_seed_commands.py runs those against a local server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.integration.seed_profiles import DOCKER_PROFILE

#: How a step's stdout is compared (tests/output_shape.py): a boxed table, YAML, ``info``'s
#: indented ``Key: value`` lines, or plain text compared line by line once normalised.
Format = str
TABLE, YAML, INFO, TEXT = "table", "yaml", "info", "text"

#: Earlier results by step id, for steps whose stdin is an earlier step's output.
Earlier = Mapping[str, Mapping[str, object]]


@dataclasses.dataclass(frozen=True)
class Step:
    id: str           # stable key of the recording and of the allow-list
    article: str      # the line as the article has it
    line: str         # what is run; "{port}" and "{fp12}" are filled in at run time
    fmt: Format = TEXT
    stdin: str | Callable[[Earlier], str] | None = None
    before: Callable[[Path], None] | None = None  # prepares the working directory


def _write_local(cwd: Path) -> None:
    (cwd / "local.txt").write_text("pushed\n")


def _build_random(cwd: Path) -> None:
    # Another compression of the busybox image: another fingerprint, so a second image.
    from lxdlib.imagestore.busybox import build_busybox_image
    build_busybox_image(cwd / "random.tar.xz", compression="xz")


def _stdout(step_id: str) -> Callable[[Earlier], str]:
    return lambda earlier: str(earlier[step_id]["stdout"])


def _with_user_key(earlier: Earlier) -> str:
    return str(earlier["config-show"]["stdout"]).replace("config:", "config:\n  user.x: y", 1)


S = Step
STEPS: tuple[Step, ...] = (
    # -- instances ---------------------------------------------------------------------------
    S("launch", "lxc launch ubuntu: aliasName", "lxc launch busybox aliasName"),
    S("launch-fingerprint", "lxc launch images:d2f4d8cc3f1a apline-test",
      "lxc launch {fp12} apline-test"),
    S("init", "lxc init ubuntu:", "lxc init busybox"),
    S("list", "lxc list", "lxc list", TABLE),
    S("list-fast", "lxc list --fast", "lxc list --fast", TABLE),
    S("info", "lxc info apline-test", "lxc info apline-test", INFO),
    S("stop", "lxc stop apline-test", "lxc stop apline-test"),
    S("start", "lxc start apline-test", "lxc start apline-test"),
    S("stop-force", "lxc stop <container> --force", "lxc stop apline-test --force"),
    S("start-again", "lxc start apline-test", "lxc start apline-test"),
    S("restart", "lxc restart apline-test", "lxc restart apline-test"),
    S("restart-force", "lxc restart <container> --force", "lxc restart apline-test --force"),
    S("pause", "lxc pause apline-test", "lxc pause apline-test"),
    S("start-resumes", "lxc start apline-test", "lxc start apline-test"),
    # -- profiles and config -----------------------------------------------------------------
    S("profile-list", "lxc profile list", "lxc profile list", TABLE),
    S("profile-show", "lxc profile show default", "lxc profile show default", YAML),
    S("profile-edit", "lxc profile edit default", "lxc profile edit default",
      stdin=_stdout("profile-show")),
    S("profile-create-p1", "lxc profile create p1", "lxc profile create p1"),
    S("profile-create-p2", "lxc profile create p2", "lxc profile create p2"),
    S("profile-apply", "lxc profile apply <container> <profile1>,<profile2>,<profile3>,...",
      "lxc profile apply apline-test default,p1,p2"),
    S("config-show", "lxc config show apline-test", "lxc config show apline-test", YAML),
    S("config-edit", "lxc config edit apline-test", "lxc config edit apline-test",
      stdin=_with_user_key),
    S("config-show-edited", "lxc config show apline-test", "lxc config show apline-test", YAML),
    S("config-show-expanded", "lxc config show --expanded apline-test",
      "lxc config show --expanded apline-test", YAML),
    # -- exec --------------------------------------------------------------------------------
    S("exec-bash", "lxc exec <container> bash", "lxc exec aliasName bash"),
    S("exec-sh", "lxc exec apline-test sh", "lxc exec apline-test sh", stdin="echo from-sh\n"),
    # -- files -------------------------------------------------------------------------------
    S("exec-write", "(prepares /root/1.txt)",
      "lxc exec aliasName -- sh -c 'echo one > /root/1.txt'"),
    S("file-pull", "lxc file pull immense-condor/root/1.txt .",
      "lxc file pull aliasName/root/1.txt ."),
    S("file-pull-stdout", "lxc file pull immense-condor/etc/hosts -",
      "lxc file pull aliasName/etc/hosts -"),
    S("file-push", "lxc file push <source> <container>/<path>",
      "lxc file push local.txt aliasName/root/local.txt", before=_write_local),
    S("exec-cat-pushed", "(checks the push)", "lxc exec aliasName -- cat /root/local.txt"),
    S("file-edit", "lxc file edit <container>/<path>", "lxc file edit aliasName/root/local.txt",
      stdin="edited\n"),
    S("exec-cat-edited", "(checks the edit)", "lxc exec aliasName -- cat /root/local.txt"),
    # -- snapshots ---------------------------------------------------------------------------
    S("snapshot", "lxc snapshot <container>", "lxc snapshot aliasName"),
    S("snapshot-named", "lxc snapshot <container> <snapshot name>",
      "lxc snapshot aliasName snap-xsw"),
    S("restore", "lxc restore <container> <snapshot name>", "lxc restore aliasName snap0"),
    S("snapshot-rename", "lxc move <container>/<snapshot name> <container>/<new snapshot name>",
      "lxc move aliasName/snap0 aliasName/first"),
    S("copy-snapshot", "lxc copy immense-condor/snap-xsw xsw-u",
      "lxc copy aliasName/snap-xsw xsw-u"),
    S("snapshot-delete", "lxc delete <container>/<snapshot name>", "lxc delete aliasName/first"),
    # -- copy and move -----------------------------------------------------------------------
    S("copy", "lxc copy <source container> <destination container>", "lxc copy xsw-u xsw-copy"),
    S("move", "lxc move <old name> <new name>", "lxc move xsw-copy xsw-moved"),
    # -- limits (the article's `lxc config xsw-u limits.cpu 1` is a typo for `config set`) ---
    S("config-typo", "lxc config xsw-u limits.cpu 1", "lxc config xsw-u limits.cpu 1"),
    S("config-set-memory", "lxc config set xsw-u limits.memory 256MB",
      "lxc config set xsw-u limits.memory 256MB"),
    # -- image management --------------------------------------------------------------------
    S("image-import-alias", "lxc image import <tarball> --alias random-image",
      "lxc image import random.tar.xz --alias random-image", before=_build_random),
    S("image-list", "lxc image list", "lxc image list", TABLE),
    S("image-list-arch", "lxc image list amd64", "lxc image list amd64", TABLE),
    S("image-info", "lxc image info ubuntu", "lxc image info busybox", INFO),
    S("image-edit", "lxc image edit <alias or fingerprint>", "lxc image edit random-image",
      stdin="properties: {os: ubuntu, note: edited}\n"),
    S("image-list-property", "lxc image list os=ubuntu", "lxc image list os=ubuntu", TABLE),
    S("image-export", "lxc image export old-ubuntu .", "lxc image export random-image ."),
    S("image-delete", "lxc image delete <alias or fingerprint>", "lxc image delete random-image"),
    # -- publish -----------------------------------------------------------------------------
    S("launch-for-publish", "lxc launch ubuntu:14.04 my-container",
      "lxc launch busybox my-container"),
    S("exec-change", "lxc exec my-container bash (<do whatever change you want>)",
      "lxc exec my-container -- sh -c 'echo changed > /root/changed'"),
    S("publish", "lxc publish my-container --alias my-new-image",
      "lxc publish my-container --alias my-new-image --force"),
    S("exec-change-more", "(changes it again)",
      "lxc exec my-container -- sh -c 'echo more > /root/more'"),
    S("snapshot-for-publish", "(makes some-snapshot)", "lxc snapshot my-container some-snapshot"),
    S("publish-snapshot", "lxc publish my-container/some-snapshot --alias some-image",
      "lxc publish my-container/some-snapshot --alias some-image"),
    S("launch-published", "(launches the published image)",
      "lxc launch my-new-image from-published"),
    S("exec-cat-published", "(checks the published content)",
      "lxc exec from-published -- cat /root/changed"),
    # -- port mapping ------------------------------------------------------------------------
    S("device-add-proxy",
      "lxc config device add ubuntu-test sshport22331 proxy listen=tcp:0.0.0.0:22331 "
      "connect=tcp:127.0.0.1:22",
      "lxc config device add apline-test sshport{port} proxy listen=tcp:127.0.0.1:{port} "
      "connect=tcp:127.0.0.1:22"),
    S("config-show-expanded-proxy", "(shows the proxy device)",
      "lxc config show --expanded apline-test", YAML),
    # -- docker profile (the article's heredoc through profile edit) -------------------------
    S("profile-create-docker", "lxc profile create docker", "lxc profile create docker"),
    S("profile-edit-docker", "lxc profile edit docker", "lxc profile edit docker",
      stdin=DOCKER_PROFILE),
    S("launch-docker", "lxc launch ubuntu-daily:16.04 docker -p default -p docker",
      "lxc launch busybox docker -p default -p docker"),
    S("config-set-privileged", "lxc config set docker security.privileged true",
      "lxc config set docker security.privileged true"),
    S("restart-docker", "lxc restart docker", "lxc restart docker"),
    # -- the article's deletes ---------------------------------------------------------------
    S("delete-running", "lxc delete apline-test", "lxc delete apline-test"),
    S("delete-force", "lxc delete apline-test --force", "lxc delete apline-test --force"),
    S("stop-alias", "(stops aliasName)", "lxc stop aliasName"),
    S("delete", "lxc delete <container>", "lxc delete aliasName"),
)

#: Article lines with no recording, and why.
NOT_RECORDED: dict[str, str] = {
    "lxc image list ubuntu:": "needs an image server: LXD refuses plain-http remotes and this "
                              "machine has no network (test_seed_commands.py runs it locally)",
    "lxc image list images:": "needs an image server (as above)",
    "lxc image copy ubuntu:14.04 local:": "needs an image server (as above)",
    "lxc image copy ubuntu:12.04 local: --alias old-ubuntu": "needs an image server (as above)",
    "lxc image copy ubuntu:15.10 local: --copy-aliases": "needs an image server (as above)",
    "lxc image copy images:gentoo/current/amd64 local: --alias gentoo --auto-update":
        "needs an image server (as above)",
    "lxc image import https://dl.stgraber.org/lxd --alias busybox-amd64":
        "needs LXD's URL import protocol over https (as above)",
    "lxc image import <tarball>": "the same tarball as the --alias import: recorded once",
}

#: Instances and profiles the script creates (the recorder clears them before and after).
INSTANCES = ("aliasName", "apline-test", "xsw-u", "xsw-moved", "my-container", "from-published",
             "docker")
PROFILES = ("p1", "p2", "docker")
IMAGES = ("random-image", "my-new-image", "some-image")
