#!/usr/bin/env bash
# Runs fanfold's runtime micro-benchmarks (bench_runtime) and, when it is
# there, the Go reference (ref-go-runtime/run.sh) with the same settings,
# then prints one markdown table per P (operation | fanfold ns/op | Go ns/op
# | ratio) and the parked-goroutine RSS table, and writes under BENCH_OUT:
#   runtime.json           P=2 (else the first P run): {"procs": 2, "ops":
#                          [{"name", "fanfold_ns", "go_ns", "ratio"}, ...],
#                          "parked": [{"goroutines", "fanfold_bytes_per_goroutine",
#                          "go_bytes_per_goroutine"}, ...]}
#   runtime-p<P>.json      the same for every P run
#   runtime-fanfold.json   fanfold's figures in runtime-go.json's shape
#   runtime-fanfold.txt    bench_runtime's raw BENCH / RSS lines
#   runtime.md             the tables
#   go-work/, go-results/  the Go reference's BENCH_WORK and RESULTS_DIR
#                          (build cache, binary, runtime-go.json, logs)
# Normally run by `make bench-runtime`, which builds bench_runtime first.
#
# Env: PROCS ["2 1"], COUNT [5] repetitions (median), BENCHTIME_MS [1000]
#      per repetition, PARKED ["100000 1000000"] parked-goroutine counts
#      (empty: none), IDLE_WAIT [60] s to wait for a quiet machine before
#      each P, GO_REF [<repo>/../shared/bench/ref-go-runtime] (GO_REF=none:
#      skip Go), GO_JSON [unset] an existing runtime-go.json to compare
#      against instead of running Go, BENCH_BIN [build/bench/bench_runtime],
#      BENCH_OUT [build/bench].
# Needs jq; installs it, and golang-go when the Go reference is used, with
# apt-get (sudo -n when not root).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${BENCH_BIN:-$ROOT/build/bench/bench_runtime}"
OUT="${BENCH_OUT:-$ROOT/build/bench}"
PROCS="${PROCS:-2 1}"
COUNT="${COUNT:-5}"
BENCHTIME_MS="${BENCHTIME_MS:-1000}"
PARKED="${PARKED-100000 1000000}"
IDLE_WAIT="${IDLE_WAIT:-60}"
GO_REF="${GO_REF:-$(dirname "$ROOT")/shared/bench/ref-go-runtime}"
GO_JSON="${GO_JSON:-}"

die() { echo "bench-runtime: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }

# need CMD:PACKAGE ...: apt-get install the packages whose command is missing.
need() {
  local item want=() sudo=()
  for item in "$@"; do
    command -v "${item%%:*}" >/dev/null 2>&1 || want+=("${item#*:}")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "bench-runtime: missing ${want[*]}; install them or run as root" >&2; return 1; }
    sudo=(sudo -n)
  fi
  note "installing ${want[*]} (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 && return 0
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null \
    || { echo "bench-runtime: apt-get install ${want[*]} failed" >&2; return 1; }
}

# Wait (up to IDLE_WAIT s) until other work uses at most 10 % of the
# machine, as the Go reference's run.sh does.
wait_idle() {
  local a b c d pct
  for _ in $(seq $(( (IDLE_WAIT + 1) / 2 ))); do
    read -r a b < <(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat); sleep 2
    read -r c d < <(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    pct=$(( (d - b) > 0 ? 100 * (c - a) / (d - b) : 0 ))
    [ "$pct" -le 10 ] && return 0
    note "machine ${pct}% busy with other work, waiting"
  done
  [ "$IDLE_WAIT" -gt 0 ] && note "WARNING: machine never got quiet; numbers may be perturbed"
  return 0
}

[ -x "$BIN" ] || die "$BIN not found: build it with 'make bench-runtime'"
mkdir -p "$OUT"
need jq:jq || die "jq is needed"

RAW="$OUT/runtime-fanfold.txt"
FJSON="$OUT/runtime-fanfold.json"
MD="$OUT/runtime.md"

# ---- fanfold
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) fanfold runtime on $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))"
  for p in $PROCS; do
    wait_idle
    "$BIN" --procs "$p" --count "$COUNT" --benchtime-ms "$BENCHTIME_MS"
    for n in $PARKED; do
      rc=0; "$BIN" --procs "$p" --rss "$n" || rc=$?
      [ "$rc" = 3 ] && { echo "# RSS goroutines=$n procs=$p skipped: not enough memory"; continue; }
      [ "$rc" = 0 ] || die "bench_runtime --procs $p --rss $n failed (status $rc)"
    done
  done
} | tee "$RAW"

