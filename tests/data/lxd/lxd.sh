#!/bin/bash
# LXD 5.0.2 beside lxdlib, for recording its outputs and for the benches' LXD columns; never in CI.
#   tests/data/lxd/lxd.sh start | stop
#   tests/data/lxd/lxd.sh run CMD ARGS...   starts LXD, runs CMD, stops LXD (also when CMD fails
#                                            or is interrupted) and prints CMD's exit status
# No systemd here (Debian's units and its init script's `ulimit -n 65536` do not work in this
# container), so the daemon is started as the init script would. Stopping removes what the daemon
# leaves behind once it is gone: its nftables table `inet lxd` (LXD re-creates it when it starts).
set -euo pipefail
PIDFILE=/run/lxd.pid

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
    running && return 0
    mkdir -p /var/log/lxd
    start-stop-daemon --start --quiet -m --pidfile "$PIDFILE" --name lxd --startas /usr/bin/lxd \
        --background -- --group lxd --logfile=/var/log/lxd/lxd.log
    lxd waitready --timeout=60
}

stop() {
    if running; then
        timeout 120 lxd shutdown || true            # stops its instances, then the daemon
        local pid; pid=$(cat "$PIDFILE")
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" && sleep 2   # ours: the pid file's
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$PIDFILE"
    if nft list table inet lxd >/dev/null 2>&1; then
        nft delete table inet lxd
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    run)
        shift
        start
        trap stop EXIT INT TERM
        rc=0; "$@" || rc=$?
        echo "exit status $rc" >&2
        exit "$rc" ;;
    *) echo "usage: $0 start|stop|run CMD..." >&2; exit 2 ;;
esac
