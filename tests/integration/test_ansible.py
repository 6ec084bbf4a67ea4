"""The Ansible collection (ansible_collections/lxdlib/containers) driving real lxdlib roots with
real playbooks: two roots on this machine are two inventory hosts (ansible_connection=local
and a ``lxdlib_root`` host var), the inventory plugin lists their instances, and the connection
plugin runs Ansible's own modules inside them. site.yml must change nothing on its second
run; teardown.yml likewise.

The playbooks are tests/integration/ansible/*.yml; ansible-core comes from the project's
environment (the ``test`` extras). CROSS-HOST MOVE: site.yml has a marked place for the play that
moves an instance from hostA to hostB; ``test_site_builds_then_changes_nothing`` then checks
where each instance lives (``set(listed) == {name}``) and must follow the move."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cleanup import teardown_root
from tests.integration import background

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "ansible"
BIN = Path(sys.executable).parent
HOSTS = ("hostA", "hostB")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.M)

if not (BIN / "ansible-playbook").exists():
    pytest.skip("ansible-core is not installed in this environment (pip install -e '.[test]')",
                allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)


class Fleet:
    """Two roots, an inventory naming them, and the environment to run Ansible with."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.roots = {h: base / h / "root" for h in HOSTS}
        self.fetched = base / "fetched"
        # the bridges the playbooks make are host-wide: a name of this run's own
        self.bridge_prefix = f"a{secrets.token_hex(2)}"
        self.inventory = base / "inventory"
        self.env = dict(os.environ,
                        ANSIBLE_COLLECTIONS_PATH=str(REPO),
                        ANSIBLE_INVENTORY_ENABLED="yaml,lxdlib.containers.lxdlib",
                        ANSIBLE_PIPELINING="true",
                        ANSIBLE_HOME=str(base / "ansible-home"),
                        ANSIBLE_LOCAL_TEMP=str(base / "ansible-tmp"),
                        ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                        ANSIBLE_HOST_KEY_CHECKING="false",
                        LC_ALL="C.UTF-8", PATH=f"{BIN}:{os.environ.get('PATH', '')}")
        self.env.pop("LXDLIB_ROOT", None)

    def write_inventory(self) -> None:
        self.inventory.mkdir(parents=True, exist_ok=True)
        hosts = {"lxdlib_hosts": {
            "hosts": {h: {"lxdlib_root": str(r)} for h, r in self.roots.items()},
            "vars": {"ansible_connection": "local",
                     "ansible_python_interpreter": sys.executable}}}
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        (self.inventory / "fleet.lxdlib.yml").write_text(yaml.safe_dump(self.plugin_config()))

    def plugin_config(self, **extra: object) -> dict[str, object]:
        config: dict[str, object] = {
            "plugin": "lxdlib.containers.lxdlib",
            "command": str(BIN / "lxdlib"),
            "sources": [{"name": h, "root": str(r)} for h, r in self.roots.items()],
            # busybox has no Python: the ansible-py profile lends the host's /usr
            "compose": {"ansible_python_interpreter": "'/usr/bin/python3'"},
            "keyed_groups": [{"key": "lxdlib_user.role", "prefix": "role"}],
        }
        config.update(extra)
        return config

    def playbook(self, name: str, *args: str, check: bool = True
                 ) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, int]]]:
        cmd = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(PLAYBOOKS / name),
               "-e", f"fetch_dir={self.fetched}", "-e", f"bridge_prefix={self.bridge_prefix}",
               *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=900,
                           cwd=self.base)
        if check and r.returncode != 0:
            raise AssertionError(f"{name} {args} failed ({r.returncode}):\n"
                                 f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}")
        return r, recap(r.stdout)

    def lxdlib(self, host: str, *args: str) -> str:
        return subprocess.run([str(BIN / "lxdlib"), "--root", str(self.roots[host]), *args],
                              capture_output=True, text=True, check=True, timeout=120,
                              env=self.env).stdout


