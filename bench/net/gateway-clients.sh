#!/usr/bin/env bash
# The gateway's CPU per request with each upstream client: build/gateway
# with three backends (all on one mini_backend, on a free loopback port)
# whose "client" is the one named, loaded by wrk for SECONDS after a 2 s
# warm-up; CPU from /proc/PID/stat (user + system) over the measured
# seconds divided by the requests wrk completed. Private ports only: it
# does not touch the shared bench's backends on 9101-9103.
# Usage: gateway-clients.sh [SECONDS [CONNECTIONS [CLIENT ...]]]
#        CLIENT: curl, native or auto (default: curl native curl native)
# Needs wrk, python3; builds nothing (make build/gateway
# build/bench/mini_backend first).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
secs=${1:-5} conns=${2:-32}
shift $(($# < 2 ? $# : 2))
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(curl native curl native)
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(free)
"$BUILD/bench/mini_backend" "$port" & pids+=($!)
hz=$(getconf CLK_TCK)
for client in "${clients[@]}"; do
    gw=$(free)
    cat >"$work/cfg.json" <<EOC
{ "listen": "127.0.0.1:$gw",
  "backends": {
    "profile":   { "url": "http://127.0.0.1:$port", "client": "$client" },
    "inventory": { "url": "http://127.0.0.1:$port", "client": "$client" },
    "pricing":   { "url": "http://127.0.0.1:$port", "client": "$client" } },
  "routes": [ { "method": "GET", "path": "/api/products/{id}", "timeout_ms": 1000,
      "fanout": [
        { "name": "profile", "backend": "profile", "path": "/users/{id}" },
        { "name": "inventory", "backend": "inventory", "path": "/inventory/{id}", "required": true },
        { "name": "pricing", "backend": "pricing", "path": "/prices/{id}" } ] } ] }
EOC
    "$BUILD/gateway" -c "$work/cfg.json" --workers 2 2>"$work/gw.log" &
    g=$!
    pids+=($g)
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$gw") 2>/dev/null && break; sleep 0.1; done
    url="http://127.0.0.1:$gw/api/products/7"
    wrk -t1 -c"$conns" -d2s "$url" >/dev/null
    t0=$(awk '{print $14 + $15}' "/proc/$g/stat")
    out=$(wrk -t1 -c"$conns" -d"${secs}s" "$url")
    t1=$(awk '{print $14 + $15}' "/proc/$g/stat")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    bad=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr -s ' \n' ' ')
    cpu=$(python3 -c "print(round(($t1 - $t0) / $hz * 1e6 / $reqs, 1))")
    echo "GATEWAY client=$client conns=$conns rps=$rps cpu_us_per_req=$cpu ${bad}"
    kill "$g"
    wait "$g" 2>/dev/null || true
done
