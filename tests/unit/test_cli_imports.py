"""What each command line imports: nothing it does not use. Start-up time is what a CLI
invocation mostly costs, and it is set by the imports, so these tests pin them (and time
nothing): ``--version`` and ``--help`` import no command module, ``list`` on an empty root
neither the façade nor the listing, a ``launch`` from a local image no remote-image code
(HTTP, TLS, simplestreams), and opening a root (``lxdlib.Host``, every verb on an instance) none
of the image store, the pool records and drivers, the networks' manager or other hosts' code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REMOTE = {"ssl", "http.client", "urllib.request", "lxdlib.imagestore.simplestreams",
          "lxdlib.images.cache"}
COMMAND_MODULES = {f"lxdlib.cli.{m}" for m in (
    "instances", "configcmd", "images", "storage", "profiles", "networks", "remotes",
    "hostcmd", "backup", "files", "console", "completion")}

# What opening a root must not import (``Host(root)``, and every verb on one instance up to its
# work): each is loaded where an operation uses it. The image store and its tarballs (tarfile,
# gzip) by ``host.images`` and the commands on images; the pool records and the drivers when a
# pool is opened (only that pool's driver); the networks' manager when a nic or network is
# touched; the migration, ssh and wire code only for another host.
OFF_THE_ROOT_PATH = REMOTE | {
    "tarfile", "gzip", "jinja2", "lxdlib.jinjasandbox",
    "lxdlib.images", "lxdlib.imagestore.store", "lxdlib.imagestore.remotes",
    "lxdlib.imagestore.tarball", "lxdlib.imagestore.busybox", "lxdlib.imagestore.simplestreams",
    "lxdlib.storage.pools", "lxdlib.storage.btrfs", "lxdlib.storage.zfs",
    "lxdlib.network.manager", "pyroute2", "lxdlib.devices", "lxdlib.launcher", "lxdlib.backup",
    "lxdlib.migrate", "lxdlib.sshhost", "lxdlib.wire", "lxdlib.sendstream", "lxdlib.serve"}

# What neither opening a root nor looking an instance up needs, loaded by the operations that
# use them: python3-lxc (its core ``_lxc``; its ``lxc`` package, which imports ``subprocess``,
# by none), ``subprocess`` for the host tools and the Unicode tables for names beyond ASCII
NOT_TO_OPEN_A_ROOT = {"lxc", "_lxc", "subprocess", "unicodedata"}

#: an alias file no command finds
NO_ALIASES = "/nonexistent/lxdlib-test-cli-imports/config.yml"

# runs main() in a fresh interpreter and prints its exit status and the modules it imported
_RUN = """
import json, sys
from lxdlib.cli import main as m
{patch}
try:
    rc = m.main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print(json.dumps({{"rc": rc, "modules": sorted(sys.modules)}}))
