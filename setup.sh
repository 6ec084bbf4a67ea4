#!/usr/bin/env bash
# lxdlib set-up on Debian 12, as root. Installs what is missing, then:
#   ./setup.sh demo   - runs the demo (examples/demo.py) on the embedded defaults
#   ./setup.sh test   - runs the whole test suite (ruff, mypy, the layers contract, pytest)
#   ./setup.sh        - only installs
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
    echo "lxdlib manages containers, loop devices and bridges: run this as root" >&2
    exit 1
fi

# Debian packages: liblxc and its Python binding, storage tools, networking tools, image tools.
PACKAGES=(lxc python3-lxc python3-venv btrfs-progs python3-btrfsutil busybox-static
          dnsmasq-base dnsmasq-utils nftables iproute2 zfs-fuse xz-utils zstd gzip bzip2 tar criu
          debootstrap util-linux tmux squashfs-tools openssl uidmap openssh-server openssh-client
          zsh)  # zsh: its completion script is tested in a real zsh
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# python3-lxc and python3-btrfsutil exist only for Debian's /usr/bin/python3, hence
# --system-site-packages (the first python3 on PATH may be another interpreter).
if ! .venv/bin/python -c 'import lxc, btrfsutil' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
# lxdlib is installed editable without the import hook of setuptools' default editable mode:
# every start of the venv's Python loads that hook (pathlib, importlib.util...): `python -c pass`
# takes 20 ms instead of 10, `lxdlib --version` 25 instead of 22 (a command that opens a root
# imports pathlib itself and gains 0-3 ms). Compat mode puts a plain path in a .pth file instead,
# but that path is the checkout, which holds more than lxdlib (tests/, bench/,
# ansible_collections/) and which a program that drops its own directory from sys.path loses when
# started in the checkout (Ansible's pipelined modules: "Failed to import ... lxdlib"). So the
# .pth is pointed at .venv/lxdlib-path, holding only a link to ./lxdlib (a new module is seen at
# once, as with any editable install). The stamp holds the mode: a venv with the hook is
# reinstalled once.
stamp=.venv/.lxdlib-installed
mode=compat
if [ "$(cat "$stamp" 2>/dev/null)" != "$mode" ] || [ setup.cfg -nt "$stamp" ] \
        || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]' \
        --config-settings editable_mode="$mode"
    echo "$mode" > "$stamp"
fi
mkdir -p .venv/lxdlib-path
ln -sfn "$PWD/lxdlib" .venv/lxdlib-path/lxdlib
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for pth in "$site"/__editable__.lxdlib-*.pth; do
    echo "$PWD/.venv/lxdlib-path" > "$pth"
done
# The `lxdlib` command itself is written here, over pip's script: it starts Python with -S and
# puts the venv's import path in place as it is now, instead of running `site` at every start.
# `site` walks the site-packages directories and runs their .pth files (setuptools'
# distutils-precedence hook, any other package's, a sandbox's certificate hook) and Debian's
# sitecustomize: 3-4 ms of every command here, 6-9 ms on a slow day, none of which a command
# needs (pip's script also imports `re` for a Windows suffix). The path is read from the venv's
# Python, so what a later `pip install` of a package with a .pth of its own adds needs
# `./setup.sh` again; `python -m lxdlib` keeps the usual start.
.venv/bin/python - "$PWD/.venv/bin/python" > .venv/bin/lxdlib.new <<'EOF'
import json, subprocess, sys
bare = json.loads(subprocess.check_output([sys.executable, "-S", "-c",
                                          "import json, sys; print(json.dumps(sys.path))"]))
extra = [p for p in sys.path if p and p not in bare]
print(f"#!{sys.argv[1]} -S")
print("# Written by lxdlib's setup.sh: Python without `site`, the venv's path put in place.")
print("import sys")
print(f"sys.path += {extra!r}")
print("from lxdlib.cli.main import entry")
print("sys.exit(entry())")
EOF
chmod 755 .venv/bin/lxdlib.new
mv -f .venv/bin/lxdlib.new .venv/bin/lxdlib
# bytecode for every module, so that `lxdlib` starts fast where Python may not write it itself
.venv/bin/python -m compileall -q lxdlib >/dev/null

case "${1:-}" in
    demo)
        exec .venv/bin/python examples/demo.py ;;
    test)
        shift
        .venv/bin/ruff check lxdlib tests bench examples
        .venv/bin/mypy
        .venv/bin/lint-imports --no-cache   # the layers contract in .importlinter
        exec .venv/bin/python -m pytest "$@" ;;
    "")
        echo "Set up: .venv/bin/lxdlib is the command." ;;
    *)
        echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac
