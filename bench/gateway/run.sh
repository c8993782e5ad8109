#!/usr/bin/env bash
# bench/gateway/run.sh - the gateway's own load benchmark (`make bench-gateway`).
#
# Starts three build/mock-backend instances (profile, inventory, pricing) and
# build/gateway with a generated configuration (routes/demo.json's routes and
# limits; its listen, admin and backend addresses rewritten to free loopback
# ports, never 8080 or 9101-9103, so it runs beside `make demo` or the shared
# peer harness), checks one answer (200, X-Gateway-Completed: true), warms up,
# then for each concurrency runs
#
#     wrk -t2 -cN -dDURATION --timeout 2s --latency URL
#
# REPEAT times and records: req/s, p50/p99 (wrk's latency distribution),
# non-2xx answers and socket errors, the gateway's CPU per 1,000 requests
# (utime + stime from /proc/PID/stat over the measured run), its peak RSS
# (VmHWM, reset before each run), the mock backends' CPU and wrk's, and the
# share of the machine used by other processes. After each run every request
# must have ended within 3 s (fanfold_inflight_requests from the admin
# listener). Prints the machine, the exact commands and a Markdown table;
# writes JSON to BENCH_OUT. Builds nothing: `make bench-gateway` builds
# build/gateway and build/mock-backend first.
#
# Exit status 1, with ERROR lines under the table and the gateway's
# /debug/goroutines kept next to BENCH_OUT, when requests were left in flight
# or a run completed none (the gateway stopped answering); 1 also when
# something could not start or died, or an answer check failed.
#
# Environment (defaults in brackets):
#   CONCURRENCIES ["32 128 512"]  wrk connection counts, in order
#   DURATION [10]        seconds per measured run ("10s" works too)
#   REPEAT [1]           measured runs per concurrency (medians in the table)
#   THREADS [2]          wrk threads (at most the concurrency)
#   WARMUP [3]           seconds of warm-up before the first concurrency
#   WARMUP_EACH [2]      seconds of warm-up before each later one (0: none)
#   DELAY_PRICING_MS [0] the pricing mock answers after this delay (--delay-ms);
#                        above the route's timeout_ms (1000) pricing times out
#                        and the answers are 200 with X-Gateway-Completed: false
#   WORKERS [unset]      gateway --workers N (unset: the gateway's default, the CPUs)
#   CLIENT [auto]        every backend's "client": auto, native or curl
#   LOG_LEVEL [warn]     gateway --log-level; info turns the access log on
#                        (one line per request, to a file in the work folder)
#   WRK_TIMEOUT [2s]     wrk --timeout (a request slower than this is a socket error)
#   URL_PATH ["/api/products/7?user=42"]
#   BUILD [build]        GATEWAY [$BUILD/gateway]  MOCK [$BUILD/mock-backend]
#   BENCH_OUT [$BUILD/bench/gateway-<UTC stamp>.json]  the Markdown table goes
#                        next to it (.md)
#   KEEP [0]             1: keep the work folder (configuration, logs, wrk outputs)
#
# Needs wrk, curl and python3 (Debian packages, installed by `make deps`).
# Every process it starts is stopped when it ends, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
GATEWAY=${GATEWAY:-$BUILD/gateway}
MOCK=${MOCK:-$BUILD/mock-backend}
CONCURRENCIES=${CONCURRENCIES:-32 128 512}
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
REPEAT=${REPEAT:-1}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3}
WARMUP=${WARMUP%s}
WARMUP_EACH=${WARMUP_EACH:-2}
WARMUP_EACH=${WARMUP_EACH%s}
DELAY_PRICING_MS=${DELAY_PRICING_MS:-0}
WORKERS=${WORKERS:-}
CLIENT=${CLIENT:-auto}
LOG_LEVEL=${LOG_LEVEL:-warn}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
URL_PATH=${URL_PATH:-/api/products/7?user=42}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
BENCH_OUT=${BENCH_OUT:-$BUILD/bench/gateway-$STAMP.json}
KEEP=${KEEP:-0}
RESERVED_PORTS=" 8080 9101 9102 9103 9901 "

log() { echo "[bench-gateway $(date +%H:%M:%S)] $*" >&2; }
die() {
    echo "bench-gateway: $*" >&2
    exit 1
}

