#!/usr/bin/env bash
# bench/gateway/compare.sh - optional: fanfold against its peers, with the
# shared peer harness (not part of fanfold; see bench/README.md).
#
#     bench/gateway/compare.sh
#     bench/gateway/compare.sh --ratios FANFOLD.json PEER.json [PEER.json ...]
#
# When the harness is there (FANFOLD_PEER_BENCH, default ../shared/bench from
# the repository's root), runs its run-gateway.sh for fanfold, the Go
# reference (gateways/ref-go.sh) and the OpenResty-style fan-out
# (gateways/nginx-lua-fanout.sh), back to back with the same settings, then
# its summarize.sh, and prints the table plus the ratios fanfold/peer of
# req/s, gateway CPU per 1,000 requests and p99, per concurrency, from the
# summary.json each run wrote under $BENCH_WORK/results. The ratio table is
# also written to $BUILD/bench/compare-<UTC stamp>.md.
#
# --ratios prints that ratio table from summary.json files of earlier runs.
#
# The harness uses the fixed ports 8080 and 9101-9103: this script checks
# that they are free first and stops if not. Without the harness it says so
# and exits 0.
#
# Environment (defaults in brackets):
#   FANFOLD_PEER_BENCH [../shared/bench]  the shared peer harness
#   FANFOLD_CMD ['./$BUILD/gateway --log-level warn']  fanfold's command (the
#                 peers write no access log; './build/gateway' measures it too)
#   GATEWAYS ["fanfold ref-go nginx-lua-fanout"]  which ones, in this order
#   CONCURRENCIES ["32 128 512"]; DURATION [harness: 10s]; RUNS (or REPEAT)
#   [harness: 3]; the harness's other variables (DELAY_PRICING_MS, WARMUP,
#   IDLE_WAIT, BENCH_WORK, ...) pass through.
set -euo pipefail

BUILD=${BUILD:-build}
PEER=${FANFOLD_PEER_BENCH:-../shared/bench}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

die() {
    echo "compare: $*" >&2
    exit 1
}

# ratios FANFOLD_JSON PEER_JSON...: the fanfold/peer table.
ratios() {
    python3 - "$@" <<'PY'
import json, sys

def load(path):
    with open(path) as f:
        return json.load(f)

def ratio(a, b):
    if a is None or b in (None, 0):
        return "n/a"
    return "%.2f" % (a / b)

def num(v, fmt):
    return "n/a" if v is None else format(v, fmt)

ff = load(sys.argv[1])
print("fanfold (%s, %s): %s" % (ff.get("name"), ff.get("scenario"), sys.argv[1]))
for path in sys.argv[2:]:
    peer = load(path)
    name = peer.get("name", path)
    print()
    print("fanfold / %s (%s; %s)" % (name, peer.get("scenario"), path))
    print()
    print("| conc | req/s fanfold | req/s %s | req/s ratio | CPU s/1k fanfold | CPU s/1k %s | CPU ratio | p99 ms fanfold | p99 ms %s | p99 ratio |" % (name, name, name))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conc, a in ff.get("concurrency", {}).items():
        b = peer.get("concurrency", {}).get(conc)
        if b is None:
            continue
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            conc, num(a.get("req_s"), ".0f"), num(b.get("req_s"), ".0f"),
            ratio(a.get("req_s"), b.get("req_s")),
            num(a.get("gw_cpu_s_per_1k"), ".4f"), num(b.get("gw_cpu_s_per_1k"), ".4f"),
            ratio(a.get("gw_cpu_s_per_1k"), b.get("gw_cpu_s_per_1k")),
            num(a.get("p99_ms"), ".2f"), num(b.get("p99_ms"), ".2f"),
            ratio(a.get("p99_ms"), b.get("p99_ms"))))
print()
print("req/s ratio > 1: fanfold served more; CPU and p99 ratios < 1: fanfold used less CPU per request / had a lower p99.")
PY
}

