#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD SECONDS TARGET... - runs each libFuzzer target
# (BUILD/bin/TARGET, built by `make fuzz` with BUILD=build/fuzz) for SECONDS, one after the
# other, and prints a summary line per target: executions, coverage,
# corpus size, and whether it found something.
#
# Each target starts from its seed corpus, tests/fuzz/corpus/TARGET (read
# only), and grows its working corpus in BUILD/corpus/TARGET (kept
# across runs). A finding (crash, sanitizer report, oracle failure, leak,
# timeout of one input) is written to BUILD/findings/TARGET-*, and
# the run's log to BUILD/logs/TARGET.log (and what the end-to-end
# harness said about it to BUILD/logs/TARGET.harness). To keep a fixed finding as
# a regression test, copy it into tests/fuzz/corpus/TARGET/: make test
# replays every file there.
#
# The end-to-end targets (fuzz_server, fuzz_proxy) run a whole gateway
# with goroutine stacks that LeakSanitizer does not scan, so they run with
# detect_leaks=0 here; their leak checking is the corpus replay under
# make test-asan, which stops the gateway cleanly first. Their access log
# goes to stderr: -close_fd_mask=2 keeps it out of the log.
#
# Exits 1 when any target found something or could not run.
set -uo pipefail
build=$1
secs=$2
shift 2
cd "$(dirname "$0")/../.."

mkdir -p "$build/findings" "$build/logs"
status=0
summary=()
for t in "$@"; do
    bin="$build/bin/$t"
    seeds="tests/fuzz/corpus/$t"
    work="$build/corpus/$t"
    log="$build/logs/$t.log"
    mkdir -p "$work"
    extra=()
    asan="abort_on_error=1:detect_leaks=1"
    case "$t" in
    fuzz_server | fuzz_proxy)
        extra=(-close_fd_mask=2 -timeout=60)
        asan="abort_on_error=1:detect_leaks=0"
        ;;
    *) extra=(-timeout=10) ;;
    esac
    echo "=== $t: ${secs} s (log: $log)"
    start=$(date +%s)
    rm -f "$build/logs/$t.harness"
    FANFOLD_FUZZ_REPORT="$build/logs/$t.harness" \
    ASAN_OPTIONS=$asan UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$build/findings/$t-" "${extra[@]}" \
        "$work" "$seeds" >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(find "$work" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        res="no finding"
    else
        res="FOUND (exit $rc): $(ls -t "$build/findings/$t-"* 2>/dev/null | head -1)"
        status=1
        tail -40 "$log"
        [ -s "$build/logs/$t.harness" ] && cat "$build/logs/$t.harness"
    fi
    summary+=("$(printf '%-16s %5ss %10s execs  cov %6s  corpus %5s  %s' "$t" "$took" "${execs:-?}" "${cov:-?}" "$corp" "$res")")
done
echo
echo "fuzz summary ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')):"
printf '%s\n' "${summary[@]}"
exit "$status"
