#!/usr/bin/env bash
# make demo: the three mock backends (profile :9101, inventory :9102,
# pricing :9103) and the gateway with its embedded configuration
# (routes/demo.json, :8080), in the foreground. Ctrl-C stops all of them.
# Env: BUILD [build] (where make put the binaries).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
GW="$BUILD/gateway" MOCK="$BUILD/mock-backend"
for b in "$GW" "$MOCK"; do
    [ -x "$b" ] || { echo "demo: $b is missing: run make first" >&2; exit 1; }
done

pids=()
stop() {
    trap - INT TERM EXIT
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
    for _ in $(seq 50); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    [ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
    wait 2>/dev/null
    echo "demo: stopped" >&2
}
trap stop EXIT
trap 'exit 130' INT TERM

# A port someone else holds would make a process fail later, less clearly.
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 9101 9102 9103; do
    if busy "$port"; then
        echo "demo: port $port is in use (another demo? stop it first)" >&2
        exit 1
    fi
done

for spec in profile:9101 inventory:9102 pricing:9103; do
    "$MOCK" --name "${spec%%:*}" --port "${spec##*:}" &
    pids+=($!)
done
"$GW" &
pids+=($!)

# Up within 10 s, or say which one is not.
for _ in $(seq 100); do
    up=1
    for port in 9101 9102 9103 8080; do busy "$port" || up=0; done
    [ "$up" = 1 ] && break
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "demo: a process exited; see above" >&2; exit 1; }
    done
    sleep 0.1
done
[ "$up" = 1 ] || { echo "demo: not listening after 10 s" >&2; exit 1; }

U='http://127.0.0.1:8080/api/products/7?user=42'
cat <<TXT

fanfold demo: the gateway on :8080 fans GET /api/products/{id}?user={user}
out to profile (:9101), inventory (:9102, required) and pricing (:9103).
Try, in another terminal:

  # all three answer: 200, X-Gateway-Completed: true
  curl -si '$U'

  # a slow part: pricing answers after 300 ms, still within the 1 s deadline
  curl -si -H 'X-Mock-Delay: pricing=300' '$U'

  # pricing past the deadline: "pricing":null, "errors":{"pricing":"timeout"}
  curl -si -H 'X-Mock-Delay: pricing=1500' '$U'

  # a failed optional part: profile answers 503 -> "profile":null, 200
  curl -si -H 'X-Mock-Status: profile=503' '$U'

  # a failed required part: inventory answers 500 -> 502
  curl -si -H 'X-Mock-Status: inventory=500' '$U'

  # a backend's own counters, and the gateway's health
  curl -s http://127.0.0.1:9103/stats; curl -s http://127.0.0.1:8080/healthz

(The X-Mock-* headers are in the demo route's forward_headers, so the
gateway passes them to every part; each mock backend acts only on its own
name.) Ctrl-C stops everything.
TXT

wait -n "${pids[@]}"
echo "demo: a process exited" >&2