if [ "${1:-}" = --ratios ]; then
    shift
    [ $# -ge 2 ] || die "usage: compare.sh --ratios FANFOLD_SUMMARY.json PEER_SUMMARY.json..."
    command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
    ratios "$@"
    exit 0
fi
[ $# -eq 0 ] || die "unexpected argument \"$1\" (usage: compare.sh, or compare.sh --ratios FILES)"
# A FANFOLD_PEER_BENCH relative to where this was run from, then the root.
if [ -n "${FANFOLD_PEER_BENCH:-}" ] && [ -d "$FANFOLD_PEER_BENCH" ]; then
    PEER=$(cd "$FANFOLD_PEER_BENCH" && pwd)
fi
cd "$(dirname "$0")/../.."

if [ ! -x "$PEER/run-gateway.sh" ]; then
    cat <<EOF
compare: no shared peer harness at $PEER (FANFOLD_PEER_BENCH); nothing to compare.

The harness is not part of fanfold: it is the shared bench folder of the
machine fanfold is developed on (mock backends in nginx, a Go reference
gateway, an nginx + Lua fan-out). Where it exists, this script runs its
run-gateway.sh for fanfold ('${FANFOLD_CMD:-./$BUILD/gateway --log-level warn}'),
the Go reference (gateways/ref-go.sh) and the OpenResty-style fan-out
(gateways/nginx-lua-fanout.sh) one after the other with the same
CONCURRENCIES, then its summarize.sh, and prints the ratios fanfold/Go and
fanfold/Lua of req/s, gateway CPU per 1,000 requests and p99 per
concurrency. Point FANFOLD_PEER_BENCH at a copy of it to use it.

fanfold's own benchmark needs no peers: make bench-gateway
EOF
    exit 0
fi
PEER=$(cd "$PEER" && pwd)

FANFOLD_CMD=${FANFOLD_CMD:-./$BUILD/gateway --log-level warn}
GATEWAYS=${GATEWAYS:-fanfold ref-go nginx-lua-fanout}
export CONCURRENCIES=${CONCURRENCIES:-32 128 512}
if [ -n "${DURATION:-}" ]; then
    [[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s # the harness wants a unit
    export DURATION
fi
if [ -z "${RUNS:-}" ] && [ -n "${REPEAT:-}" ]; then export RUNS=$REPEAT; fi

command -v python3 >/dev/null 2>&1 || die "python3 is not installed (make deps installs it)"
for g in $GATEWAYS; do
    case $g in
        fanfold) [ -x "$BUILD/gateway" ] || die "$BUILD/gateway is missing: make $BUILD/gateway first" ;;
        ref-go | nginx-lua-fanout) [ -x "$PEER/gateways/$g.sh" ] || die "$PEER/gateways/$g.sh is missing" ;;
        *) die "GATEWAYS: unknown gateway \"$g\" (fanfold, ref-go, nginx-lua-fanout)" ;;
    esac
done

# The harness's ports are fixed: refuse to start beside anything using them.
port_busy() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
busy=()
for p in 8080 9101 9102 9103; do
    if port_busy "$p"; then busy+=("$p"); fi
done
if [ ${#busy[@]} -gt 0 ]; then
    die "port(s) ${busy[*]} already in use (make demo, another gateway or another run of the harness?): the peer harness needs 8080 and 9101-9103 free. Stop that first, or use bench/gateway/run.sh, which runs on free ports."
fi

cat <<EOF
# fanfold against its peers (bench/gateway/compare.sh)

- harness: $PEER (run-gateway.sh, wrk -t${THREADS:-1}, ${RUNS:-3} x ${DURATION:-10s} per concurrency, medians)
- concurrencies: $CONCURRENCIES
- gateways, in this order: $GATEWAYS
- fanfold: $FANFOLD_CMD

EOF

declare -A SUMMARY
failed=()
log=""
trap 'rm -f "$log"' EXIT
for g in $GATEWAYS; do
    case $g in
        fanfold) cmd=$FANFOLD_CMD ;;
        *) cmd="$PEER/gateways/$g.sh" ;;
    esac
    echo "== $g: $PEER/run-gateway.sh $g '$cmd'"
    log=$(mktemp "${TMPDIR:-/tmp}/fanfold-compare-$g.XXXXXX")
    if "$PEER/run-gateway.sh" "$g" "$cmd" 2>&1 | tee "$log"; then
        SUMMARY[$g]=$(sed -n 's/^summary json: //p' "$log" | tail -1)
    fi
    rm -f "$log"
    if [ -z "${SUMMARY[$g]:-}" ] || [ ! -f "${SUMMARY[$g]}" ]; then
        echo "compare: $g failed (its output is above)" >&2
        failed+=("$g")
        unset 'SUMMARY[$g]'
    fi
done

echo
echo "== summarize.sh (the newest result of every gateway and scenario in the results folder)"
"$PEER/summarize.sh" || true

echo
if [ -n "${SUMMARY[fanfold]:-}" ]; then
    peers=()
    for g in $GATEWAYS; do
        if [ "$g" != fanfold ] && [ -n "${SUMMARY[$g]:-}" ]; then peers+=("${SUMMARY[$g]}"); fi
    done
    if [ ${#peers[@]} -gt 0 ]; then
        mkdir -p "$BUILD/bench"
        ratios "${SUMMARY[fanfold]}" "${peers[@]}" | tee "$BUILD/bench/compare-$STAMP.md"
        echo
        echo "ratios: $BUILD/bench/compare-$STAMP.md"
    fi
fi
[ ${#failed[@]} -eq 0 ] || die "failed: ${failed[*]}"