def recap(out: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, unreachable, failed}."""
    found = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)),
                          "unreachable": int(m.group(4)), "failed": int(m.group(5))}
             for m in RECAP.finditer(out.split("PLAY RECAP", 1)[-1])}
    assert found, f"no PLAY RECAP in:\n{out[-3000:]}"
    return found


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    base = Path(tempfile.mkdtemp(prefix="lxdlib-ansible-", dir="/var/tmp"))
    base.chmod(0o711)  # an unprivileged container's root walks down to its rootfs
    f = Fleet(base)
    for r in f.roots.values():
        r.mkdir(parents=True)
        r.parent.chmod(0o711)
    f.write_inventory()
    try:
        yield f
    finally:
        for r in f.roots.values():
            teardown_root(r)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def converged(fleet: Fleet) -> Fleet:
    """site.yml run twice: the first run builds everything, the second must change nothing."""
    started = time.monotonic()
    _, counts = fleet.playbook("site.yml")
    took = time.monotonic() - started
    for h in HOSTS:
        assert counts[h]["changed"] >= 8 and counts[h]["failed"] == 0, counts
    for inst in ("ansit-hosta", "ansit-hostb"):
        assert counts[inst]["failed"] == 0 and counts[inst]["changed"] >= 2, counts
    started = time.monotonic()
    second, counts = fleet.playbook("site.yml")
    again = time.monotonic() - started
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), \
        (counts, second.stdout[-6000:])
    assert set(counts) == {*HOSTS, "ansit-hosta", "ansit-hostb"}, counts
    print(f"\nsite.yml: first run {took:.1f}s, second run {again:.1f}s")
    return fleet


def test_site_builds_then_changes_nothing(converged: Fleet) -> None:
    f = converged
    for h in HOSTS:
        name = f"ansit-{h.lower()}"
        listed = {e["name"]: e for e in json.loads(f.lxdlib(h, "list", "--format", "json"))}
        assert set(listed) == {name}, listed  # each root holds only its own instance
        entry = listed[name]
        assert entry["status"] == "Running"
        assert entry["profiles"] == ["default", "ansible-py"]
        assert entry["config"]["user.role"] == "web" and entry["config"]["user.host"] == h
        assert entry["devices"]["data"]["source"] == "data"
        assert [s["name"] for s in entry["snapshots"]] == ["configured"]
        assert entry["snapshots"][0]["expires_at"]
        # written inside through the connection plugin, fetched and pulled back out
        text = f"written inside {name} of {h}\n"
        assert (f.fetched / name / "root" / "inside.txt").read_text() == text
        assert (f.fetched / f"{h}-pulled.txt").read_text() == text
        assert f.lxdlib(h, "exec", name, "--", "cat", "/data/hello") == f"hello from {name}\n"


def test_check_mode_reports_and_changes_nothing(converged: Fleet) -> None:
    f = converged
    r, counts = f.playbook("site.yml", "--check", "--diff", "-e", "role=db")
    for h in HOSTS:
        assert counts[h]["changed"] == 1, counts  # the instance's user.role, only reported
        assert f.lxdlib(h, "config", "get", f"ansit-{h.lower()}", "user.role").strip() == "web"
    assert '"user.role": "web"' in r.stdout and '"user.role": "db"' in r.stdout  # the diff


def trusted(value: object) -> object:
    """ansible-inventory's JSON with Ansible 2.19's ``{"__ansible_unsafe": v}`` wrappers
    (what an inventory plugin reads from a host is never templated) taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


def inventory_list(f: Fleet, inventory: Path) -> dict[str, object]:
    r = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
                       capture_output=True, text=True, env=f.env, timeout=300, check=True)
    data = trusted(json.loads(r.stdout))
    assert isinstance(data, dict)
    return data


