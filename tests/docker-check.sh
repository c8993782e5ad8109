#!/usr/bin/env bash
# tests/docker-check.sh - checks docker/ offline, without a Docker engine.
# Run by make test (through tests/run-tests.sh); exits non-zero when a
# check fails. Env: BUILD [build] (where make put build/gateway).
#
#   compose      `docker-compose config` accepts docker/compose.yaml (with
#                and without --profile load), and every backend of
#                routes/compose.json is a compose service whose mock
#                listens on the URL's port
#   copy         every COPY source of docker/Dockerfile exists and is not
#                left out of the context by .dockerignore
#   context      those COPY sources alone build gateway and mock-backend
#                with the command the build stage runs
#   apt          every package the Dockerfile installs is a Debian 12
#                package, and each stage's list installs on an empty system
#                (apt-get -s against the local package lists)
#   libs         every shared library the context-built gateway and
#                mock-backend link against comes from a package the
#                runtime stage installs, or from libc6 (in the base image)
#   config       routes/compose.json passes `gateway --check` and listens
#                on all interfaces
#   probe        `gateway --probe`: 0 for a 2xx (mock /stats, gateway
#                /healthz), 1 for a 404, a 503, a closed port, a bad URL,
#                and for no answer within its 2 s deadline
#
# A check that cannot run here says SKIP and why: compose without
# docker-compose (make deps installs Debian's), apt without Debian 12
# package lists (apt-get update).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
GW="$BUILD/gateway"
MOCK="$BUILD/mock-backend"
DOCKERFILE=docker/Dockerfile
COMPOSE=docker/compose.yaml

passed=0 failed=0 skipped=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() { echo "SKIP: $*"; skipped=$((skipped + 1)); }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

for b in "$GW" "$MOCK"; do
    [ -x "$b" ] || { echo "docker-check: $b is missing: run make first" >&2; exit 1; }
done

