"""Keep a directory in sync across instances: push a host tree into each (modes, symlinks and
owners kept), or pull a path from each into ``<dest>/<instance>/``.

    sudo .venv/bin/python examples/file_sync.py push ./site /srv/www web-1 web-2
    sudo .venv/bin/python examples/file_sync.py pull /var/log ./logs web-1 web-2

Paths are resolved inside each instance, running or stopped: a symlink in an instance can never
make the copy read or write a host file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lxdlib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("direction", choices=("push", "pull"))
    ap.add_argument("source")
    ap.add_argument("dest")
    ap.add_argument("instances", nargs="+")
    ap.add_argument("--root")
    args = ap.parse_args()
    host = lxdlib.Host(args.root)
    for name in args.instances:
        inst = host.instances[name]
        t = time.perf_counter()
        if args.direction == "push":
            n = inst.files.push_tree(args.source, args.dest, parents=True)
            where = f"{name}:{args.dest}"
        else:
            target = Path(args.dest) / name
            n = inst.files.pull_tree(args.source, target, parents=True)
            where = str(target)
        print(f"{where}: {n} entries in {time.perf_counter() - t:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