def test_inventory_plugin_lists_both_hosts(converged: Fleet) -> None:
    f = converged
    started = time.monotonic()
    data = inventory_list(f, f.inventory / "fleet.lxdlib.yml")
    wall = (time.monotonic() - started) * 1000
    hostvars = data["_meta"]["hostvars"]  # type: ignore[index]
    assert set(hostvars) == {"ansit-hosta", "ansit-hostb"}
    for h in HOSTS:
        hv = hostvars[f"ansit-{h.lower()}"]
        assert hv["ansible_connection"] == "lxdlib.containers.lxdlib"
        assert hv["lxdlib_root"] == str(f.roots[h]) and hv["lxdlib_source"] == h
        assert hv["lxdlib_status"] == "Running"
        assert hv["lxdlib_profiles"] == ["default", "ansible-py"]
        assert hv["lxdlib_image"]["os"] == "busybox"
        assert hv["lxdlib_user"] == {"host": h, "managed-by": "ansible", "role": "web"}
    groups = {g: set(v.get("hosts", [])) for g, v in data.items()  # type: ignore[union-attr]
              if isinstance(v, dict) and g != "_meta"}
    both = {"ansit-hosta", "ansit-hostb"}
    assert groups["lxdlib_profile_ansible_py"] == both
    assert groups["lxdlib_os_busybox"] == both
    assert groups["lxdlib_status_running"] == both
    assert groups["role_web"] == both
    assert groups["lxdlib_source_hosta"] == {"ansit-hosta"}
    # each source's listing time, as the plugin measured it
    times = {h: hostvars[f"ansit-{h.lower()}"]["lxdlib_inventory_ms"] for h in HOSTS}
    print(f"\ninventory: per host {times} ms; ansible-inventory wall time {wall:.0f} ms")
    assert all(0 < t < 30000 for t in times.values()), times


def test_inventory_and_connection_over_ssh(converged: Fleet, tmp_path: Path) -> None:
    """The SSH composition, with a stand-in for ssh that runs the remote command string through
    a local shell exactly as sshd would: proves the quoting and the stdin/stdout plumbing of
    ``ssh HOST lxdlib …`` for the inventory, exec, put_file and fetch_file."""
    f = converged
    shim = tmp_path / "fake-ssh"
    log = tmp_path / "ssh.log"
    shim.write_text("#!/bin/sh\n"
                    f"echo \"$@\" >> {log}\n"
                    "while [ \"$1\" != -- ]; do shift; done; shift\n"
                    "exec /bin/sh -c \"$*\"\n")
    shim.chmod(0o755)
    inv = tmp_path / "inv"
    inv.mkdir()
    config = f.plugin_config(sources=[{"name": h, "root": str(r), "ssh": f"root@{h}.invalid",
                                       "ssh_args": "-o BatchMode=yes"}
                                      for h, r in f.roots.items()],
                             ssh_command=str(shim), hostname="{source}-{instance}")
    (inv / "ssh.lxdlib.yml").write_text(yaml.safe_dump(config))
    hostvars = inventory_list(f, inv / "ssh.lxdlib.yml")["_meta"]["hostvars"]  # type: ignore[index]
    assert set(hostvars) == {"hostA-ansit-hosta", "hostB-ansit-hostb"}
    assert hostvars["hostA-ansit-hosta"]["lxdlib_host"] == "root@hostA.invalid"
    play = tmp_path / "ssh.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "lxdlib", "gather_facts": False, "tasks": [
            {"ansible.builtin.copy": {"dest": "/root/over ssh.txt", "content": "it's quoted\n"}},
            {"ansible.builtin.fetch": {"src": "/root/over ssh.txt", "dest": f"{tmp_path}/got/"}},
            {"ansible.builtin.command": "cat '/root/over ssh.txt'", "register": "out",
             "changed_when": False},
            {"ansible.builtin.assert": {"that": "out.stdout == \"it's quoted\""}},
        ]}]))
    # a link where a fixed temporary name would be, in the fetch's destination directory:
    # fetch_file must not write through it
    witness = tmp_path / "witness"
    witness.write_text("untouched\n")
    for h in HOSTS:
        there = tmp_path / "got" / f"{h}-ansit-{h.lower()}" / "root"
        there.mkdir(parents=True)
        (there / "over ssh.txt.lxdlib-part").symlink_to(witness)
    # pipelining off: the module itself travels by put_file
    env = dict(f.env, ANSIBLE_PIPELINING="false")
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(play)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    for h in HOSTS:
        got = tmp_path / "got" / f"{h}-ansit-{h.lower()}" / "root" / "over ssh.txt"
        assert got.read_text() == "it's quoted\n" and not got.is_symlink()
    assert witness.read_text() == "untouched\n"
    calls = log.read_text()
    assert "root@hostA.invalid" in calls and " file push - " in calls
    assert " file pull " in calls and " exec -T " in calls and " list --format json" in calls