# ---- arguments and tools ----------------------------------------------------
isint() { [[ $1 =~ ^[0-9]+$ ]]; }
positive() { isint "$1" && [ "$1" -gt 0 ]; }
for c in $CONCURRENCIES; do
    positive "$c" || die "CONCURRENCIES: \"$c\" is not a positive integer"
done
[ -n "${CONCURRENCIES// /}" ] || die "CONCURRENCIES is empty"
positive "$DURATION" || die "DURATION: \"$DURATION\" is not a positive number of seconds"
positive "$REPEAT" || die "REPEAT: \"$REPEAT\" is not a positive integer"
positive "$THREADS" || die "THREADS: \"$THREADS\" is not a positive integer"
isint "$WARMUP" || die "WARMUP: \"$WARMUP\" is not a number of seconds"
isint "$WARMUP_EACH" || die "WARMUP_EACH: \"$WARMUP_EACH\" is not a number of seconds"
isint "$DELAY_PRICING_MS" || die "DELAY_PRICING_MS: \"$DELAY_PRICING_MS\" is not a number of milliseconds"
[ -z "$WORKERS" ] || isint "$WORKERS" || die "WORKERS: \"$WORKERS\" is not a number"
case $CLIENT in auto | native | curl) ;; *) die "CLIENT must be auto, native or curl, not \"$CLIENT\"" ;; esac
case $LOG_LEVEL in error | warn | info | debug) ;; *) die "LOG_LEVEL must be error, warn, info or debug" ;; esac

if ! command -v wrk >/dev/null 2>&1; then
    die "wrk is not installed. It is a Debian package: \`make deps\` installs it (or: sudo apt-get install wrk)."
