#!/usr/bin/env bash
# Runs fanfold's runtime micro-benchmarks (bench_runtime) and the Go
# reference (ref-go-runtime/main.go) interleaved, so that a ratio never
# mixes two host states: for each P, COUNT times, wait for a quiet machine,
# then run fanfold's whole suite once and Go's whole suite once, back to
# back, alternating which goes first (fanfold first in pairs 1, 3, 5, ...,
# Go first in pairs 2, 4, ...). The parked-goroutine RSS runs are paired
# the same way, once each per N per P. Prints the CPU model, then one
# markdown table per P (operation | fanfold ns/op | Go ns/op | ratio of the
# medians | per-pair ratio: median, min..max) and the parked-goroutine RSS
# table. The per-pair ratio is fanfold/Go within one A/B pair (the same
# host state); its median is the figure to trust on a noisy host.
# Writes under BENCH_OUT, each JSON with "cpu" ({"model", "vendor",
# "family", "model_id", "stepping", "cores"}), "date", "date_end", "count",
# "benchtime_ms" alongside the fields below:
#   runtime.json           P=2 (else the first P run): {"procs": 2, "ops":
#                          [{"name", "fanfold_ns", "go_ns", "ratio",
#                          "pair_ratio_median", "pair_ratio_min",
#                          "pair_ratio_max", "pairs", "fanfold_ns_reps",
#                          "go_ns_reps"}, ...], "parked": [{"goroutines",
#                          "fanfold_bytes_per_goroutine",
#                          "go_bytes_per_goroutine", "ratio",
#                          "fanfold_spawn_ns_per_g", "go_spawn_ns_per_g"}, ...],
#                          "interleaved", "go_version", ...}; fanfold_ns and
#                          go_ns are medians over the COUNT repetitions,
#                          ratio = fanfold_ns / go_ns; the pair_* fields
#                          are null unless Go ran in this run
#   runtime-p<P>.json      the same for every P run
#   runtime-fanfold.json   fanfold's figures in runtime-go.json's shape,
#                          plus "reps" ({"<P>": {"<name>": [ns per rep]}})
#   runtime-fanfold.txt    bench_runtime's raw BENCH / RSS lines, after
#                          "# rep=R/COUNT procs=P order=..." markers
#   runtime.md             the tables
#   go-work/               BENCH_WORK of the shared bench's common.sh: the
#                          Go binary (bin/ref-go-runtime), its build cache
#   go-results/runtime-go.txt, go-results/runtime-go.json
#                          the Go program's raw lines (same markers) and
#                          its figures in the reference run.sh's shape
#                          ({"go_version", "procs", "parked"}, plus "reps")
# Normally run by `make bench-runtime`, which builds bench_runtime first.
#
# Env: PROCS ["2 1"] P values (--procs / GOMAXPROCS), COUNT [5] A/B pairs
#      per P (medians over them), BENCHTIME_MS [1000] per benchmark per
#      run, PARKED ["100000 1000000"] parked-goroutine counts (empty:
#      none), IDLE_WAIT [60] s to wait for a quiet machine (other load
#      <= 10 %) before each A/B pair, GO_REF
#      [<repo>/../shared/bench/ref-go-runtime] (its main.go, built with
#      ../common.sh's bench_go_build; GO_REF=none: fanfold alone), GO_JSON
#      [unset] an existing runtime-go.json to compare against instead of
#      running Go (not interleaved: no per-pair ratios), ONLY [unset]
#      comma-separated benchmark names (bench_runtime --list) passed to
#      --only; Go still runs its whole suite and the other lines are
#      dropped. BENCH_BIN [build/bench/bench_runtime], BENCH_OUT
#      [build/bench].
# Needs jq; installs it, and golang-go when the Go reference is built, with
# apt-get (sudo -n when not root). Exits 1 when the Go reference was wanted
# but could not be built or failed.
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
ONLY="${ONLY:-}"

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