def _ansible_bins() -> list[Path]:
    """This environment's ansible-core, and the bin directories of any others named in
    ``LXDLIB_TEST_ANSIBLE_BINS`` (``:``-separated; e.g. a venv with ansible-core 2.18, which
    renders a variable's templates where it is used, as every release before 2.19 does)."""
    extra = [Path(d) for d in os.environ.get("LXDLIB_TEST_ANSIBLE_BINS", "").split(":") if d]
    return [BIN, *extra]


@pytest.mark.parametrize("bindir", _ansible_bins(), ids=str)
def test_inventory_marks_what_a_listing_says_unsafe(tmp_path: Path, bindir: Path) -> None:
    """A listing is the listed host's word (an SSH source may be compromised) and an image's
    (``image.*`` keys are its properties): a "{{ lookup('pipe', …) }}" in a value must stay
    text wherever a play uses it. Before, ansible-core up to 2.18 (which the collection
    declares it supports) rendered it, and ran the command on the controller."""
    witness = {k: tmp_path / f"ran-{k}" for k in ("user", "image", "profile", "status")}

    def evil(k: str) -> str:
        return "{{ lookup('pipe', 'touch " + str(witness[k]) + "') }}"
    listing = [{"name": "ev1", "status": evil("status"), "profiles": [evil("profile")],
                "config": {"user.role": evil("user"), "image.os": evil("image")}}]
    lister = tmp_path / "lister"
    lister.write_text(f"#!/bin/sh\ncat <<'J'\n{json.dumps(listing)}\nJ\n")
    lister.chmod(0o755)
    inv = tmp_path / "evil.lxdlib.yml"
    inv.write_text(yaml.safe_dump({"plugin": "lxdlib.containers.lxdlib",
                                   "command": str(lister), "status": [],
                                   "sources": [{"name": "far", "root": "/none"}]}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO),
               ANSIBLE_INVENTORY_ENABLED="lxdlib.containers.lxdlib",
               ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_NOCOLOR="1")
    msg = ("{{ lxdlib_user.role }} {{ lxdlib_image.os }} {{ lxdlib_profiles[0] }} "
           "{{ lxdlib_status }}")
    r = subprocess.run([str(bindir / "ansible"), "all", "-i", str(inv), "-m", "debug",
                        "-a", json.dumps({"msg": msg})], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "lookup('pipe'" in r.stdout, r.stdout[-3000:] + r.stderr
    assert not [k for k, w in witness.items() if w.exists()]


def test_restore_brings_the_snapshot_back(converged: Fleet) -> None:
    f = converged
    _, counts = f.playbook("restore.yml")
    for h in HOSTS:
        assert counts[h]["failed"] == 0 and counts[h]["changed"] == 3, counts
        name = f"ansit-{h.lower()}"
        assert (f.fetched / f"{h}-restored.txt").read_text() == f"written inside {name} of {h}\n"


def adhoc(f: Fleet, host: str, module: str, args: dict[str, object]) -> tuple[str, dict]:
    """One module run with ``ansible`` (ad hoc): its status word and its JSON result."""
    r = subprocess.run([str(BIN / "ansible"), host, "-i", str(f.inventory), "-m", module,
                        "-a", json.dumps(args)],
                       capture_output=True, text=True, env=f.env, timeout=300)
    m = re.search(r"^\S+ \| (\w+)!?(?: \| rc=\d+)? => (\{.*)", r.stdout, re.M | re.S)
    assert m, r.stdout + r.stderr
    return m.group(1), json.loads(m.group(2))


def test_instance_power_states(converged: Fleet) -> None:
    f = converged
    root = str(f.roots["hostA"])
    args = {"name": "ansit-hosta", "root": root}
    for state, status, changes in (("frozen", "Frozen", True), ("frozen", "Frozen", False),
                                   ("started", "Running", True), ("stopped", "Stopped", True),
                                   ("stopped", "Stopped", False), ("restarted", "Running", True),
                                   ("started", "Running", False)):
        word, result = adhoc(f, "hostA", "lxdlib.containers.instance", {**args, "state": state})
        assert word == ("CHANGED" if changes else "SUCCESS"), (state, result)
        assert result["instance"]["status"] == status, (state, result)
        assert f.lxdlib("hostA", "list", "ansit-hosta", "-c", "s", "-f", "csv").strip() == \
            status.upper(), state
    # a missing instance without an image is an error with lxdlib's own words
    word, result = adhoc(f, "hostA", "lxdlib.containers.instance",
                         {"name": "ansit-nothere", "root": root})
    assert word == "FAILED" and "give source" in result["msg"], result
    word, result = adhoc(f, "hostA", "lxdlib.containers.profile",
                         {"name": "ansible-py", "state": "absent", "root": root})
    assert word == "FAILED" and result["error"] in ("InUse", "WrongState"), result


def test_move_between_hosts_then_changes_nothing(converged: Fleet) -> None:
    """move.yml moves an instance from hostA's root to hostB's (lxdlib.containers.migrate),
    its file with it; run again it finds the move done and changes nothing."""
    f = converged
    f.lxdlib("hostA", "init", "busybox", "ansit-mover")
    try:
        subprocess.run([str(BIN / "lxdlib"), "--root", str(f.roots["hostA"]), "file", "push",
                        "-", "ansit-mover/root/carried.txt"], input="carried from hostA\n",
                       capture_output=True, text=True, check=True, timeout=120, env=f.env)
        _, counts = f.playbook("move.yml")
        assert counts["hostA"]["changed"] == 2 and counts["hostA"]["failed"] == 0, counts
        assert "ansit-mover" not in f.lxdlib("hostA", "list", "-c", "n", "-f", "csv").split()
        assert "ansit-mover" in f.lxdlib("hostB", "list", "-c", "n", "-f", "csv").split()
        assert (f.fetched / "moved.txt").read_text() == "carried from hostA\n"
        _, counts = f.playbook("move.yml")
        assert counts["hostA"]["changed"] == 0 and counts["hostA"]["failed"] == 0, counts
    finally:
        for h in HOSTS:
            subprocess.run([str(BIN / "lxdlib"), "--root", str(f.roots[h]), "delete", "--force",
                            "ansit-mover"], capture_output=True, timeout=120, env=f.env)


def test_missing_instance_is_unreachable(converged: Fleet) -> None:
    f = converged
    r = subprocess.run([str(BIN / "ansible"), "ghost", "-i", "ghost,", "-c",
                        "lxdlib.containers.lxdlib", "-e", f"lxdlib_root={f.roots['hostA']}",
                        "-e", f"lxdlib_command={BIN / 'lxdlib'}", "-m", "ansible.builtin.raw",
                        "-a", "true"], capture_output=True, text=True, timeout=120,
                       env=dict(f.env, ANSIBLE_INVENTORY_ENABLED="host_list"))
    assert r.returncode == 4, r.stdout + r.stderr  # 4: unreachable
    assert "ghost | UNREACHABLE!" in r.stdout and "no instance 'ghost'" in r.stdout


def test_image_from_a_file_and_a_url(converged: Fleet, tmp_path: Path) -> None:
    """The image that site.yml built, imported again from a file and from an http URL (a
    server on 127.0.0.1): the same fingerprint, so only aliases and properties change."""
    import functools
    import http.server
    import threading

    from lxdlib.imagestore.busybox import build_busybox_image
    f = converged
    tarball = build_busybox_image(tmp_path / "busybox.tar.gz")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler,
                                            directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/busybox.tar.gz"
        play = tmp_path / "images.yml"
        play.write_text(yaml.safe_dump([{
            "hosts": "hostA", "gather_facts": False,
            "module_defaults": {"group/lxdlib.containers.all": {"root": "{{ lxdlib_root }}"}},
            "tasks": [
                {"lxdlib.containers.image": {"source": str(tarball), "aliases": ["bb-file"],
                                             "properties": {"user.origin": "file"}},
                 "register": "from_file"},
                {"lxdlib.containers.image": {"source": url, "aliases": ["bb-url"]},
                 "register": "from_url"},
                {"ansible.builtin.assert": {"that": [
                    "from_file.image.fingerprint == from_url.image.fingerprint",
                    "'busybox' in from_url.image.aliases"]}},
            ]}]))
        cmd = [str(BIN / "ansible-playbook"), "-i", str(f.inventory), str(play)]
        first = subprocess.run(cmd, capture_output=True, text=True, env=f.env, timeout=300)
        assert first.returncode == 0, first.stdout[-5000:]
        assert recap(first.stdout)["hostA"]["changed"] == 2, first.stdout[-3000:]
        second = subprocess.run(cmd, capture_output=True, text=True, env=f.env, timeout=300)
        assert second.returncode == 0, second.stdout[-5000:]
        assert recap(second.stdout)["hostA"]["changed"] == 0, second.stdout[-3000:]
    finally:
        server.shutdown()
        server.server_close()
    aliases = f.lxdlib("hostA", "image", "alias", "list")
    assert "bb-file" in aliases and "bb-url" in aliases


def test_image_copied_from_a_remote(converged: Fleet, busybox_tarball: Path,
                                    tmp_path: Path) -> None:
    """``source: <remote>:<alias>`` copies from a simplestreams server (on 127.0.0.1) once; a
    second run finds the alias and fetches nothing."""
    import lxdlib
    from tests.integration.simplestreams_fixtures import (
        NATIVE_ARCH,
        ImageFactory,
        Product,
        Tree,
        Version,
        serving,
    )
    f = converged
    built = ImageFactory(busybox_tarball, tmp_path).build("20240101_0000", marker="ansible")
    tree = Tree(tmp_path / "srv")
    tree.add(Product("testos", "1", NATIVE_ARCH, ["testos/1"],
                     versions=[Version("20240101_0000", built)]))
    tree.write()
    play = tmp_path / "remote.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "hostA", "gather_facts": False,
        "tasks": [{"lxdlib.containers.image": {"root": "{{ lxdlib_root }}",
                                               "source": "ansit-ss:testos/1",
                                               "aliases": ["from-remote"]},
                   "register": "copied"},
                  {"ansible.builtin.debug": {"var": "copied.actions"}}]}]))
    cmd = [str(BIN / "ansible-playbook"), "-i", str(f.inventory), str(play)]
    with serving(tree.root) as srv:
        lxdlib.Host(f.roots["hostA"]).images.remotes.add("ansit-ss", srv.url)
        first = subprocess.run(cmd, capture_output=True, text=True, env=f.env, timeout=300)
        assert first.returncode == 0, first.stdout[-5000:]
        assert recap(first.stdout)["hostA"]["changed"] == 1
        assert '"copy"' in first.stdout and '"alias from-remote"' in first.stdout
        second = subprocess.run(cmd, capture_output=True, text=True, env=f.env, timeout=300)
        assert second.returncode == 0, second.stdout[-5000:]
        assert recap(second.stdout)["hostA"]["changed"] == 0, second.stdout[-3000:]
    image = lxdlib.Host(f.roots["hostA"]).images["from-remote"]
    assert image.properties["serial"] == "20240101_0000"
    image.delete()  # teardown.yml removes the busybox image only


