#!/usr/bin/env bash
# tests/k8s-check.sh - checks docker/k8s/ offline, without a cluster.
# Run by make test (through tests/run-tests.sh); exits non-zero when a
# check fails. Env: BUILD [build] (where make put build/gateway). The
# checks themselves are in tests/k8s-check.py:
#
#   yaml           kustomization.yaml and every resource file parse
#   kustomization  every file in docker/k8s is a resource or a generator
#                  file of kustomization.yaml; no object pins a namespace
#   config         the gateway's -c FILE is a key of the configMap volume
#                  mounted at FILE's directory (not a subPath), and that
#                  JSON passes `gateway --check`
#   selectors      each Deployment's selector matches its pod labels and
#                  no other Deployment's (topology spread too)
#   image          every container runs compose's image (IfNotPresent) and
#                  a binary the Dockerfile installs
#   user           runAsUser is the uid of the Dockerfile's USER; non-root,
#                  no privilege escalation
#   addresses      the config's listen and admin are containerPorts, on
#                  0.0.0.0 (the kubelet and Services reach the pod IP)
#   probes         readiness: GET /healthz on the admin port; liveness on
#                  the listen or admin port, and failureThreshold x
#                  periodSeconds longer than drain_timeout_ms
#   grace          terminationGracePeriodSeconds >= preStop sleep +
#                  drain_timeout_ms/1000 + 1
#   resources      requests <= limits everywhere; workers 0 needs a CPU
#                  limit; the gateway has a CPU request (for the HPA)
#   services       Service targetPorts reach the gateway's listen port,
#                  none the admin port; each Service selects one Deployment
#   backends       each backend URL's host:port is a Service whose pods
#                  (a mock with --port, --listen 0.0.0.0) listen there
#   pdb-hpa        the PDB and the HPA (autoscaling/v2, CPU) target the
#                  gateway Deployment, which has no replicas field
#   prestop        the preStop program is in an Essential Debian package
#                  (so in debian:bookworm-slim)
#   fields         every field name and type is one the API knows
#                  (python3-kubernetes' models)
#   live           the ConfigMap's config started on loopback ports: the
#                  probes' URLs answer 2xx
#   kustomize      `kubectl kustomize docker/k8s` renders the same objects
#                  (the ConfigMap name hashed) and the cross-checks pass
#                  on its output
#
# Nothing here applies anything to a cluster. A check that cannot run
# says SKIP and why: the whole script without a python3 that has the yaml
# module (make deps installs python3-yaml), kustomize without kubectl
# (not a Debian 12 package), fields without python3-kubernetes.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
GW="$BUILD/gateway"

[ -x "$GW" ] || { echo "k8s-check: $GW is missing: run make first" >&2; exit 1; }

# Debian's python3 first: make deps installs python3-yaml for it (a
# python3 earlier on PATH, e.g. pyenv's, may not have it).
py=""
for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import yaml' 2>/dev/null; then
        py=$p
        break
    fi
done
if [ -z "$py" ]; then
    echo "SKIP: k8s-check: no python3 with the yaml module (apt-get install python3-yaml)"
    echo "k8s-check: 0 checks ok, 0 failed, 1 skipped"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# kubectl kustomize needs no cluster and no kubeconfig.
if ! command -v kubectl >/dev/null; then
    rendered="-no kubectl here (not a Debian 12 package): kubectl kustomize docker/k8s not run"
elif ! timeout 60 kubectl kustomize docker/k8s >"$tmp/rendered.yaml" 2>"$tmp/kustomize.err"; then
    cat "$tmp/kustomize.err" >&2
    echo "FAIL: kustomize: kubectl kustomize docker/k8s refuses the kustomization"
    rendered="-kubectl kustomize failed (above)"
    kfail=1
else
    rendered="$tmp/rendered.yaml"
fi

rc=0
"$py" tests/k8s-check.py "$GW" "$rendered" || rc=$?
[ -z "${kfail:-}" ] || rc=1
exit "$rc"