# ---- checks
uint() { if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ]; then die "$1 must be an integer >= $3, not '$2'"; fi; }
uint COUNT "$COUNT" 1
uint BENCHTIME_MS "$BENCHTIME_MS" 1
uint IDLE_WAIT "$IDLE_WAIT" 0
[ -n "${PROCS// /}" ] || die "PROCS is empty"
for p in $PROCS; do uint "PROCS value" "$p" 1; done
for n in $PARKED; do uint "PARKED value" "$n" 1; done
[ -x "$BIN" ] || die "$BIN not found: build it with 'make bench-runtime'"
mkdir -p "$OUT"
need jq:jq || die "jq is needed"
ONLY="$(tr ' ' ',' <<<"$ONLY" | tr -s ',' | sed 's/^,//; s/,$//')"   # "a,b" or "a b"
if [ -n "$ONLY" ]; then   # checked against --list
  known="$("$BIN" --list)"
  for name in ${ONLY//,/ }; do
    grep -qxF -- "$name" <<<"$known" || die "ONLY: no benchmark named '$name' (bench_runtime --list: $(paste -sd' ' - <<<"$known"))"
  done
fi

# ---- the machine
cpuinfo() { awk -F'[ \t]*: ' -v k="$1" '$1 == k { print $2; exit }' /proc/cpuinfo 2>/dev/null || true; }
CPU_MODEL="$(cpuinfo 'model name')"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(cpuinfo Processor)"   # 32-bit Arm
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(cpuinfo Hardware)"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(cpuinfo cpu)"         # POWER
[ -n "$CPU_MODEL" ] || CPU_MODEL="unknown"
CPU_VENDOR="$(cpuinfo vendor_id)"
[ -n "$CPU_VENDOR" ] || CPU_VENDOR="$(cpuinfo 'CPU implementer')"
[ -n "$CPU_VENDOR" ] || CPU_VENDOR="unknown"
CPU_FAMILY="$(cpuinfo 'cpu family')"
CPU_MODEL_ID="$(cpuinfo model)"
CPU_STEPPING="$(cpuinfo stepping)"
CPU_CORES="$(nproc)"
CPU_JSON="$(jq -nc --arg model "$CPU_MODEL" --arg vendor "$CPU_VENDOR" --arg family "$CPU_FAMILY" \
  --arg model_id "$CPU_MODEL_ID" --arg stepping "$CPU_STEPPING" --argjson cores "$CPU_CORES" '
  def s: if . == "" then null else . end;
  {model: $model, vendor: $vendor, family: ($family | s), model_id: ($model_id | s),
   stepping: ($stepping | s), cores: $cores}')"
CPU_TEXT="$CPU_MODEL ($CPU_VENDOR${CPU_FAMILY:+, family $CPU_FAMILY}${CPU_MODEL_ID:+ model $CPU_MODEL_ID}${CPU_STEPPING:+ stepping $CPU_STEPPING})"
DATE="$(date -u +%Y-%m-%dT%H:%MZ)"
note "$DATE: $CPU_CORES cores, $CPU_TEXT"

# ---- the Go reference
GO_RUN=0       # 1: Go runs interleaved in this run
GO_FAILED=0    # 1: Go was wanted but could not be built or failed
GO_STATUS=""   # empty: compared; else why there is no Go column
GO_BIN="" GO_VERSION=""
GO_RESULTS="$OUT/go-results"
GRAW="$GO_RESULTS/runtime-go.txt"
GJSON="$GO_RESULTS/runtime-go.json"
if [ -n "$GO_JSON" ]; then
  [ -r "$GO_JSON" ] || die "GO_JSON=$GO_JSON is not readable"
  jq -e '.procs | type == "object"' "$GO_JSON" >/dev/null 2>&1 || die "GO_JSON=$GO_JSON has no \"procs\" object"
  note "Go reference: using $GO_JSON (not interleaved)"
elif [ "$GO_REF" = none ]; then
  GO_STATUS="GO_REF=none"
elif [ -f "$GO_REF/main.go" ] && [ -f "$GO_REF/../common.sh" ]; then
  BENCH_WORK="$OUT/go-work"
  # shellcheck source=/dev/null
  source "$GO_REF/../common.sh"   # BENCH_WORK, bench_need, bench_go_build
  GO_BIN="$BENCH_WORK/bin/ref-go-runtime"
  if bench_go_build "$GO_REF" "$GO_BIN" && GO_VERSION="$("$GO_BIN" -mode version)"; then
    GO_RUN=1
    note "Go reference: $GO_BIN ($GO_VERSION), built from $GO_REF"
  else
    GO_STATUS="the Go reference could not be built from $GO_REF"; GO_FAILED=1
  fi
else
  GO_STATUS="the Go reference (main.go, ../common.sh) was not found at $GO_REF"
fi

RAW="$OUT/runtime-fanfold.txt"
FJSON="$OUT/runtime-fanfold.json"
MD="$OUT/runtime.md"

# tap SIDE FILE: appends stdin's lines to FILE (without the BENCH lines of
# benchmarks ONLY leaves out) and shows them prefixed with SIDE.
tap() {
  awk -v side="$1" -v file="$2" -v only="$ONLY" '
    BEGIN { nk = split(only, a, ","); for (i = 1; i <= nk; i++) keep[a[i]] = 1 }
    /^BENCH / && nk > 0 { nm = ""
      for (i = 2; i <= NF; i++) if ($i ~ /^name=/) { nm = substr($i, 6); break }
      if (!(nm in keep)) next }
    { print >> file; fflush(file); printf "%-7s | %s\n", side, $0; fflush() }'
}

# mark LINE: the line to both raw files and the terminal.
mark() {
  echo "$1" >> "$RAW"
  [ "$GO_RUN" = 1 ] && echo "$1" >> "$GRAW"
  echo "$1"
}

# run_bench SIDE P: one whole suite, one repetition per benchmark.
run_bench() {
  local rc=0
  if [ "$1" = fanfold ]; then
    "$BIN" --procs "$2" --count 1 --benchtime-ms "$BENCHTIME_MS" ${ONLY:+--only "$ONLY"} \
      | tap fanfold "$RAW" || rc=$?
    [ "$rc" = 0 ] || die "bench_runtime --procs $2 --count 1 --benchtime-ms $BENCHTIME_MS failed (status $rc)"
  elif [ "$GO_RUN" = 1 ]; then
    GOMAXPROCS="$2" "$GO_BIN" -mode bench -count 1 -test.benchtime "${BENCHTIME_MS}ms" \
      | tap go "$GRAW" || rc=$?
    if [ "$rc" != 0 ]; then
      GO_RUN=0 GO_FAILED=1 GO_STATUS="the Go reference failed (status $rc) at GOMAXPROCS=$2 (see $GRAW)"
      note "$GO_STATUS; going on with fanfold alone"
    fi
  fi
  return 0
}

# run_rss SIDE P N: one parked-goroutine RSS measurement.
run_rss() {
  local rc=0
  if [ "$1" = fanfold ]; then
    "$BIN" --procs "$2" --rss "$3" | tap fanfold "$RAW" || rc=$?
    [ "$rc" = 3 ] && { echo "# RSS goroutines=$3 procs=$2 skipped: not enough memory" | tap fanfold "$RAW"; return 0; }
    [ "$rc" = 0 ] || die "bench_runtime --procs $2 --rss $3 failed (status $rc)"
  elif [ "$GO_RUN" = 1 ]; then
    GOMAXPROCS="$2" "$GO_BIN" -mode rss -n "$3" | tap go "$GRAW" || rc=$?
    if [ "$rc" != 0 ]; then
      GO_FAILED=1
      echo "# RSS goroutines=$3 procs=$2 failed (status $rc)" | tap go "$GRAW"
    fi
  fi
  return 0
}

# order I: the sides in the order of the I-th pair (A/B, B/A, ...).
order() {
  if [ "$GO_RUN" != 1 ]; then echo fanfold
  elif [ $(( $1 % 2 )) = 1 ]; then echo fanfold go
  else echo go fanfold
  fi
}

# ---- the runs
if [ "$GO_RUN" = 1 ]; then mkdir -p "$GO_RESULTS"; rm -f "$GJSON"; fi   # no stale figures beside a failed run
echo "# $DATE fanfold runtime on $CPU_CORES cores: $CPU_TEXT" > "$RAW"
[ "$GO_RUN" = 1 ] && echo "# $DATE $GO_VERSION on $CPU_CORES cores: $CPU_TEXT" > "$GRAW"
for p in $PROCS; do
  for ((r = 1; r <= COUNT; r++)); do
    wait_idle
    sides="$(order "$r")"
    mark "# rep=$r/$COUNT procs=$p order=${sides// /,}"
    for side in $sides; do run_bench "$side" "$p"; done
  done
  j=0
  for n in $PARKED; do
    j=$((j + 1))
    wait_idle
    sides="$(order "$j")"
    mark "# rss goroutines=$n procs=$p order=${sides// /,}"
    for side in $sides; do run_rss "$side" "$p" "$n"; done
  done
done
DATE_END="$(date -u +%Y-%m-%dT%H:%MZ)"

# ---- JSON
# parse RAW: {"reps": {"<P>": {"<name>": [ns_op of rep 1..COUNT, null
# where missing]}}, "parked": [{"goroutines", "procs", "bytes_per_goroutine",
# "spawn_ns_per_g"}], "capped": ["<P>/<name>", ...]}
parse() {
  awk -v count="$COUNT" '
    function kv(   i, q) { delete v
      for (i = 2; i <= NF; i++) { if ($i ~ /^desc=/) break; split($i, q, "="); v[q[1]] = q[2] } }
    /^# rep=/ { split($2, a, "[=/]"); rep = a[2] + 0; next }
    /^BENCH / { kv(); pr = v["procs"]; nm = v["name"]
      if (!(pr in seenp)) { seenp[pr] = 1; porder[++np] = pr }
      if (!((pr, nm) in seen)) { seen[pr, nm] = 1; names[pr, ++nn[pr]] = nm }
      ns[pr, nm, rep] = v["ns_op"]
      if (v["capped"] == 1 && !((pr, nm) in capd)) {
        capd[pr, nm] = 1; capped = capped (capped == "" ? "" : ",") sprintf("\"%s/%s\"", pr, nm) } }
    /^RSS / { kv()
      parked = parked (parked == "" ? "" : ",") sprintf("{\"goroutines\":%d,\"procs\":%d,\"bytes_per_goroutine\":%s,\"spawn_ns_per_g\":%s}",
        v["goroutines"], v["procs"], v["bytes_per_goroutine"], v["spawn_ns_per_g"]) }
    END {
      printf "{\"reps\":{"
      for (k = 1; k <= np; k++) { pr = porder[k]; printf "%s\"%s\":{", (k > 1 ? "," : ""), pr
        for (j = 1; j <= nn[pr]; j++) { nm = names[pr, j]; printf "%s\"%s\":[", (j > 1 ? "," : ""), nm
          for (r = 1; r <= count; r++) printf "%s%s", (r > 1 ? "," : ""), ((pr, nm, r) in ns ? ns[pr, nm, r] : "null")
          printf "]" }
        printf "}" }
      printf "},\"parked\":[%s],\"capped\":[%s]}\n", parked, capped }' "$1"
}
JQ_DEFS='
  def r2: if . == null then null else (. * 100 + 0.5 | floor) / 100 end;
  def median: map(select(. != null)) | sort
    | if length == 0 then null elif length % 2 == 1 then .[(length - 1) / 2]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;'
# side_json RAW HEAD: RAW parsed, in runtime-go.json's shape, HEAD first.
side_json() {
  parse "$1" | jq --argjson head "$2" --argjson cpu "$CPU_JSON" --arg date "$DATE" --arg date_end "$DATE_END" \
    --argjson count "$COUNT" --argjson bt "$BENCHTIME_MS" "$JQ_DEFS"'
    $head + {procs: (.reps | map_values(map_values(median | r2))), parked, capped,
             cpu: $cpu, date: $date, date_end: $date_end, count: $count, benchtime_ms: $bt, reps}'
}
side_json "$RAW" '{"runtime":"fanfold"}' > "$FJSON.tmp" || { rm -f "$FJSON.tmp"; die "could not write $FJSON"; }
mv -f "$FJSON.tmp" "$FJSON"
if [ "$GO_RUN" = 1 ]; then
  side_json "$GRAW" "$(jq -nc --arg v "${GO_VERSION%% *}" '{go_version: $v}')" | jq 'del(.capped)' > "$GJSON.tmp" \
    || { rm -f "$GJSON.tmp"; die "could not write $GJSON"; }
  mv -f "$GJSON.tmp" "$GJSON"
  GO_JSON="$GJSON"
fi
[ -n "$GO_STATUS" ] && GO_JSON=""

# combine P -> runtime-p<P>.json on stdout
combine() {
  jq -n --slurpfile f "$FJSON" --slurpfile g "${GO_JSON:-/dev/null}" --arg pk "$1" \
    --argjson pairs "$GO_RUN" "$JQ_DEFS"'
    ($pk | tonumber) as $p | $f[0] as $f | ($g[0] // null) as $g
    | ($f.procs[$pk] // {}) as $F
    | (if $g == null then {} else ($g.procs[$pk] // {}) end) as $G
    | { procs: $p,
        ops: [ $F | keys_unsorted[] as $name
               | ($f.reps[$pk][$name] // []) as $fr
               | (if $pairs == 1 then ($g.reps[$pk][$name] // []) else null end) as $gr
               | (if $gr == null then [] else
                   [ range($fr | length) as $i | [$fr[$i], $gr[$i]]
                     | select(.[0] != null and .[1] != null and .[1] > 0) | .[0] / .[1] ] end) as $pr
               | { name: $name, fanfold_ns: $F[$name], go_ns: ($G[$name] // null) }
               | .ratio = (if .go_ns != null and .go_ns > 0 then (.fanfold_ns / .go_ns | r2) else null end)
               | .pair_ratio_median = ($pr | median | r2)
               | .pair_ratio_min = ($pr | min | r2)
               | .pair_ratio_max = ($pr | max | r2)
               | .pairs = ($pr | length)
               | .fanfold_ns_reps = $fr
               | .go_ns_reps = $gr ],
        parked: ( [ $f.parked[], ($g.parked // [])[] | select(.procs == $p) | .goroutines ] | unique
                  | map(. as $n
                      | ([ $f.parked[] | select(.procs == $p and .goroutines == $n) ][0]) as $a
                      | ([ ($g.parked // [])[] | select(.procs == $p and .goroutines == $n) ][0]) as $b
                      | { goroutines: $n,
                          fanfold_bytes_per_goroutine: $a.bytes_per_goroutine,
                          go_bytes_per_goroutine: $b.bytes_per_goroutine,
                          ratio: (if $a.bytes_per_goroutine != null and ($b.bytes_per_goroutine // 0) > 0
                                  then ($a.bytes_per_goroutine / $b.bytes_per_goroutine | r2) else null end),
                          fanfold_spawn_ns_per_g: $a.spawn_ns_per_g,
                          go_spawn_ns_per_g: $b.spawn_ns_per_g }) ),
        interleaved: ($pairs == 1),
        go_version: (if $g == null then null else $g.go_version end),
        cpu: $f.cpu, date: $f.date, date_end: $f.date_end, count: $f.count, benchtime_ms: $f.benchtime_ms }'
}

read -r main_p _ <<<"$PROCS"
for p in $PROCS; do [ "$p" = 2 ] && main_p=2; done
for p in $PROCS; do
  combine "$p" > "$OUT/runtime-p$p.json.tmp" && mv -f "$OUT/runtime-p$p.json.tmp" "$OUT/runtime-p$p.json"
done
cp -f "$OUT/runtime-p$main_p.json" "$OUT/runtime.json.tmp" && mv -f "$OUT/runtime.json.tmp" "$OUT/runtime.json"

# ---- tables
# cols: 2 (fanfold), 4 (+ Go, ratio), 6 (+ per-pair median, min..max)
COLS=2
[ -n "$GO_JSON" ] && COLS=4
[ "$GO_RUN" = 1 ] && COLS=6
fmt() { awk -F'\t' -v cols="$COLS" '
  function num(x, f) { return (x == "" || x == "null") ? "n/a" : sprintf(f, x) }
  { if (cols == 6) printf "| %s | %s | %s | %s | %s | %s..%s |\n", $1, num($2, "%.1f"), num($3, "%.1f"),
                          num($4, "%.2f"), num($5, "%.2f"), num($6, "%.2f"), num($7, "%.2f")
    else if (cols == 4) printf "| %s | %s | %s | %s |\n", $1, num($2, "%.1f"), num($3, "%.1f"), num($4, "%.2f")
    else printf "| %s | %s |\n", $1, num($2, "%.1f") }'; }
{
  echo "# ${DATE%Z}..${DATE_END#*T} on $CPU_CORES cores: $CPU_TEXT; COUNT=$COUNT BENCHTIME_MS=$BENCHTIME_MS${ONLY:+ ONLY=$ONLY}"
  if [ "$GO_RUN" = 1 ]; then
    echo "# fanfold and $GO_VERSION interleaved: per P, $COUNT A/B pairs of whole suites (fanfold first in odd pairs, Go in even ones)"
    echo "# ratio = median fanfold / median Go; per-pair = fanfold/Go within each pair (same host state): median, min..max"
  elif [ -n "$GO_JSON" ]; then
    echo "# compared with $(jq -r '.go_version // "Go"' "$GO_JSON") from $GO_JSON$(jq -r '
      if .date then " (measured \(.date)" + (if .cpu then " on \(.cpu.cores) cores: \(.cpu.model) (\(.cpu.vendor))" else "" end) + ")"
      else "" end' "$GO_JSON"), not interleaved: no per-pair ratios"
  else
    echo "# $GO_STATUS: fanfold figures only"
  fi
  for p in $PROCS; do
    echo
    echo "procs = $p (GOMAXPROCS = $p), median ns/op of $COUNT run$([ "$COUNT" = 1 ] || echo s) per benchmark"
    echo
    case "$COLS" in
      6) echo "| operation | fanfold ns/op | Go ns/op | ratio (fanfold/Go) | per-pair ratio, median | per-pair min..max |"
         echo "|---|---:|---:|---:|---:|---:|" ;;
      4) echo "| operation | fanfold ns/op | Go ns/op | ratio (fanfold/Go) |"; echo "|---|---:|---:|---:|" ;;
      *) echo "| operation | fanfold ns/op |"; echo "|---|---:|" ;;
    esac
    jq -r '.ops[] | [.name, .fanfold_ns, .go_ns, .ratio, .pair_ratio_median, .pair_ratio_min, .pair_ratio_max]
      | map(tostring) | @tsv' "$OUT/runtime-p$p.json" | fmt
  done
  if [ -n "$PARKED" ]; then
    echo
    echo "parked goroutines (each blocked on one unbuffered channel receive), RSS bytes per goroutine"
    echo
    echo "| goroutines | procs | fanfold bytes/goroutine | Go bytes/goroutine | ratio (fanfold/Go) | fanfold spawn ns/g |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for p in $PROCS; do
      jq -r '.procs as $p | .parked[]
        | [.goroutines, $p, .fanfold_bytes_per_goroutine, .go_bytes_per_goroutine, .ratio, .fanfold_spawn_ns_per_g]
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
[ "$GO_RUN" = 1 ] && echo "go: $GRAW, $GJSON"
[ "$GO_FAILED" = 0 ] || { note "the Go reference failed: see above"; exit 1; }