def test_teardown_removes_everything_then_changes_nothing(converged: Fleet) -> None:
    f = converged
    _, counts = f.playbook("teardown.yml")
    assert all(counts[h]["changed"] == 5 for h in HOSTS), counts
    _, counts = f.playbook("teardown.yml")
    assert all(counts[h]["changed"] == 0 for h in HOSTS), counts
    for h in HOSTS:
        assert json.loads(f.lxdlib(h, "list", "--format", "json")) == []
        assert "ansible-py" not in f.lxdlib(h, "profile", "list")


GET_PIP_STAND_IN = '''\
# ansible-test bootstraps pip in its throwaway environments with a script from ansible's CI
# file server, which this machine cannot reach. This stand-in does what that script does: it
# runs pip straight from a wheel (the one this interpreter's ensurepip would install, which
# Debian keeps in WHEEL_PKG_DIR) and installs what ansible-test asked for from the package
# index, in one pip run; where there is no such wheel, ensurepip installs pip first.
import glob
import os
import runpy
import subprocess
import sys
import sysconfig

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
wheels = sorted(glob.glob(os.path.join(sysconfig.get_config_var("WHEEL_PKG_DIR") or "/-",
                                       "pip-*.whl")))
if not wheels:
    import ensurepip
    ensurepip.bootstrap(upgrade=True)
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
sys.path.insert(0, wheels[-1])
sys.argv = ["pip", "install", *args]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
'''


