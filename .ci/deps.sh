#!/usr/bin/env bash
# Install the Debian packages fanfold needs, and only those that are missing.
# One dpkg-query call decides; when everything is present this is a no-op
# that takes a few milliseconds. Uses sudo when not run as root.
set -euo pipefail

# gcc only recommends libc6-dev, which --no-install-recommends skips.
# docker-compose (1.29) is for tests/docker-check.sh: `docker-compose
# config` validates docker/compose.yaml offline, without a Docker engine.
# python3-yaml and python3-kubernetes are for tests/k8s-check.sh: it
# parses docker/k8s/ and checks every field against the API's models.
# python3-prometheus-client: test_metrics cross-checks the exposition with
# its parser.
PACKAGES=(
    node-llhttp libssl-dev libc-ares-dev libcurl4-openssl-dev libjansson-dev
    libcmocka-dev pkg-config clang libclang-rt-14-dev llvm wrk curl openssl
    valgrind dnsmasq-base python3 make gcc libc6-dev docker-compose
    python3-yaml python3-kubernetes python3-prometheus-client
)

installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' \
    "${PACKAGES[@]}" 2>/dev/null | awk '$1 == "ii" { print $2 }' |
    sed 's/:.*//' || true)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! grep -qxF "$pkg" <<<"$installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "make deps: installing ${missing[*]}" >&2
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "make deps: not root and sudo is missing; install as root:" >&2
        echo "  apt-get install ${missing[*]}" >&2
        exit 1
    fi
    SUDO=(sudo)
fi
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
