#!/usr/bin/env bash
# Makes a development CA and a server certificate for localhost in
# certs/dev/: ca.crt, ca.key, server.crt, server.key (EC P-256, 825 days,
# SAN DNS:localhost, IP:127.0.0.1, IP:::1). Existing files are kept; when
# ca.crt or ca.key is missing all four are made again, and a missing
# server file is remade from the existing CA.
# FANFOLD_CERTS_DIR=DIR writes them to DIR instead (the tests use it).
set -euo pipefail
cd "$(dirname "$0")"
out=${FANFOLD_CERTS_DIR:-dev}
shown=$out
[ "$out" = dev ] && shown=certs/dev
days=825
mkdir -p "$out"
umask 077

if [ ! -f "$out/ca.crt" ] || [ ! -f "$out/ca.key" ]; then
    rm -f "$out"/ca.crt "$out"/ca.key "$out"/server.crt "$out"/server.key
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -sha256 -days "$days" -subj "/CN=fanfold development CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
    echo "certs: made $shown/ca.crt"
fi

if [ ! -f "$out/server.crt" ] || [ ! -f "$out/server.key" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cat >"$tmp/ext.cnf" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout "$out/server.key" \
        -out "$tmp/server.csr" 2>/dev/null
    openssl x509 -req -sha256 -days "$days" -in "$tmp/server.csr" \
        -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$tmp/ext.cnf" -out "$out/server.crt" 2>/dev/null
    chmod 644 "$out/server.crt" "$out/ca.crt"
    echo "certs: made $shown/server.crt"
fi