fi
for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is not installed (\`make deps\` installs it, or: sudo apt-get install $tool)"
done
for bin in "$GATEWAY" "$MOCK"; do
    [ -x "$bin" ] || die "$bin is missing: build it first (make $BUILD/gateway $BUILD/mock-backend), or run make bench-gateway"
done
[ -f routes/demo.json ] || die "routes/demo.json is missing"

# ---- processes and cleanup --------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/fanfold-bench-gateway.XXXXXX")
MOCK_PIDS=()
GW_PID=""
WRK_PID=""
stop_pid() { # pid: SIGTERM, up to 5 s, then SIGKILL
    local p=$1
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
        echo "bench-gateway: pid $p did not exit within 5 s of SIGTERM; SIGKILL" >&2
        kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    [ -z "$WRK_PID" ] || stop_pid "$WRK_PID"
    [ -z "$GW_PID" ] || stop_pid "$GW_PID"
    for p in "${MOCK_PIDS[@]}"; do stop_pid "$p"; done
    if [ "$KEEP" = 1 ]; then
        echo "bench-gateway: work folder kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench-gateway: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ticks PID...: sets TICKS to the sum of utime + stime (clock ticks) of the
# processes (every thread, live and exited, of each). No subshell, so that
# the shell's own children time (wrk's CPU, below) only counts wrk.
ticks() {
    local p line rest
    TICKS=0
    for p in "$@"; do
        { read -r line <"/proc/$p/stat"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086  # splitting the fields is the point
        set -- $rest
        TICKS=$((TICKS + ${12} + ${13}))
    done
}
# children_ticks: CHILD_TICKS = cutime + cstime of this shell (the children it
# has waited for: between two samples, only wrk).
children_ticks() {
    local line rest
    read -r line <"/proc/$$/stat"
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    CHILD_TICKS=$((${14} + ${15}))
}
# machine: BUSY and TOTAL jiffies from /proc/stat (all CPUs).
machine() {
    local user nice sys idle iowait irq softirq steal rest
    read -r _ user nice sys idle iowait irq softirq steal rest </proc/stat
    BUSY=$((user + nice + sys + irq + softirq + steal))
    TOTAL=$((BUSY + idle + iowait))
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Resets VmHWM to the current RSS (Linux >= 4.0); 0 if that failed.
reset_hwm() { { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null && echo 1 || echo 0; }

free_ports() { # N: N distinct free loopback ports, none of the reserved ones
    python3 - "$1" "$RESERVED_PORTS" <<'PY'
import socket, sys
n, reserved = int(sys.argv[1]), {int(p) for p in sys.argv[2].split()}
socks, ports = [], []
while len(ports) < n:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    p = s.getsockname()[1]
    if p not in reserved:
        ports.append(p)
print(" ".join(map(str, ports)))
PY
}

# ---- mock backends ----------------------------------------------------------
declare -A MOCK_PORT MOCK_CMD
start_mock() { # name delay_ms: on a port the kernel picks (--port 0)
    local name=$1 delay=$2 try pid port
    for try in 1 2 3; do
        MOCK_CMD[$name]="$MOCK --port 0 --name $name --listen 127.0.0.1 --delay-ms $delay"
        "$MOCK" --port 0 --name "$name" --listen 127.0.0.1 --delay-ms "$delay" \
            >"$work/mock-$name.log" 2>&1 </dev/null &
        pid=$!
        port=""
        for _ in $(seq 100); do
            port=$(sed -n 's/^mock-backend .* listening on .*:\([0-9][0-9]*\)$/\1/p' "$work/mock-$name.log")
            [ -n "$port" ] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if [ -z "$port" ]; then
            cat "$work/mock-$name.log" >&2
            stop_pid "$pid"
            die "mock backend $name did not start"
        fi
        if [[ $RESERVED_PORTS == *" $port "* ]]; then # never in practice
            stop_pid "$pid"
            continue
        fi
        MOCK_PIDS+=("$pid")
        MOCK_PORT[$name]=$port
        return 0
    done
    die "mock backend $name: no free port outside$RESERVED_PORTS"
}
start_mock profile 0
start_mock inventory 0
start_mock pricing "$DELAY_PRICING_MS"

# ---- the gateway ------------------------------------------------------------
# write_config GW_PORT ADMIN_PORT: routes/demo.json with its addresses
# replaced; prints the route's timeout_ms.
write_config() {
    python3 - "$1" "$2" "$CLIENT" "${MOCK_PORT[profile]}" "${MOCK_PORT[inventory]}" \
        "${MOCK_PORT[pricing]}" "$work/gateway.json" <<'PY'
import json, sys
gw, admin, client, p_prof, p_inv, p_price, out = sys.argv[1:]
cfg = json.load(open("routes/demo.json"))
cfg["listen"] = f"127.0.0.1:{gw}"
cfg["admin"] = f"127.0.0.1:{admin}"
ports = {"profile": p_prof, "inventory": p_inv, "pricing": p_price}
for name, be in cfg["backends"].items():
    if name not in ports:
        sys.exit(f"routes/demo.json: backend {name!r} has no mock here")
    be["url"] = f"http://127.0.0.1:{ports[name]}"
    if client != "auto":
        be["client"] = client
with open(out, "w") as f:
    json.dump(cfg, f, indent=2)
route = next(r for r in cfg["routes"] if r["path"] == "/api/products/{id}")
print(route.get("timeout_ms", 1000))
PY
}
GW_CMD=()
GW_WORKERS="?"
for try in 1 2 3; do
    read -r GW_PORT ADMIN_PORT <<<"$(free_ports 2)"
    ROUTE_TIMEOUT_MS=$(write_config "$GW_PORT" "$ADMIN_PORT") || die "could not write the configuration"
    GW_CMD=("$GATEWAY" -c "$work/gateway.json" --log-level "$LOG_LEVEL")
    [ -z "$WORKERS" ] || GW_CMD+=(--workers "$WORKERS")
    "${GW_CMD[@]}" >"$work/gateway.log" 2>&1 </dev/null &
    GW_PID=$!
    up=0
    for _ in $(seq 200); do
        if grep -q '^fanfold: listening on ' "$work/gateway.log"; then
            up=1
            break
        fi
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ "$up" = 1 ] && break
    stop_pid "$GW_PID"
    GW_PID=""
    # Someone took a port between free_ports and the gateway's bind: again.
    grep -qi 'in use' "$work/gateway.log" && [ "$try" -lt 3 ] && continue
    tail -20 "$work/gateway.log" >&2
    die "the gateway did not start (its log is above)"
done
GW_WORKERS=$(sed -n 's/^fanfold: listening on .*(\([0-9]*\) workers.*/\1/p' "$work/gateway.log" | head -1)
URL="http://127.0.0.1:$GW_PORT$URL_PATH"

# ---- verify one answer ------------------------------------------------------
want_completed=true
[ "$DELAY_PRICING_MS" -lt "$ROUTE_TIMEOUT_MS" ] || want_completed=false
verify() { # when
    local code completed
    code=$(curl -sS --max-time 5 -D "$work/verify-$1.head" -o "$work/verify-$1.body" \
        -w '%{http_code}' "$URL") || die "verify ($1): curl $URL failed"
    completed=$(tr -d '\r' <"$work/verify-$1.head" |
        awk -F': *' 'tolower($1) == "x-gateway-completed" {print $2}')
    if [ "$code" != 200 ] || [ "$completed" != "$want_completed" ]; then
        cat "$work/verify-$1.head" "$work/verify-$1.body" >&2
        echo >&2
        die "verify ($1): expected 200 with X-Gateway-Completed: $want_completed, got $code, X-Gateway-Completed: ${completed:-none}"
    fi
    python3 -c 'import json, sys
b = json.load(open(sys.argv[1]))
want = {"profile", "inventory", "pricing"}
assert want <= set(b), "keys %s" % sorted(b)' "$work/verify-$1.body" 2>/dev/null ||
        die "verify ($1): the body is not the fan-out JSON: $(head -c 300 "$work/verify-$1.body")"
    log "verify ($1): 200, X-Gateway-Completed: $completed, $(wc -c <"$work/verify-$1.body") bytes"
}
verify before
[ "$want_completed" = true ] ||
    log "note: DELAY_PRICING_MS=$DELAY_PRICING_MS >= the route's timeout_ms ($ROUTE_TIMEOUT_MS): pricing times out in every answer"

# ---- header -----------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[ -n "$CPU_MODEL" ] || CPU_MODEL=$(uname -m)
CORES=$(nproc)
CPUS_ONLINE=$(getconf _NPROCESSORS_ONLN)
KERNEL=$(uname -srm)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
WRK_VERSION=$(wrk -v 2>&1 | head -1 | awk '{print $2}') || true
HZ=$(getconf CLK_TCK)
wrk_cmd() { # conc duration_s
    local t=$THREADS
    [ "$t" -le "$1" ] || t=$1
    echo "wrk -t$t -c$1 -d${2}s --timeout $WRK_TIMEOUT --latency '$URL'"
}
machine
b0=$BUSY t0=$TOTAL
sleep 1
machine
BUSY_BEFORE=$(((TOTAL - t0) > 0 ? 100 * (BUSY - b0) / (TOTAL - t0) : 0))
{
    echo "# fanfold gateway load benchmark (bench/gateway/run.sh)"
    echo
    echo "- date: $DATE"
    echo "- cpu: $CPU_MODEL; $CORES cores usable ($CPUS_ONLINE online)"
    echo "- kernel: $KERNEL"
    echo "- fanfold: $COMMIT; wrk $WRK_VERSION"
    echo "- machine busy before start: $BUSY_BEFORE %"
    echo "- gateway: $GATEWAY ($GW_WORKERS workers, log level $LOG_LEVEL, client $CLIENT); mock backends: $MOCK (pricing delay $DELAY_PRICING_MS ms)"
    echo "- runs: warm-up ${WARMUP}s, then per concurrency ${WARMUP_EACH}s of warm-up (not for the first) and $REPEAT x ${DURATION}s measured"
    echo
    echo "Commands:"
    echo
    echo '```'
    for n in profile inventory pricing; do
        echo "${MOCK_CMD[$n]}     # 127.0.0.1:${MOCK_PORT[$n]}"
    done
    echo "${GW_CMD[*]}"
    echo "#   $work/gateway.json: routes/demo.json, listen 127.0.0.1:$GW_PORT, admin 127.0.0.1:$ADMIN_PORT, the backends above"
    for c in $CONCURRENCIES; do wrk_cmd "$c" "$DURATION"; done
    echo '```'
    echo
} | tee "$work/header.md"

