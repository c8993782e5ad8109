#!/usr/bin/env bash
# Runs bench_upstream against mini_backend on a free loopback port and
# stops the backend afterwards, whatever happens.
# Usage: run-upstream.sh MINI_BACKEND BENCH_UPSTREAM [SECONDS [CONC,... [CLIENT,...]]]
# CLIENT: curl, native (default: both).
set -euo pipefail
backend=$1 client=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$backend" "$port" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
FANFOLD_PROCS=${FANFOLD_PROCS:-2} "$client" "$port" "${3:-3}" "${4:-1,16,64,256}" "${5:-curl,native}"
