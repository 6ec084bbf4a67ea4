"""Proxy throughput: bulk TCP through a proxy device against a direct loopback stream, in one run.

    sudo .venv/bin/python bench/proxy.py [--mib 1024] [--rounds 9]

The same client and the same sink are used twice: once client → sink on the host's 127.0.0.1
(direct), once client → the proxy's listen address on the host's 127.0.0.1 → the forwarder →
the sink on the container's 127.0.0.1 (the sink runs in the container's network namespace).
Rounds alternate (direct, proxied, direct, …) so that both see the same machine; prints the
median and the best MiB/s of each and their ratios, with the load average (other work on a
2-core machine hits the three-process proxied path harder than the two-process direct one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from tests.cleanup import teardown_root

SINK = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    total = 0
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        total += n
    c.sendall(str(total).encode())
    c.close()
"""

CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stream(port: int, mib: int) -> float:
    """Send ``mib`` MiB to the sink on ``port`` and wait for its count; MiB/s."""
    data = memoryview(bytes(CHUNK))
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for _ in range(mib):
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64) or b"0")
    elapsed = time.perf_counter() - t
    if got != mib * CHUNK:
        raise SystemExit(f"sink got {got} bytes, sent {mib * CHUNK}")
    return mib / elapsed


def start_sink(port: int, netns_pid: int | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", SINK, str(port)]
    if netns_pid is not None:
        argv = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", *argv]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise SystemExit("sink did not start")
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024, help="MiB per stream")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    from lxdlib.imagestore.busybox import build_busybox_image

    base = Path(tempfile.mkdtemp(prefix="lxdlib-bench-", dir="/var/tmp"))
    base.chmod(0o711)
    root = base / "root"
    root.mkdir()
    sinks: list[subprocess.Popen[str]] = []
    try:
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": "2GiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.images.import_file(build_busybox_image(base / "busybox.tar.gz"),
                                aliases=["busybox"])
        c = host.launch("busybox", "bench")
        direct_port, inner_port, listen_port = free_port(), free_port(), free_port()
        sinks.append(start_sink(direct_port))
        sinks.append(start_sink(inner_port, netns_pid=c.pid))
        c.update(devices={**c.devices, "bulk": {
            "type": "proxy", "listen": f"tcp:127.0.0.1:{listen_port}",
            "connect": f"tcp:127.0.0.1:{inner_port}"}})
        direct: list[float] = []
        proxied: list[float] = []
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            direct.append(stream(direct_port, args.mib))
            proxied.append(stream(listen_port, args.mib))
        d, p = statistics.median(direct), statistics.median(proxied)
        print(f"{args.rounds} rounds of {args.mib} MiB, load average {load:.2f} at start")
        print(f"direct loopback stream : median {d:6.0f} MiB/s   best {max(direct):6.0f} MiB/s")
        print(f"through proxy device   : median {p:6.0f} MiB/s   best {max(proxied):6.0f} MiB/s"
              f"   ({p / d * 100:.0f}% / {max(proxied) / max(direct) * 100:.0f}% of direct)")
    finally:
        for s in sinks:
            s.kill()
            s.wait()
        teardown_root(root)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