"""


def imported(*argv: str, patch: str = "", rc: int | None = None,
             env: dict[str, str] | None = None) -> set[str]:
    """The modules a command line imported; ``rc``: the exit status it must have (checked, so
    that a mistyped command line fails here instead of importing less than it should);
    ``env``: its environment, if not this process's."""
    if env is None:
        # the user's alias file (~/.config/lxdlib/config.yml) loads YAML at every command: a
        # file of that name left on this machine would decide what a command imports here
        env = dict(os.environ, LXDLIB_CONF=NO_ALIASES)
    r = subprocess.run([sys.executable, "-c", _RUN.format(patch=patch), *argv],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    if rc is not None:
        assert out["rc"] == rc, r.stderr
    return set(out["modules"])


def lxdlib_modules(mods: set[str]) -> set[str]:
    return {m for m in mods if m.startswith("lxdlib")}


def test_version_imports_nothing_more() -> None:
    mods = imported("--version")
    assert lxdlib_modules(mods) <= {"lxdlib", "lxdlib.errors", "lxdlib.cli", "lxdlib.cli.main",
                                    "lxdlib.cli.common", "lxdlib.version"}
    assert not mods & (REMOTE | {"yaml", "attrs", "logging"})


@pytest.mark.parametrize("argv", [["--help"], [], ["help"]])
def test_help_imports_no_command(argv: list[str]) -> None:
    mods = imported(*argv)
    assert not mods & (REMOTE | COMMAND_MODULES | {"yaml", "attrs", "lxdlib.host", "logging"})
    assert not mods & STDLIB_LATER


def _locale_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return {**env, "LXDLIB_CONF": NO_ALIASES, **values}


@pytest.mark.parametrize(("values", "looked"), [
    ({}, False), ({"LANG": "C.UTF-8"}, False), ({"LC_ALL": "POSIX", "LANG": "de_DE.UTF-8"}, False),
    ({"LANGUAGE": "C:POSIX"}, False), ({"LANG": "de_DE.UTF-8"}, True),
    ({"LANGUAGE": "fr:C", "LANG": "C"}, True)])
def test_help_in_c_locale_looks_for_no_catalog(values: dict[str, str], looked: bool) -> None:
    """argparse's messages can only be translated outside the C locale: there, no catalog is
    looked for and ``locale`` is not imported (the languages are read as ``gettext.find``
    reads them: the first variable set wins)."""
    mods = imported("list", "--help", env=_locale_env(**values), rc=0)
    assert ("locale" in mods) is looked


@pytest.mark.parametrize(("command", "module"), [
    ("profile", "profiles"), ("image", "images"), ("config", "configcmd"), ("file", "files"),
    ("network", "networks"), ("storage", "storage"), ("remote", "remotes"),
    ("console", "console"), ("launch", "instances")])
def test_one_command_imports_its_module_only(command: str, module: str) -> None:
    """A command's help needs its own module; none imports the Host, YAML or remote code at
    its top (they are imported by the verbs that use them)."""
    mods = imported(command, "--help")
    assert mods & COMMAND_MODULES == {f"lxdlib.cli.{module}"}
    assert not mods & (REMOTE | {"lxdlib.host", "yaml"})


# what the quickest command lines (``--help``, ``list`` of an empty root) do without: ~10 ms of
# a 20 ms start, imported where they are used (logging: by ``lxdlib.logs`` once a record can go
# somewhere)
STDLIB_LATER = {"typing", "pathlib", "shutil", "ctypes", "datetime", "logging", "uuid"}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the command runs as root")


@needs_root
def test_list_of_empty_root(tmp_path: Path) -> None:
    (tmp_path / "containers").mkdir()
    mods = imported("--root", str(tmp_path), "list")
    assert mods & COMMAND_MODULES == {"lxdlib.cli.instances"}
    assert not mods & (REMOTE | {"lxdlib.host", "lxdlib.listing", "lxc", "_lxc", "attrs"})
    assert not mods & STDLIB_LATER
    assert "lxdlib.progress" not in mods  # by the verbs that draw a progress line


@needs_root
def test_list_imports_no_attrs(tmp_path: Path) -> None:
    """A listing's classes are ``lxdlib.values.Value`` classes, not attrs ones: attrs (with
    ``inspect``) would cost every ``list`` 12 to 19 ms of its start (see ``lxdlib.values``)."""
    from lxdlib import record, state
    paths = state.Paths.at(tmp_path)
    paths.ensure()
    paths.instance_dir("c1").mkdir()
    record.save(paths, record.InstanceRecord("c1", "x86_64", record.now(), "default"))
    mods = imported("--root", str(tmp_path), "list", "--format", "csv", rc=0)
    # it listed, and asked liblxc about the stopped instance's config
    assert {"lxdlib.listing", "lxdlib.record", "lxdlib.livestate", "_lxc"} <= mods
    assert not mods & {"lxc", "subprocess"}  # python3-lxc's core only (lxdlib.runtime)
    assert not mods & {"attr", "attrs", "inspect", "lxdlib.host", "typing"}


def test_lxdlib_imports_no_attrs() -> None:
    """No lxdlib module imports attrs (at any depth: in a function too): its value classes are
    ``lxdlib.values.Value`` classes, since attrs with ``inspect`` cost each command 20 to 25 ms
    of its start (``lxdlib.values``)."""
    import ast
    root = Path(__file__).resolve().parents[2] / "lxdlib"
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(root)}: {n}" for n in names
                      if n.split(".")[0] in ("attr", "attrs", "dataclasses")]
    assert found == []


def test_lxdlib_imports_typing_only_for_the_type_checker() -> None:
    """No lxdlib module imports ``typing`` when it is loaded, only under ``if TYPE_CHECKING:``
    (``lxdlib.errors.TYPE_CHECKING``) or inside a function that needs it at run time (a
    ``cast``): ``typing`` costs every command ~3 ms of its start (``lxdlib.errors``). Ruff's
    TC004 keeps names imported for the checker out of run-time code."""
    import ast
    root = Path(__file__).resolve().parents[2] / "lxdlib"
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level, outside `if TYPE_CHECKING:`
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(root)}:{node.lineno}" for n in names
                      if n.split(".")[0] == "typing"]
    assert found == []


@needs_root
def test_local_launch_imports_no_remote_code(tmp_path: Path) -> None:
    """Everything a local ``launch`` runs before creating the instance: the parser, the
    Host, the image reference resolved. The creation itself is cut off here (it needs
    liblxc and a pool: the integration tests run it)."""
    patch = """
import lxdlib.host
def create(self, image, name, **kw):
    assert image == "busybox", image
    raise SystemExit(0)
lxdlib.host.Host.create = create
"""
    mods = imported("--root", str(tmp_path), "-q", "launch", "busybox", "c1", patch=patch, rc=0)
    assert {"lxdlib.images.collection", "lxdlib.imagestore.store"} <= mods  # it resolved
    assert not mods & REMOTE
    assert mods & COMMAND_MODULES == {"lxdlib.cli.instances"}


