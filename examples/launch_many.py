"""Launch many instances at once, run a command in each, collect the results, clean up.

    sudo .venv/bin/python examples/launch_many.py --count 5 --command "uname -n"

Instances are independent objects and every verb takes only its own instance's lock, so a thread
pool launches, runs and deletes them in parallel. ``--root`` (or ``$LXDLIB_ROOT``) picks the
lxdlib root; the image must be there already (``lxdlib image build busybox``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import secrets

import lxdlib


def run_one(host: lxdlib.Host, image: str, name: str, command: str) -> tuple[str, int, str]:
    inst = host.launch(image, name)
    inst.wait_ready(30)
    result = inst.exec(command)
    return name, result.returncode, result.text.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root")
    ap.add_argument("--image", default="busybox")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--command", default="uname -n")
    ap.add_argument("--prefix", default=f"many-{secrets.token_hex(2)}")
    ap.add_argument("--keep", action="store_true", help="leave the instances running")
    args = ap.parse_args()
    host = lxdlib.Host(args.root, create=True)
    names = [f"{args.prefix}-{i}" for i in range(args.count)]
    failed = 0
    try:
        with cf.ThreadPoolExecutor(max_workers=min(8, args.count)) as pool:
            futures = [pool.submit(run_one, host, args.image, n, args.command) for n in names]
            for fut in cf.as_completed(futures):
                name, code, out = fut.result()
                failed += code != 0
                print(f"{name}: exit {code}: {out}")
    finally:
        if not args.keep:
            with cf.ThreadPoolExecutor(max_workers=8) as pool:
                for n in names:
                    if n in host.instances:
                        pool.submit(host.instances[n].delete, force=True)
    print(f"{args.count - failed}/{args.count} succeeded")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