def sanity_command(base: Path) -> background.Command:
    """``ansible-test sanity`` in the layout it needs (a copy at
    .../ansible_collections/lxdlib/containers, outside git), with a home of its own."""
    copy = base / "ansible_collections" / "lxdlib" / "containers"
    shutil.copytree(REPO / "ansible_collections" / "lxdlib" / "containers", copy,
                    ignore=shutil.ignore_patterns("__pycache__", "output"))
    home = base / "home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True)
    # the pip that ansible-core 2.19's ansible-test bootstraps (named in the script's file name)
    (cache / "get_pip_24_2.py").write_text(GET_PIP_STAND_IN)
    env = dict(os.environ, HOME=str(home), LC_ALL="C.UTF-8")
    return background.Command([str(BIN / "ansible-test"), "sanity", "--venv", "--python",
                               f"{sys.version_info.major}.{sys.version_info.minor}", "--color",
                               "no"], cwd=copy, env=env)


# a background job (tests/integration/background.py): it starts with the session and runs while
# the tests before it do
background.define("ansible-sanity", background.Spec(
    prefix="lxdlib-sanity-", prepare=sanity_command, temp_dir=tempfile.gettempdir()))


@pytest.mark.slow
@pytest.mark.background("ansible-sanity")
def test_ansible_test_sanity() -> None:
    """``ansible-test sanity`` on the collection, every test of this ansible-core, in the
    layout it needs (a copy at .../ansible_collections/lxdlib/containers, outside git), with
    each test's requirements in throwaway environments (``--venv``)."""
    import ansible_test  # noqa: F401  (ships with ansible-core)
    job = background.take("ansible-sanity")
    try:
        r = job.wait(timeout=1500)
    finally:
        job.remove()
    ran = re.findall(r'Running sanity test "([^"]+)"', r.stdout + r.stderr)
    print(f"\nansible-test sanity ran {len(ran)} tests: {', '.join(ran)}")
    assert r.returncode == 0, (r.stdout[-8000:], r.stderr[-4000:])
    assert {"validate-modules", "pylint", "pep8", "import", "compile", "ansible-doc",
            "yamllint", "runtime-metadata"} <= set(ran)
