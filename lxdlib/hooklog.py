"""How liblxc calls lxdlib back: the hook command line, the per-instance hook log, the stop watcher.

These sit low in the house because the instance layer writes them into liblxc configs and reads
the log when a start fails; ``lxdlib.hooks`` (the top layer) is what then runs in that process.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

HOOK_LOG = "hooks.log"


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")


def shell_quote(word: str, *, leading: bool = False) -> str:
    """``word`` as one word of a ``/bin/sh`` line, whatever it holds: liblxc runs a hook as
    ``/bin/sh -c "exec <value>"``, so a root path with a space, quote, ``;`` or ``$`` in it
    must not become shell syntax (newlines never reach here: ``render.to_text`` refuses them).
    Left as it is when it needs nothing (the usual path), else in single quotes, as
    ``shlex.quote`` does (without importing shlex on every render). ``leading``: the value's
    first word, escaped with backslashes instead — liblxc strips a value's outer quotes when
    it starts and ends with the same one, which would turn two quoted words into one."""
    if word and all(c in _SAFE for c in word):
        return word
    if leading:  # a backslash quotes any byte but newline; non-ASCII is nothing to sh
        return "".join(c if c in _SAFE or not c.isascii() else "\\" + c for c in word) or "''"
    return "'" + word.replace("'", "'\"'\"'") + "'"


def command(root: Path) -> str:
    """What liblxc runs for a hook of an instance of ``root`` (see ``lxdlib.hooks``)."""
    return f"{shell_quote(sys.executable, leading=True)} -m lxdlib.hooks {shell_quote(str(root))}"


def stop_marker_command(marker: Path) -> str:
    """The ``post-stop`` hook every instance has: no Python, one ``/bin/sh`` (about a
    millisecond at each stop). When the container stopped for good (liblxc sets
    ``LXC_TARGET=stop``; ``reboot`` when its init rebooted, and liblxc starts it again), it
    writes the init's pid into ``marker`` (``journal.STOPPED_INSIDE``): the record learns of a
    ``poweroff`` from inside at the next call, as LXD's stop hook records it at once.
    An unset target counts as a stop. Always exits 0: a failing post-stop hook would turn a
    reboot into a stop."""
    script = f'[ "$LXC_TARGET" = reboot ] || echo "$LXC_PID" > {shell_quote(str(marker))}; exit 0'
    return f"/bin/sh -c {shell_quote(script)}"


def write_log(root: Path, name: str, text: str) -> None:
    """One stamped line in the instance's hook log (hooks have no caller to report to)."""
    path = root / "containers" / name / HOOK_LOG
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    try:
        with open(path, "a") as f:
            f.write(f"{stamp} {text}\n")
    except OSError:
        pass


def log_tail(root: Path, name: str, lines: int = 15) -> str:
    """The last lines of the hook log, shown with a start that liblxc aborted."""
    try:
        return "\n".join((root / "containers" / name / HOOK_LOG).read_text().splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def spawn_watcher(root: Path, name: str, pid: int) -> None:
    """Start one detached watcher per container run (a pid file keeps it to one)."""
    pidfile = root / "containers" / name / "devices" / "stop-watcher.pid"
    try:
        old = int(pidfile.read_text().split()[0])
        if f"hooks {root} watch {name} ".encode() in Path(f"/proc/{old}/cmdline").read_bytes() \
                .replace(b"\0", b" "):
            return
    except (OSError, ValueError, IndexError):
        pass
    # here, not at the top: every render of a liblxc config (`config set`…) imports this module
    # for ``command``, and subprocess (with selectors, signal and locale) costs a command ~2.5 ms
    import subprocess

    # `setsid --fork` detaches it from us (reparented to init: no zombie in the caller); it
    # writes its own pid file.
    subprocess.run(["setsid", "--fork", sys.executable, "-m", "lxdlib.hooks", str(root), "watch",
                    name, str(pid)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, close_fds=True, check=True)