# ---- runs -------------------------------------------------------------------
run_wrk() { # conc duration_s outfile
    local t=$THREADS
    [ "$t" -le "$1" ] || t=$1
    wrk -t"$t" -c"$1" -d"${2}s" --timeout "$WRK_TIMEOUT" --latency "$URL" >"$3" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        cat "$3" >&2
        die "wrk failed (its output is above)"
    fi
    WRK_PID=""
}
alive() {
    local p
    kill -0 "$GW_PID" 2>/dev/null || {
        tail -20 "$work/gateway.log" >&2
        die "the gateway died (its log is above)"
    }
    for p in "${MOCK_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || die "a mock backend (pid $p) died"
    done
}

# When the gateway stops answering or leaves requests behind, keep its
# goroutines (the admin listener's /debug/goroutines) for a report, once:
# GR_STATES = how many goroutines wait on what.
GOROUTINES_OUT="${BENCH_OUT%.json}-goroutines.txt"
GR_STATES=""
dump_goroutines() {
    [ -z "$GR_STATES" ] || return 0
    mkdir -p "$(dirname "$GOROUTINES_OUT")"
    if curl -sS --max-time 5 -o "$GOROUTINES_OUT" "http://127.0.0.1:$ADMIN_PORT/debug/goroutines"; then
        GR_STATES=$(sed -n 's/^goroutine [0-9]* \[\(.*\)\]:$/\1/p' "$GOROUTINES_OUT" |
            sort | uniq -c | sort -rn | awk '{n = $1; $1 = ""; printf "%s%d%s", (NR > 1 ? "; " : ""), n, $0}')
    else
        rm -f "$GOROUTINES_OUT"
        GR_STATES="none: the admin listener did not answer either"
    fi
    log "goroutines: $GR_STATES"
}