# what a verb on one instance that renders no image template, copies nothing and touches no image
# must not import: each of these loads only in the functions that use it
NOT_FOR_ONE_INSTANCE = {"jinja2", "markupsafe", "lxdlib.jinjasandbox", "lxdlib.files", "hashlib",
                        "secrets", "lxdlib.hostlimits", "lxdlib.templates", "lxdlib.transfer",
                        "logging", "ctypes", "uuid", "tempfile", "typing",
                        # by ``Host.profiles`` and the profile edits: ~0.8 ms of each start
                        "lxdlib.profile_apply",
                        # the recoverers of operations above the instance core, imported when
                        # an intent of theirs is found (``journal.register_loader``), and the
                        # modules of those operations, by the verbs that run them: ~0.7 ms
                        "lxdlib.snapshots", "lxdlib.recovery", "lxdlib.copy", "lxdlib.criu",
                        # a signal sent (``proctree.kill_tree``, ``pidfd.send``): ~0.4 ms; a
                        # thread started (``threading``: ~0.5 ms; the few thread-locals and
                        # locks are ``_thread``'s, see ``lxdlib.state``)
                        "signal", "threading",
                        # the key and device rules, by what writes a config: ~1 ms
                        "lxdlib.config.schema", "lxdlib.config.devices"}


@needs_root
@pytest.mark.parametrize("argv", [
    ["info", "c1"], ["exec", "c1", "--", "true"], ["config", "set", "c1", "limits.memory", "1GiB"],
    ["snapshot", "c1"], ["start", "c1"], ["stop", "c1"], ["delete", "c1"], ["copy", "c1", "c2"]])
def test_instance_verb_imports_no_template_engine(tmp_path: Path, argv: list[str]) -> None:
    """``info``, ``exec``, ``config set``… open the root and look the instance up (here it
    does not exist: the imports are those of the command up to its work, liblxc's included),
    without loading what only other verbs use, such as Jinja2 for image templates, nor the
    image store, pool drivers, networks or other hosts' code."""
    (tmp_path / "containers").mkdir()
    mods = imported("--root", str(tmp_path), *argv, rc=1)  # "Error: … not found"
    assert {"lxdlib.host", "lxdlib.instance"} <= mods  # it did open the root
    assert not mods & (NOT_FOR_ONE_INSTANCE | OFF_THE_ROOT_PATH | NOT_TO_OPEN_A_ROOT)


def test_the_hook_command_line_imports_no_subprocess() -> None:
    """Every render of a liblxc config (``config set``, ``start``…) imports ``lxdlib.hooklog``
    for the hook's command line; ``subprocess`` (with ``selectors``, ``signal`` and ``locale``,
    ~2.5 ms of a start) loads only when the stop watcher is spawned."""
    code = ("import json, sys\nfrom lxdlib import hooklog\nhooklog.command(sys.argv[1])\n"
            "print(json.dumps(sorted(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code, "/var/lib/lxdlib"], capture_output=True,
                       text=True, timeout=60, check=True)
    mods = set(json.loads(r.stdout.splitlines()[-1]))
    assert not mods & {"subprocess", "selectors", "signal", "locale"}


# opens a root in a fresh interpreter and prints the modules imported
_OPEN = """
import json, sys
import lxdlib
host = lxdlib.Host(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def test_opening_a_root_imports_only_the_root_path(tmp_path: Path) -> None:
    """``import lxdlib.host`` and ``Host(root)``: what every command on a root pays first."""
    r = subprocess.run([sys.executable, "-c", _OPEN, str(tmp_path)], capture_output=True,
                       text=True, timeout=60, check=True)
    mods = set(json.loads(r.stdout.splitlines()[-1]))
    assert {"lxdlib.host", "lxdlib.context"} <= mods
    assert not mods & (NOT_FOR_ONE_INSTANCE | OFF_THE_ROOT_PATH | NOT_TO_OPEN_A_ROOT)


@pytest.mark.parametrize(("argv", "command", "expected"), [
    (None, ["exec", "c1", "--", "true"], True),  # the process's own command line: it exits
    (None, ["config", "set", "c1", "limits.memory", "1GB"], True),
    (["exec", "c1", "--", "true"], ["exec", "c1", "--", "true"], False),  # a caller goes on
    (None, ["serve", "--stdio"], False),  # a session of many requests: a long-lived process
])
def test_only_a_one_verb_process_skips_long_lived_work(
        argv: list[str] | None, command: list[str], expected: bool) -> None:
    """``state.SHORT_LIVED`` (no exchange through ctypes, liblxc's leaked pidfd left to the
    exit) holds only for a process that ends with its verb: never for ``serve``, whose every
    exec would otherwise leave a pidfd behind for the whole ssh session."""
    from lxdlib.cli.main import build_parser, exits_after, split_exec
    head, _ = split_exec(command)
    args = build_parser(command[0]).parse_args(head)
    assert exits_after(argv, args) is expected