# Same shape as runtime-go.json: {"procs": {"<P>": {"<name>": ns_op}},
# "parked": [{"goroutines", "procs", "bytes_per_goroutine", "spawn_ns_per_g"}],
# "capped": ["<P>/<name>", ...]}
awk '
  function kv(   i, p) { delete v
    for (i = 2; i <= NF; i++) { if ($i ~ /^desc=/) break; split($i, p, "="); v[p[1]] = p[2] } }
  /^BENCH / { kv(); pr = v["procs"]
    if (!(pr in seenp)) { seenp[pr] = 1; porder[++np] = pr }
    bl[pr] = bl[pr] (bl[pr] == "" ? "" : ",") sprintf("\"%s\":%s", v["name"], v["ns_op"])
    if (v["capped"] == 1) capped = capped (capped == "" ? "" : ",") sprintf("\"%s/%s\"", pr, v["name"]) }
  /^RSS / { kv()
    parked = parked (parked == "" ? "" : ",") sprintf("{\"goroutines\":%d,\"procs\":%d,\"bytes_per_goroutine\":%s,\"spawn_ns_per_g\":%s}",
      v["goroutines"], v["procs"], v["bytes_per_goroutine"], v["spawn_ns_per_g"]) }
  END {
    printf "{\"runtime\":\"fanfold\",\"procs\":{"
    for (k = 1; k <= np; k++) printf "%s\"%s\":{%s}", (k > 1 ? "," : ""), porder[k], bl[porder[k]]
    printf "},\"parked\":[%s],\"capped\":[%s]}\n", parked, capped
  }' "$RAW" | jq . > "$FJSON.tmp" || { rm -f "$FJSON.tmp"; die "could not write $FJSON"; }
mv -f "$FJSON.tmp" "$FJSON"

# ---- Go reference
GO_STATUS=""   # empty: compared; else why there is no Go column
if [ -n "$GO_JSON" ]; then
  [ -r "$GO_JSON" ] || die "GO_JSON=$GO_JSON is not readable"
  note "Go reference: using $GO_JSON"
elif [ "$GO_REF" != none ] && [ -f "$GO_REF/run.sh" ] && [ -f "$GO_REF/main.go" ]; then
  if need go:golang-go; then
    GO_RESULTS="$OUT/go-results"
    mkdir -p "$OUT/go-work" "$GO_RESULTS"
    note "Go reference: $GO_REF/run.sh (log: $OUT/go-run.log)"
    if env BENCH_WORK="$OUT/go-work" RESULTS_DIR="$GO_RESULTS" PROCS="$PROCS" COUNT="$COUNT" \
         BENCHTIME="${BENCHTIME_MS}ms" PARKED="$PARKED" IDLE_WAIT="$IDLE_WAIT" \
         bash "$GO_REF/run.sh" > "$OUT/go-run.log" 2>&1; then
      grep -E '^(# go|BENCH |RSS )' "$OUT/go-run.log" || true
      GO_JSON="$GO_RESULTS/runtime-go.json"
    else
      tail -20 "$OUT/go-run.log" >&2
      GO_STATUS="the Go reference run failed (see $OUT/go-run.log)"
    fi
  else
    GO_STATUS="go is missing and could not be installed"
  fi
else
  GO_STATUS="the Go reference was not found at $GO_REF"
fi
[ -z "$GO_STATUS" ] && [ ! -r "$GO_JSON" ] && GO_STATUS="no runtime-go.json at $GO_JSON"
[ -n "$GO_STATUS" ] && GO_JSON=""

