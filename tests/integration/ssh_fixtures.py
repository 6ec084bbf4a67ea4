"""A real sshd on 127.0.0.1 for the SSH remote tests, with throwaway keys.

``sshd_server`` generates a host key and a user key in a temporary directory, writes an sshd
config that listens on 127.0.0.1 only (a free port), lets root in by key alone
(``PermitRootLogin prohibit-password``, no passwords, no PAM) with ``AuthorizedKeysFile`` in that
directory, and starts ``/usr/sbin/sshd -D`` on it. The client side gets its own ssh config file
(identity, port, a ``known_hosts`` holding the generated host key, strict host key checking), so
no ``~/.ssh`` is read or written. Teardown kills that sshd by its pid and removes the directory,
also when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

SSHD = "/usr/sbin/sshd"


@attrs.frozen
class SshServer:
    port: int
    dir: Path
    ssh_config: Path  # for ``ssh -F``: identity, port, known_hosts, BatchMode
    pid: int

    def url(self, root: str | os.PathLike[str] | None = None) -> str:
        return f"ssh://root@127.0.0.1:{self.port}" + (str(root) if root else "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


@contextlib.contextmanager
def run_sshd() -> Iterator[SshServer]:
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.skip("openssh-server and openssh-client are needed (see setup.sh)")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = Path(tempfile.mkdtemp(prefix="lxdlib-sshd-"))
    proc: subprocess.Popen[bytes] | None = None
    made_run = False
    try:
        d.chmod(0o700)
        for key in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lxdlib-test",
                            "-f", str(d / key)], check=True)
        (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
        (d / "authorized_keys").chmod(0o600)
        port = _free_port()
        (d / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
LogLevel ERROR
""")
        host_pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        (d / "ssh_config").write_text(f"""\
Host 127.0.0.1
    Port {port}
    User root
    IdentityFile {d / "user_key"}
    IdentitiesOnly yes
    UserKnownHostsFile {d / "known_hosts"}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
""")
        # sshd wants its privilege separation directory
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(mode=0o755)
            made_run = True
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
        _wait_listening(port, proc)
        yield SshServer(port, d, d / "ssh_config", proc.pid)
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(d, ignore_errors=True)
        if made_run:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()


@pytest.fixture(scope="module")
def sshd_server() -> Iterator[SshServer]:
    with run_sshd() as server:
        yield server
