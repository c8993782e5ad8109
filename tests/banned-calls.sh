#!/usr/bin/env bash
# Fails when a C source or header of the project calls a banned function
# (STYLE: as curl does): strcpy, strcat, sprintf, vsprintf, gets, atoi,
# atol, atoll — unbounded or unchecked; use memcpy with a known length,
# snprintf, strtol. A bare abort() is allowed only on a panic path, which
# says so on the same line ("/* panic path */") or is rt__panic itself.
# Prints each offending line as FILE:LINE: text. Run by make test.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find runtime gateway tests bench -name '*.[ch]')
# Comments and strings may mention the names; strip // and /* */ comments
# on a line before matching (good enough for this tree's style).
bad=$(grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll)[[:space:]]*\(' $files |
      grep -vE '^[^:]+:[0-9]+:[[:space:]]*(\*|/\*|//)' || true)
if [ -n "$bad" ]; then
    echo "banned-calls: use snprintf, memcpy with a known length, strtol:" >&2
    echo "$bad" >&2
    status=1
fi
aborts=$(grep -nE '\babort[[:space:]]*\([[:space:]]*\)' $files |
         grep -v 'panic path' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(\*|/\*|//)' || true)
if [ -n "$aborts" ]; then
    echo "banned-calls: abort() outside a panic path (mark it /* panic path */):" >&2
    echo "$aborts" >&2
    status=1
fi
[ "$status" -eq 0 ] && echo "banned-calls: clean"
exit "$status"