# After wrk has closed its connections, every request must end (answered
# or cancelled as 499) at once: INFLIGHT_AFTER = fanfold_inflight_requests
# from the admin listener once it is 0, or after 3 s; -1 if unreadable.
inflight_after() {
    local v=""
    for _ in $(seq 30); do
        v=$(curl -s --max-time 1 "http://127.0.0.1:$ADMIN_PORT/metrics" |
            awk '$1 == "fanfold_inflight_requests" {print $2}') || v=""
        [ "$v" != 0 ] || break
        sleep 0.1
    done
    INFLIGHT_AFTER=${v:--1}
}

RAW="$work/raw.tsv"
first=1
RSS_RESET=1
HUNG=""
STUCK=""
for c in $CONCURRENCIES; do
    alive
    if [ "$first" = 1 ]; then
        if [ "$WARMUP" -gt 0 ]; then
            log "warm-up: $(wrk_cmd "$c" "$WARMUP")"
            run_wrk "$c" "$WARMUP" "$work/warmup-c$c.txt"
        fi
        first=0
    elif [ "$WARMUP_EACH" -gt 0 ]; then
        run_wrk "$c" "$WARMUP_EACH" "$work/warmup-c$c.txt"
    fi
    for r in $(seq "$REPEAT"); do
        alive
        out="$work/wrk-c$c-r$r.txt"
        [ "$(reset_hwm "$GW_PID")" = 1 ] || RSS_RESET=0
        ticks "$GW_PID"
        g0=$TICKS
        ticks "${MOCK_PIDS[@]}"
        m0=$TICKS
        children_ticks
        w0=$CHILD_TICKS
        machine
        b0=$BUSY t0=$TOTAL
        run_wrk "$c" "$DURATION" "$out"
        machine
        children_ticks
        w1=$CHILD_TICKS
        ticks "${MOCK_PIDS[@]}"
        m1=$TICKS
        ticks "$GW_PID"
        g1=$TICKS
        hwm=$(hwm_kb "$GW_PID")
        inflight_after
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$r" $((g1 - g0)) $((m1 - m0)) \
            $((w1 - w0)) $((BUSY - b0)) $((TOTAL - t0)) "${hwm:-0}" "$INFLIGHT_AFTER" "$out" >>"$RAW"
        log "c=$c run $r/$REPEAT: $(awk '/Requests\/sec/ {printf "%s req/s", $2} /Non-2xx/ {printf ", %s non-2xx", $NF} /Socket errors/ {printf ", socket errors: %s", $0}' "$out"), gateway CPU $(((g1 - g0) * 1000 / HZ)) ms"
        if [ "$INFLIGHT_AFTER" -gt 0 ]; then
            STUCK+=" c=$c:$INFLIGHT_AFTER"
            log "c=$c run $r: $INFLIGHT_AFTER requests still in flight 3 s after wrk closed its connections"
            dump_goroutines
        fi
        if [ "$(awk '/ requests in / {print $1}' "$out")" = 0 ]; then
            HUNG=$c
            log "c=$c: no request completed in ${DURATION}s: the gateway stopped answering"
            dump_goroutines
            break 2
        fi
    done
done
if [ -z "$HUNG$STUCK" ]; then
    alive
    verify after
