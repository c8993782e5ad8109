#!/usr/bin/env bash
# Usage: run-tests.sh [DIR [SCRIPT...]]
# Runs every test binary under DIR (default build/tests), sorted, then each
# SCRIPT given (e.g. tests/docker-check.sh), each in its own process with a
# 300 s timeout, and prints "N passed, M failed" counting binaries and
# scripts. Exits non-zero if any of them failed, crashed or timed out, or
# if there was no test binary at all.
set -uo pipefail

dir=${1:-build/tests}
shift $(($# > 0 ? 1 : 0))
export CMOCKA_MESSAGE_OUTPUT=${CMOCKA_MESSAGE_OUTPUT:-stdout}

mapfile -t bins < <(find "$dir" -type f -name 'test_*' ! -name '*.*' \
    -perm -u+x 2>/dev/null | LC_ALL=C sort)
nbins=${#bins[@]}
bins+=("$@")

passed=0
failed=0
failures=()
for bin in "${bins[@]}"; do
    echo "=== ${bin}"
    timeout 300 "$bin"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        continue
    fi
    if [ "$rc" -eq 124 ]; then
        why="timed out after 300 s"
    elif [ "$rc" -gt 128 ]; then
        why="killed by signal $((rc - 128))"
    else
        why="exit status $rc"
    fi
    echo "--- FAILED: ${bin} (${why})"
    failed=$((failed + 1))
    failures+=("${bin} (${why})")
done

echo
for f in "${failures[@]}"; do
    echo "failed: $f"
done
if [ "$nbins" -eq 0 ]; then
    echo "run-tests: no test binaries under $dir" >&2
fi
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ "$nbins" -gt 0 ]