# ---- combine: one JSON per P
combine() { # combine P -> JSON on stdout
  local g=null
  [ -n "$GO_JSON" ] && g="$(cat "$GO_JSON")"
  jq --argjson g "$g" --arg pk "$1" '
    def r2: (. * 100 + 0.5 | floor) / 100;
    ($pk | tonumber) as $p
    | (.procs[$pk] // {}) as $F
    | (if $g == null then {} else ($g.procs[$pk] // {}) end) as $G
    | . as $f
    | { procs: $p,
        ops: [ $F | to_entries[]
               | { name: .key, fanfold_ns: .value, go_ns: ($G[.key] // null) }
               | .ratio = (if .go_ns != null and .go_ns > 0 then (.fanfold_ns / .go_ns | r2) else null end) ],
        parked: ( [ $f.parked[], ($g.parked // [])[] | select(.procs == $p) | .goroutines ] | unique
                  | map(. as $n | { goroutines: $n,
                      fanfold_bytes_per_goroutine: ([ $f.parked[] | select(.procs == $p and .goroutines == $n) | .bytes_per_goroutine ][0]),
                      go_bytes_per_goroutine: ([ ($g.parked // [])[] | select(.procs == $p and .goroutines == $n) | .bytes_per_goroutine ][0]) }) ) }
  ' "$FJSON"
}

main_p=""
for p in $PROCS; do [ "$p" = 2 ] && main_p=2; done
[ -z "$main_p" ] && main_p="${PROCS%% *}"
for p in $PROCS; do
  combine "$p" > "$OUT/runtime-p$p.json.tmp" && mv -f "$OUT/runtime-p$p.json.tmp" "$OUT/runtime-p$p.json"
done
cp -f "$OUT/runtime-p$main_p.json" "$OUT/runtime.json.tmp" && mv -f "$OUT/runtime.json.tmp" "$OUT/runtime.json"

# ---- tables
fmt() { awk -F'\t' -v go="$([ -n "$GO_JSON" ] && echo 1 || echo 0)" '
  function num(x, f) { return (x == "" || x == "null") ? "n/a" : sprintf(f, x) }
  { if (go) printf "| %s | %s | %s | %s |\n", $1, num($2, "%.1f"), num($3, "%.1f"), num($4, "%.2f")
    else printf "| %s | %s |\n", $1, num($2, "%.1f") }'; }
{
  echo "$(head -1 "$RAW"); COUNT=$COUNT BENCHTIME_MS=$BENCHTIME_MS"
  if [ -n "$GO_JSON" ]; then
    echo "# compared with $(jq -r '.go_version // "Go"' "$GO_JSON") ($GO_JSON)"
  else
    echo "# $GO_STATUS: fanfold figures only"
  fi
  for p in $PROCS; do
    echo
    echo "procs = $p (GOMAXPROCS = $p), median ns/op"
    echo
    if [ -n "$GO_JSON" ]; then
      echo "| operation | fanfold ns/op | Go ns/op | ratio (fanfold/Go) |"; echo "|---|---:|---:|---:|"
    else
      echo "| operation | fanfold ns/op |"; echo "|---|---:|"
    fi
    jq -r '.ops[] | [.name, .fanfold_ns, .go_ns, .ratio] | map(tostring) | @tsv' "$OUT/runtime-p$p.json" | fmt
  done
  if [ -n "$PARKED" ]; then
    echo
    echo "parked goroutines (each blocked on one unbuffered channel receive), RSS bytes per goroutine"
    echo
    echo "| goroutines | procs | fanfold bytes/goroutine | Go bytes/goroutine | ratio (fanfold/Go) | fanfold spawn ns/g |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for p in $PROCS; do
      jq -r --slurpfile f "$FJSON" '.procs as $p | .parked[] | . as $x
        | [.goroutines, $p, .fanfold_bytes_per_goroutine, .go_bytes_per_goroutine,
           (if .fanfold_bytes_per_goroutine != null and (.go_bytes_per_goroutine // 0) > 0
            then .fanfold_bytes_per_goroutine / .go_bytes_per_goroutine else null end),
           ([$f[0].parked[] | select(.procs == $p and .goroutines == $x.goroutines) | .spawn_ns_per_g][0])]
        | map(tostring) | @tsv' "$OUT/runtime-p$p.json"
    done | awk -F'\t' '
      function num(x, f) { return (x == "" || x == "null") ? "n/a" : sprintf(f, x) }
      { printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, num($3, "%.0f"), num($4, "%.0f"), num($5, "%.2f"), num($6, "%.0f") }'
  fi
  capped="$(jq -r '.capped | join(", ")' "$FJSON")"
  [ -n "$capped" ] && { echo; echo "iteration count capped by available memory: $capped"; }
  true
} > "$MD"
echo; cat "$MD"
echo
echo "json: $OUT/runtime.json"
[ -z "$GO_STATUS" ] || [ "$GO_STATUS" = "the Go reference was not found at $GO_REF" ] || exit 1