fi
DATE_END=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# ---- summary ----------------------------------------------------------------
mkdir -p "$(dirname "$BENCH_OUT")"
MD_OUT="${BENCH_OUT%.json}.md"
[ "$MD_OUT" != "$BENCH_OUT" ] || MD_OUT="$BENCH_OUT.md"
export HZ CPU_MODEL CORES CPUS_ONLINE KERNEL DATE DATE_END COMMIT WRK_VERSION BUSY_BEFORE \
    CONCURRENCIES DURATION REPEAT THREADS WARMUP WARMUP_EACH DELAY_PRICING_MS WORKERS \
    GW_WORKERS CLIENT LOG_LEVEL WRK_TIMEOUT URL RSS_RESET HUNG
export GW_CMD_STR="${GW_CMD[*]}"
export MOCK_CMDS="${MOCK_CMD[profile]}
${MOCK_CMD[inventory]}
${MOCK_CMD[pricing]}"
python3 - "$RAW" "$work/gateway.json" "$BENCH_OUT" "$work/table.md" <<'PY'
import json, os, re, statistics, sys

raw, cfg_path, json_out, md_out = sys.argv[1:]
env = os.environ
hz = int(env["HZ"])
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(path):
    text = open(path).read()
    out = {"requests": 0, "seconds": 0.0, "req_s": 0.0, "non2xx": 0,
           "connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = float(m.group(2)) * UNIT_MS[m.group(3)] / 1e3
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["req_s"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            out[k] = int(v)
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for pct, val, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", dist[1], re.M):
            out[f"p{pct}_ms"] = round(float(val) * UNIT_MS[unit], 3)
    return out


runs = []
for line in open(raw):
    c, r, gt, mt, wt, busy, total, hwm, inflight, path = line.rstrip("\n").split("\t")
    w = parse_wrk(path)
    req = w["requests"]
    per1k = lambda ticks: round(ticks / hz / (req / 1000), 4) if req else None
    busy, total = int(busy), int(total)
    other = None
    if total > 0:
        other = max(0.0, 100 * (busy - int(gt) - int(mt) - int(wt)) / total)
    runs.append({
        "concurrency": int(c), "run": int(r), "requests": req, "seconds": w["seconds"],
        "req_s": w["req_s"], "p50_ms": w.get("p50_ms"), "p75_ms": w.get("p75_ms"),
        "p90_ms": w.get("p90_ms"), "p99_ms": w.get("p99_ms"), "non2xx": w["non2xx"],
        "socket_errors": {k: w[k] for k in ("connect", "read", "write", "timeout")},
        "gw_cpu_s": round(int(gt) / hz, 2), "gw_cpu_s_per_1k": per1k(int(gt)),
        "gw_peak_rss_mib": round(int(hwm) / 1024, 1),
        "mocks_cpu_s": round(int(mt) / hz, 2), "mocks_cpu_s_per_1k": per1k(int(mt)),
        "wrk_cpu_s": round(int(wt) / hz, 2), "wrk_cpu_s_per_1k": per1k(int(wt)),
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
        "other_cpu_pct": round(other, 1) if other is not None else None,
        "inflight_after": int(inflight) if int(inflight) >= 0 else None,
    })


def med(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return statistics.median(vals) if vals else None


results = []
for c in [int(x) for x in env["CONCURRENCIES"].split()]:
    rows = [r for r in runs if r["concurrency"] == c]
    if not rows:
        continue
    res = {"concurrency": c, "runs": len(rows)}
    for k in ("req_s", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "gw_cpu_s_per_1k",
              "gw_peak_rss_mib", "mocks_cpu_s_per_1k", "wrk_cpu_s_per_1k",
              "machine_busy_pct", "other_cpu_pct"):
        res[k] = med(rows, k)
    res["requests_total"] = sum(r["requests"] for r in rows)
    res["non2xx_total"] = sum(r["non2xx"] for r in rows)
    res["socket_errors_total"] = sum(sum(r["socket_errors"].values()) for r in rows)
    res["inflight_after_max"] = max((r["inflight_after"] or 0) for r in rows)
    res["per_run"] = rows
    results.append(res)


def f(v, fmt):
    return "n/a" if v is None else format(v, fmt)


lines = [
    "| conc | req/s | p50 ms | p99 ms | non-2xx | socket errors | gw CPU s/1k req | gw peak RSS MiB | mocks CPU s/1k req | wrk CPU s/1k req | machine busy % | other CPU % |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in results:
    lines.append("| %d | %s | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |" % (
        r["concurrency"], f(r["req_s"], ",.0f"), f(r["p50_ms"], ".2f"), f(r["p99_ms"], ".2f"),
        r["non2xx_total"], r["socket_errors_total"], f(r["gw_cpu_s_per_1k"], ".4f"),
        f(r["gw_peak_rss_mib"], ".1f"), f(r["mocks_cpu_s_per_1k"], ".4f"),
        f(r["wrk_cpu_s_per_1k"], ".4f"), f(r["machine_busy_pct"], ".0f"),
        f(r["other_cpu_pct"], ".1f")))
with open(md_out, "w") as fh:
    fh.write("\n".join(lines) + "\n")

doc = {
    "benchmark": "fanfold gateway load (bench/gateway/run.sh)",
    "date": env["DATE"], "date_end": env["DATE_END"],
    "machine": {"cpu_model": env["CPU_MODEL"], "cores": int(env["CORES"]),
                "cpus_online": int(env["CPUS_ONLINE"]), "kernel": env["KERNEL"],
                "busy_pct_before": int(env["BUSY_BEFORE"])},
    "fanfold": env["COMMIT"], "wrk_version": env["WRK_VERSION"],
    "settings": {
        "concurrencies": [int(x) for x in env["CONCURRENCIES"].split()],
        "duration_s": int(env["DURATION"]), "repeat": int(env["REPEAT"]),
        "wrk_threads": int(env["THREADS"]), "warmup_s": int(env["WARMUP"]),
        "warmup_each_s": int(env["WARMUP_EACH"]),
        "delay_pricing_ms": int(env["DELAY_PRICING_MS"]),
        "workers": int(env["WORKERS"]) if env["WORKERS"] else None,
        "gateway_workers": int(env["GW_WORKERS"]) if env["GW_WORKERS"].isdigit() else None,
        "client": env["CLIENT"], "log_level": env["LOG_LEVEL"],
        "wrk_timeout": env["WRK_TIMEOUT"], "url": env["URL"],
    },
    "commands": {"mocks": env["MOCK_CMDS"].split("\n"), "gateway": env["GW_CMD_STR"],
                 "wrk": "wrk -t%d -cN -d%ss --timeout %s --latency '%s'" % (
                     int(env["THREADS"]), env["DURATION"], env["WRK_TIMEOUT"], env["URL"])},
    "config": json.load(open(cfg_path)),
    "units": {"cpu_s_per_1k": "CPU seconds (user + system) per 1,000 completed requests = CPU ms per request",
              "gw_peak_rss_mib": "VmHWM of the gateway during the run" + (
                  " (reset before each run)" if env["RSS_RESET"] == "1" else
                  " (could not be reset: the peak since the gateway started)")},
    "hung_at_concurrency": int(env["HUNG"]) if env["HUNG"] else None,
    "results": results,
}
with open(json_out, "w") as fh:
    json.dump(doc, fh, indent=2)
    fh.write("\n")
PY
cat "$work/table.md"
cat "$work/header.md" "$work/table.md" >"$MD_OUT"
bad=$(awk -F'|' 'NR > 2 && ($6 + 0 > 0 || $7 + 0 > 0) {print $2}' "$work/table.md" | tr -s ' \n' ' ')
echo
[ "$RSS_RESET" = 1 ] || echo "note: VmHWM could not be reset between runs: peak RSS is the peak since the gateway started"
[ -z "$bad" ] || echo "WARNING: errors (non-2xx or socket errors) at concurrency$bad: see the wrk outputs (KEEP=1 keeps them)"
echo "gw CPU s/1k req = the gateway's CPU seconds (user + system) per 1,000 requests = CPU ms per request."
echo "json: $BENCH_OUT"
echo "table: $MD_OUT"
if [ -n "$STUCK" ]; then
    echo
    echo "ERROR: requests still in flight 3 s after wrk closed its connections (concurrency:count):$STUCK."
    echo "       They should have ended as 499 at once: the gateway leaves requests behind."
fi
if [ -n "$HUNG" ]; then
    echo
    echo "ERROR: the gateway stopped answering at concurrency $HUNG (not one request completed in ${DURATION}s; later concurrencies not run)."
fi
if [ -n "$HUNG$STUCK" ]; then
    echo "       goroutines then: $GR_STATES"
    [ ! -f "$GOROUTINES_OUT" ] || echo "       /debug/goroutines: $GOROUTINES_OUT"
    exit 1
fi
