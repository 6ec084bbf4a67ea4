"""Interactive exec on a terminal.

A shell needs a pty that is its controlling terminal (for Ctrl-C, job control, window size).
python3-lxc's attach cannot allocate one, but liblxc's own ``lxc-attach`` does exactly that when
its stdin and stdout are terminals, so the terminal path runs it; pipes use ``Instance.exec``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from .errors import TYPE_CHECKING, ToolMissing, WrongState

if TYPE_CHECKING:
    from .instance import InstanceCore


def exec_pty(inst: InstanceCore, command: Sequence[str], *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, user: int = 0, group: int = 0) -> int:
    tool = shutil.which("lxc-attach")
    if tool is None:
        raise ToolMissing("lxc-attach (Debian package lxc) is needed for interactive exec")
    if inst.state != "RUNNING":
        raise WrongState(f"instance {inst.name!r} is not running", state=inst.state)
    argv = [tool, "-P", str(inst.ctx.paths.lxcpath), "-n", inst.name, "--clear-env",
            "-u", str(user), "-g", str(group)]
    for k, v in inst._exec_env(env, user).items():
        argv += ["-v", f"{k}={v}"]
    workdir = cwd if cwd is not None else ("/root" if user == 0 else "/")
    # lxc-attach has no cwd option: a tiny sh wrapper changes directory, then execs the command.
    argv += ["--", "/bin/sh", "-c", 'cd "$0" 2>/dev/null; exec "$@"', workdir, *command]
    return subprocess.call(argv)