# ------------------------------------------------------------- Dockerfile
# One record per instruction that matters, continuation lines joined and
# comment lines dropped (as Docker does):
#   FROM stage | APT stage pkg... | COPY stage src... dest
# A COPY --from=... copies between stages and is left out.
dockerfile_records() {
    awk '
    function emit(l,   n, w, i, j, op, out, m) {
        n = split(l, w, /[ \t]+/)
        i = 1
        while (i <= n && w[i] == "") i++
        if (i > n) return
        op = toupper(w[i])
        if (op == "FROM") {
            stage = ++nstages
            for (j = i + 1; j < n; j++)
                if (toupper(w[j]) == "AS") stage = w[j + 1]
            print "FROM", stage
        } else if (op == "RUN") {
            for (j = i + 1; j <= n; j++) {
                if (w[j] != "apt-get") continue
                for (m = j + 1; m <= n && w[m] != "install"; m++)
                    if (w[m] == "&&" || w[m] == ";") break
                if (m > n || w[m] != "install") continue
                out = ""
                for (m++; m <= n; m++) {
                    if (w[m] == "&&" || w[m] == ";" || w[m] == "||") break
                    if (w[m] !~ /^-/ && w[m] != "") out = out " " w[m]
                }
                print "APT", stage out
                j = m
            }
        } else if (op == "COPY" || op == "ADD") {
            out = ""
            for (j = i + 1; j <= n; j++) {
                if (w[j] ~ /^--from=/) return
                if (w[j] ~ /^\[/) { print "JSONCOPY", stage; return }
                if (w[j] !~ /^--/ && w[j] != "") out = out " " w[j]
            }
            print op, stage out
        }
    }
    /^[ \t]*#/ { next }
    {
        s = $0
        if (sub(/\\[ \t]*$/, "", s)) { line = line s " "; next }
        emit(line s); line = ""
    }
    END { if (line != "") emit(line) }
    ' "$DOCKERFILE"
}

mapfile -t records < <(dockerfile_records)
last_stage=""
for r in "${records[@]}"; do
    read -r op stage _ <<<"$r"
    [ "$op" = FROM ] && last_stage=$stage
done

# .dockerignore patterns (trailing / dropped, ! exceptions unsupported).
ignores=()
if [ -f .dockerignore ]; then
    while IFS= read -r pat; do
        pat=${pat%%#*}
        pat=$(echo "$pat" | xargs)
        [ -n "$pat" ] || continue
        ignores+=("${pat%/}")
    done <.dockerignore
fi
ignored() {
    local src=${1%/} pat
    src=${src#./}
    for pat in "${ignores[@]}"; do
        # shellcheck disable=SC2053 # the pattern is a glob on purpose
        if [[ $src == $pat || $src == $pat/* ]]; then
            return 0
        fi
    done
    return 1
}

check_copy() {
    local bad=0 n=0 r words src dest i
    for r in "${records[@]}"; do
        read -r -a words <<<"$r"
        case ${words[0]} in
        JSONCOPY)
            fail "copy: use the plain COPY form (stage ${words[1]})"
            return
            ;;
        COPY | ADD) ;;
        *) continue ;;
        esac
        if [ "${#words[@]}" -lt 4 ]; then
            fail "copy: '$r' has no source"
            return
        fi
        dest=${words[${#words[@]} - 1]}
        for ((i = 2; i < ${#words[@]} - 1; i++)); do
            src=${words[$i]}
            n=$((n + 1))
            if [ ! -e "$src" ]; then
                echo "  ${words[1]}: COPY $src $dest: no such file" >&2
                bad=1
            elif ignored "$src"; then
                echo "  ${words[1]}: COPY $src: excluded by .dockerignore" >&2
                bad=1
            fi
        done
    done
    if [ "$bad" = 0 ] && [ "$n" -gt 0 ]; then
        ok "copy: $n COPY sources exist and are in the build context"
    else
        fail "copy: see above ($n sources)"
    fi
}

# Lay out the build stage's COPY sources as the image would have them in
# its WORKDIR, and run the stage's make there (unoptimised: this checks
# that the files are enough, not the code). Sets context_dir.
context_dir=""
check_context() {
    local dir="$tmp/context" r words i src dest cmd
    mkdir -p "$dir"
    for r in "${records[@]}"; do
        read -r -a words <<<"$r"
        if [ "${words[0]}" != COPY ] || [ "${words[1]}" != build ]; then
            continue
        fi
        dest=${words[${#words[@]} - 1]}
        for ((i = 2; i < ${#words[@]} - 1; i++)); do
            src=${words[$i]}
            [ -e "$src" ] || continue # reported by the copy check
            if [ -d "$src" ]; then
                mkdir -p "$dir/$dest"
                cp -R "$src/." "$dir/$dest/"
            else
                mkdir -p "$dir/$dest"
                cp "$src" "$dir/$dest/"
            fi
        done
    done
    cmd=$(grep -E '^RUN make ' "$DOCKERFILE" | head -n 1 | sed 's/^RUN //')
    if [ -z "$cmd" ]; then
        fail "context: no 'RUN make' line in $DOCKERFILE"
        return
    fi
    # The stage's own command, with this machine's nproc, at -O0; not
    # with the variables of a make that runs this script (make test-asan
    # passes CC, SAN and BUILD down through MAKEFLAGS, and exports them:
    # with SAN=address left in, the image's binaries would link libasan).
    if (cd "$dir" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u CC -u CFLAGS \
        -u LDFLAGS -u BUILD -u SAN -u LTO bash -c "$cmd CFLAGS='-O0 -g0'" \
        >"$tmp/context.log" 2>&1) &&
        [ -x "$dir/build/gateway" ] && [ -x "$dir/build/mock-backend" ]; then
        context_dir=$dir
        ok "context: the COPY sources alone build gateway and mock-backend ($cmd)"
    else
        tail -n 20 "$tmp/context.log" >&2
        fail "context: '$cmd' fails on the COPY sources alone"
    fi
}

# ------------------------------------------------------------------ apt
apt_usable() {
    local codename
    # shellcheck disable=SC1091 # the machine's own file
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$codename" != bookworm ]; then
        echo "this is not Debian 12 (bookworm) but '${codename:-unknown}'"
        return 1
    fi
    if ! command -v apt-cache >/dev/null || ! compgen -G \
        '/var/lib/apt/lists/*bookworm*_Packages*' >/dev/null; then
        echo "no Debian 12 package lists (run apt-get update)"
        return 1
    fi
}

check_apt() {
    local why r words stage pkgs p known bad=0 n=0
    if ! why=$(apt_usable); then
        skip "apt: $why"
        return
    fi
    : >"$tmp/empty-status"
    for r in "${records[@]}"; do
        read -r -a words <<<"$r"
        [ "${words[0]}" = APT ] || continue
        stage=${words[1]}
        pkgs=("${words[@]:2}")
        # "NAME | VERSION | URL bookworm/main amd64 Packages" per version
        known=$(apt-cache madison "${pkgs[@]}" 2>/dev/null |
            awk -F' *[|] *' '$3 ~ /bookworm/ { sub(/^ */, "", $1); print $1 }')
        for p in "${pkgs[@]}"; do
            n=$((n + 1))
            if ! grep -qxF "$p" <<<"$known"; then
                echo "  $stage: $p: not a Debian 12 package" >&2
                bad=1
            fi
        done
        # The stage's list on a system with nothing installed: every
        # dependency resolves, nothing conflicts.
        if ! apt-get -s -o Dir::State::status="$tmp/empty-status" \
            -o Debug::NoLocking=1 -o Dir::Cache::pkgcache= \
            -o Dir::Cache::srcpkgcache= install --no-install-recommends \
            "${pkgs[@]}" >"$tmp/apt.log" 2>&1; then
            tail -n 5 "$tmp/apt.log" >&2
            echo "  $stage: apt-get install ${pkgs[*]} does not resolve" >&2
            bad=1
        fi
    done
    if [ "$bad" = 0 ] && [ "$n" -gt 0 ]; then
        ok "apt: $n package names are Debian 12 packages; each stage's list installs"
    else
        fail "apt: see above ($n names)"
    fi
}

# The runtime stage's packages must hold every library the binaries
# need; libc6 is in the base image.
check_libs() {
    local r words runtime_pkgs=() bin lib path pkg bad=0 n=0 multi
    if [ -z "$context_dir" ]; then
        skip "libs: no context build to look at"
        return
    fi
    if ! command -v readelf >/dev/null || ! command -v dpkg-query >/dev/null; then
        skip "libs: readelf or dpkg-query missing"
        return
    fi
    for r in "${records[@]}"; do
        read -r -a words <<<"$r"
        [ "${words[0]}" = APT ] && [ "${words[1]}" = "$last_stage" ] &&
            runtime_pkgs+=("${words[@]:2}")
    done
    multi=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
    for bin in "$context_dir/build/gateway" "$context_dir/build/mock-backend"; do
        for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u); do
            n=$((n + 1))
            path=$(dpkg-query -S "*/$multi/$lib" 2>/dev/null | head -n 1 || true)
            pkg=${path%%:*}
            if [ -z "$pkg" ]; then
                echo "  ${bin##*/}: $lib: no installed package holds it" >&2
                bad=1
            elif [ "$pkg" != libc6 ] &&
                ! grep -qxF "$pkg" <<<"$(printf '%s\n' "${runtime_pkgs[@]}")"; then
                echo "  ${bin##*/}: $lib is in $pkg, which stage $last_stage does not install" >&2
                bad=1
            fi
        done
    done
    if [ "$bad" = 0 ] && [ "$n" -gt 0 ]; then
        ok "libs: the $n libraries the binaries link against are in stage $last_stage (${runtime_pkgs[*]}) or libc6"
    else
        fail "libs: see above"
    fi
}

# -------------------------------------------------------------- compose
compose_cmd=()
find_compose() {
    if command -v docker-compose >/dev/null; then
        compose_cmd=(docker-compose)
    elif docker compose version >/dev/null 2>&1; then
        compose_cmd=(docker compose)
    fi
}

check_compose() {
    find_compose
    if [ ${#compose_cmd[@]} -eq 0 ]; then
        skip "compose: neither docker-compose nor 'docker compose' here (make deps installs Debian's docker-compose)"
        return
    fi
    if ! "${compose_cmd[@]}" -f "$COMPOSE" config -q 2>"$tmp/compose.err" ||
        ! "${compose_cmd[@]}" -f "$COMPOSE" --profile load config \
            >"$tmp/compose.yaml" 2>>"$tmp/compose.err"; then
        cat "$tmp/compose.err" >&2
        fail "compose: ${compose_cmd[*]} config refuses $COMPOSE"
        return
    fi
    # The backends' hosts are services, and each of those runs a mock
    # with --port set to the URL's port.
    local services hostport host port bad=0
    services=$(awk '/^[^ ]/ { in_s = $0 == "services:"; next }
        in_s && /^  [^ ].*:$/ { sub(/^  /, ""); sub(/:$/, ""); print }' \
        "$tmp/compose.yaml")
    while IFS= read -r hostport; do
        host=${hostport%%:*}
        port=${hostport##*:}
        if ! grep -qxF "$host" <<<"$services"; then
            echo "  routes/compose.json: backend host $host is not a compose service" >&2
            bad=1
        elif ! awk -v s="  $host:" -v p="$port" '
                $0 == s { in_s = 1; next }
                in_s && /^  [^ ]/ { in_s = 0 }
                in_s && prev ~ /- --port$/ && $0 ~ "- .?" p ".?$" { found = 1 }
                { prev = $0 }
                END { exit !found }' "$tmp/compose.yaml"; then
            echo "  service $host does not run with --port $port" >&2
            bad=1
        fi
    done < <(grep -oE '"url": *"http://[^"]*"' routes/compose.json |
        sed 's/.*"http:\/\/\([^"/]*\).*/\1/')
    if [ "$bad" = 0 ]; then
        ok "compose: '${compose_cmd[*]} config' accepts $COMPOSE; the backends of routes/compose.json are its services"
    else
        fail "compose: see above"
    fi
}

# --------------------------------------------------------------- config
check_config() {
    local out
    if ! out=$("$GW" -c routes/compose.json --check 2>&1) || [ -n "$out" ]; then
        echo "$out" >&2
        fail "config: $GW -c routes/compose.json --check"
        return
    fi
    if ! grep -qE '"listen": *"(0\.0\.0\.0)?:8080"' routes/compose.json; then
        fail "config: routes/compose.json must listen on 0.0.0.0:8080 (or :8080) in a container"
        return
    fi
    ok "config: routes/compose.json is valid and listens on all interfaces"
}

# ---------------------------------------------------------------- probe
# The port a "NAME listening on HOST:PORT" line on stderr gives, within 5 s.
wait_port() {
    local log=$1 port
    for _ in $(seq 50); do
        port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p;T;q' "$log")
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# expect STATUS URL: the probe exits STATUS (stderr kept for the report).
expect() {
    local want=$1 url=$2 got=0
    "$GW" --probe "$url" 2>"$tmp/probe.err" || got=$?
    if [ "$got" != "$want" ]; then
        echo "  --probe $url: exit $got, want $want ($(cat "$tmp/probe.err"))" >&2
        return 1
    fi
}

check_probe() {
    local port mpid gport gpid bad=0 t0 t1 ms
    "$MOCK" --port 0 --name probe 2>"$tmp/mock.log" &
    mpid=$!
    pids+=("$mpid")
    if ! port=$(wait_port "$tmp/mock.log"); then
        fail "probe: the mock backend did not start"
        return
    fi
    expect 0 "http://127.0.0.1:$port/stats" || bad=1
    expect 0 "http://localhost:$port/users/7" || bad=1
    expect 1 "http://127.0.0.1:$port/nope" || bad=1             # 404
    expect 1 "http://127.0.0.1:$port/users/7?status=503" || bad=1
    expect 1 "https://127.0.0.1:$port/stats" || bad=1           # bad URL
    expect 1 "http://probe:$port/stats" || bad=1                # no DNS
    # No answer: the mock holds the request 4 s; the probe gives up at 2 s.
    t0=$(date +%s%N)
    expect 1 "http://127.0.0.1:$port/users/7?delay_ms=4000" || bad=1
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    if [ "$ms" -lt 1500 ] || [ "$ms" -gt 3500 ]; then
        echo "  the timeout took $ms ms, want 2000 (1500..3500)" >&2
        bad=1
    fi
    kill "$mpid" 2>/dev/null || true
    wait "$mpid" 2>/dev/null || true
    expect 1 "http://127.0.0.1:$port/stats" || bad=1            # closed

    # The image's HEALTHCHECK against a real gateway: a config like
    # routes/compose.json on a loopback port the closed mock left free.
    gport=$port
    sed -e "s/\"listen\": *\"[^\"]*\"/\"listen\": \"127.0.0.1:$gport\"/" \
        -e '/"admin":/d' routes/compose.json >"$tmp/gw.json"
    "$GW" -c "$tmp/gw.json" --workers 1 2>"$tmp/gw.log" &
    gpid=$!
    pids+=("$gpid")
    if ! wait_port "$tmp/gw.log" >/dev/null; then
        cat "$tmp/gw.log" >&2
        fail "probe: the gateway did not start"
        return
    fi
    expect 0 "http://127.0.0.1:$gport/healthz" || bad=1
    expect 1 "http://127.0.0.1:$gport/no/such/route" || bad=1  # 404
    kill "$gpid" 2>/dev/null || true
    wait "$gpid" 2>/dev/null || true
    if [ "$bad" = 0 ]; then
        ok "probe: 0 for mock /stats and gateway /healthz; 1 for 404, 503, closed port, bad URL, host name, no answer in 2 s (${ms} ms)"
    else
        fail "probe: see above"
    fi
}

check_compose
check_copy
check_context
check_apt
check_libs
check_config
check_probe

echo "docker-check: $passed checks ok, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
