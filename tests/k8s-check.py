"""tests/k8s-check.py - the checks of tests/k8s-check.sh (which runs it
with a python3 that has the yaml module, from the repository root).

Usage: k8s-check.py GATEWAY [RENDERED | -REASON]
  GATEWAY   build/gateway, for --check and a live start of the config
  RENDERED  `kubectl kustomize docker/k8s` output, or "-why" when kubectl
            could not be run (the kustomize check is then skipped)

Prints one "ok:", "FAIL:" or "SKIP:" line per check, then a summary;
exits 1 when a check failed. See tests/k8s-check.sh for the list.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import yaml

K8S = "docker/k8s"
DOCKERFILE = "docker/Dockerfile"
COMPOSE = "docker/compose.yaml"
GW_BIN = "/usr/local/bin/gateway"
MOCK_BIN = "/usr/local/bin/mock-backend"


class Fail(Exception):
    """A check failed; args[0] is a list of problems."""


class Skip(Exception):
    """A check cannot run here; args[0] says why."""


def problems(found):
    if found:
        raise Fail(found)


# ------------------------------------------------------------- loading


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_kustomization():
    """The kustomization, its resource files, and the objects they and
    the configMapGenerator make (generated ConfigMaps keep the generator's
    name: kustomize would add a hash)."""
    kust = load_docs(os.path.join(K8S, "kustomization.yaml"))[0]
    files, objs = [], []
    for r in kust.get("resources", []):
        files.append(r)
        for d in load_docs(os.path.join(K8S, r)):
            objs.append(d)
    for g in kust.get("configMapGenerator", []):
        data = {}
        for spec in g.get("files", []):
            key, _, path = spec.rpartition("=")
            key = key or os.path.basename(path)
            with open(os.path.join(K8S, path), encoding="utf-8") as f:
                data[key] = f.read()
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": g["name"]}, "data": data,
                     "_generated_from": [s.rpartition("=")[2]
                                         for s in g.get("files", [])]})
    return kust, files, objs


def name(o):
    return o.get("metadata", {}).get("name", "?")


def of_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def containers(dep):
    return dep["spec"]["template"]["spec"].get("containers", [])


def cmdline(c):
    return list(c.get("command") or []) + list(c.get("args") or [])


def gateway_deployment(objs):
    deps = [d for d in of_kind(objs, "Deployment")
            if any(cmdline(c)[:1] == [GW_BIN] for c in containers(d))]
    if len(deps) != 1:
        raise Fail([f"want one Deployment running {GW_BIN}, found "
                    f"{len(deps)}"])
    d = deps[0]
    c = [c for c in containers(d) if cmdline(c)[:1] == [GW_BIN]][0]
    return d, c


def flag(argv, *names):
    for i, a in enumerate(argv):
        if a in names and i + 1 < len(argv):
            return argv[i + 1]
        for n in names:
            if n.startswith("--") and a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def config_path(c):
    p = flag(cmdline(c), "-c")
    if p is None:
        raise Fail(["the gateway container has no -c FILE argument"])
    return p


def mounted_config(objs, dep, c):
    """(path, text) of the configuration file -c names, through the
    container's volumeMounts and the pod's configMap volume."""
    path = config_path(c)
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]
            .get("volumes", [])}
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        sub = m.get("subPath")
        if sub:
            if path != mp:
                continue
            key = sub
        elif os.path.dirname(path) == mp:
            key = os.path.basename(path)
        else:
            continue
        v = vols.get(m["name"])
        if v is None or "configMap" not in v:
            raise Fail([f"{path}: volume {m['name']} is not a configMap"])
        cm_name = v["configMap"]["name"]
        for it in v["configMap"].get("items") or []:
            if it["path"] == key:
                key = it["key"]
                break
        else:
            if v["configMap"].get("items"):
                raise Fail([f"{path}: configMap items do not map {key}"])
        cms = [o for o in of_kind(objs, "ConfigMap") if name(o) == cm_name]
        if not cms:
            raise Fail([f"{path}: ConfigMap {cm_name} is not among the "
                        f"objects"])
        data = cms[0].get("data", {})
        if key not in data:
            raise Fail([f"{path}: ConfigMap {cm_name} has no key {key} "
                        f"(has {sorted(data)})"])
        return path, data[key], m, cms[0]
    raise Fail([f"-c {path}: no volumeMount of the container puts a file "
                f"there"])


def gateway_config(objs):
    dep, c = gateway_deployment(objs)
    _, text, _, _ = mounted_config(objs, dep, c)
    try:
        return json.loads(text)
    except ValueError as e:
        raise Fail([f"the ConfigMap's configuration is not JSON: {e}"])


def split_addr(a):
    host, _, port = a.rpartition(":")
    return host, int(port)


def all_interfaces(host):
    return host in ("", "0.0.0.0", "[::]")


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(dep):
    return dep["spec"]["template"].get("metadata", {}).get("labels", {})


def match_labels(sel, what):
    if sel.get("matchExpressions"):
        raise Fail([f"{what}: matchExpressions are not checked here: use "
                    f"matchLabels"])
    ml = sel.get("matchLabels")
    if not ml:
        raise Fail([f"{what}: no matchLabels"])
    return ml


def port_number(c, port):
    """A probe's or targetPort's port (number or name) as a number."""
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def selected(objs, selector):
    return [d for d in of_kind(objs, "Deployment")
            if matches(selector, pod_labels(d))]


QUANTITY = re.compile(r"^([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$")
SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
          "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(q):
    m = QUANTITY.match(str(q))
    if not m or m.group(2) not in SUFFIX:
        raise ValueError(f"not a quantity: {q!r}")
    return float(m.group(1)) * SUFFIX[m.group(2)]


def drain_s(cfg):
    return cfg.get("limits", {}).get("drain_timeout_ms", 10000) / 1000


def prestop_seconds(c):
    ps = c.get("lifecycle", {}).get("preStop")
    if ps is None:
        return 0, None
    if "sleep" in ps:
        return int(ps["sleep"]["seconds"]), None
    if "exec" in ps:
        cmd = ps["exec"]["command"]
        words = " ".join(cmd[2:]).split() if cmd[1:2] == ["-c"] else cmd
        for i, w in enumerate(words):
            if os.path.basename(w) == "sleep" and i + 1 < len(words):
                return int(float(words[i + 1])), cmd[0]
    raise Fail([f"preStop {ps}: no sleep found to count"])


# ----------------------------------------------------- the cross-checks
# Each takes the objects and returns what it verified, or raises Fail.


def check_selectors(objs):
    bad = []
    for d in of_kind(objs, "Deployment"):
        try:
            ml = match_labels(d["spec"]["selector"], f"Deployment {name(d)}")
        except Fail as e:
            bad += e.args[0]
            continue
        if not matches(ml, pod_labels(d)):
            bad.append(f"Deployment {name(d)}: selector {ml} does not "
                       f"match its pod labels {pod_labels(d)}")
        others = [name(o) for o in of_kind(objs, "Deployment")
                  if o is not d and matches(ml, pod_labels(o))]
        if others:
            bad.append(f"Deployment {name(d)}: selector {ml} also "
                       f"matches the pods of {others}")
        for t in d["spec"]["template"]["spec"].get(
                "topologySpreadConstraints", []):
            sel = t.get("labelSelector", {}).get("matchLabels", {})
            if not sel or not matches(sel, pod_labels(d)):
                bad.append(f"Deployment {name(d)}: topologySpreadConstraint "
                           f"selector {sel} misses its own pods")
    problems(bad)
    return (f"{len(of_kind(objs, 'Deployment'))} Deployments: each "
            f"selector matches its own pod labels and no other's")


def check_image(objs):
    with open(COMPOSE, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    want = compose["services"]["gateway"].get("image") or \
        compose.get("x-fanfold", {}).get("image")
    bad = []
    for d in of_kind(objs, "Deployment"):
        for c in containers(d):
            if c.get("image") != want:
                bad.append(f"{name(d)}/{c['name']}: image {c.get('image')}, "
                           f"compose builds {want}")
            pol = c.get("imagePullPolicy")
            if pol not in ("IfNotPresent", "Never"):
                bad.append(f"{name(d)}/{c['name']}: imagePullPolicy {pol} "
                           f"(a locally built image: IfNotPresent)")
            prog = cmdline(c)[:1]
            if prog not in ([GW_BIN], [MOCK_BIN]):
                bad.append(f"{name(d)}/{c['name']}: runs {prog}, not "
                           f"{GW_BIN} or {MOCK_BIN}")
    # The binaries are where the Dockerfile copies them.
    with open(DOCKERFILE, encoding="utf-8") as f:
        df = f.read()
    copy = re.search(r"^COPY --from=build (.*) /usr/local/bin/$", df, re.M)
    if not copy or not {"/src/build/gateway", "/src/build/mock-backend"} <= \
            set(copy.group(1).split()):
        bad.append("the Dockerfile does not copy build/gateway and "
                   "build/mock-backend to /usr/local/bin/")
    problems(bad)
    return (f"every container runs {want} (compose's image, "
            f"IfNotPresent) and {GW_BIN} or {MOCK_BIN}, which the "
            f"Dockerfile installs")


def dockerfile_user():
    """(uid, user) of the Dockerfile's last stage."""
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", f.read())
    last = re.split(r"^FROM ", text, flags=re.M)[-1]
    user = re.findall(r"^USER\s+(\S+)", last, re.M)
    if not user:
        raise Fail([f"{DOCKERFILE}: no USER in the last stage"])
    user = user[-1]
    if user.isdigit():
        return int(user), user
    for line in re.findall(r"^RUN .*useradd.*$", last, re.M):
        words = line.split()
        uid = flag(words, "--uid", "-u")
        if uid and words[-1] == user:
            return int(uid), user
    raise Fail([f"{DOCKERFILE}: no useradd --uid for USER {user}"])


def check_user(objs):
    uid, user = dockerfile_user()
    bad = []
    for d in of_kind(objs, "Deployment"):
        pod_sc = d["spec"]["template"]["spec"].get("securityContext", {})
        for c in containers(d):
            sc = dict(pod_sc, **c.get("securityContext", {}))
            where = f"{name(d)}/{c['name']}"
            if sc.get("runAsUser") != uid:
                bad.append(f"{where}: runAsUser {sc.get('runAsUser')}, the "
                           f"image's user {user} is {uid}")
            if sc.get("runAsNonRoot") is not True:
                bad.append(f"{where}: runAsNonRoot is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{where}: allowPrivilegeEscalation is not false")
    problems(bad)
    return (f"every pod runs as uid {uid} (the Dockerfile's useradd for "
            f"USER {user}; a named USER needs the numeric runAsUser for "
            f"runAsNonRoot), without privilege escalation")


def check_config_mount(objs, gw):
    dep, c = gateway_deployment(objs)
    path, text, mount, cm = mounted_config(objs, dep, c)
    if mount.get("subPath"):
        raise Fail([f"{path} is a subPath mount: the kubelet never updates "
                    f"those (mount the directory)"])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run([gw, "--check", "-c", f.name], capture_output=True,
                           text=True, timeout=30)
    finally:
        os.unlink(f.name)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or out:
        raise Fail([f"gateway --check on ConfigMap {name(cm)}: exit "
                    f"{r.returncode}"] + out.splitlines())
    return (f"-c {path} is key {os.path.basename(path)} of ConfigMap "
            f"{name(cm)} mounted at {mount['mountPath']}; it passes "
            f"gateway --check")


def check_addresses(objs):
    dep, c = gateway_deployment(objs)
    cfg = gateway_config(objs)
    bad = []
    if "admin" not in cfg:
        raise Fail(["the configuration has no admin listener: the probes "
                    "need its /healthz"])
    lh, lp = split_addr(cfg["listen"])
    ah, ap = split_addr(cfg["admin"])
    for key, host in (("listen", lh), ("admin", ah)):
        if not all_interfaces(host):
            bad.append(f"{key} {cfg[key]}: the kubelet and Services reach "
                       f"the pod IP, listen on 0.0.0.0")
    cports = {p["containerPort"] for p in c.get("ports", [])}
    for key, port in (("listen", lp), ("admin", ap)):
        if port not in cports:
            bad.append(f"{key} port {port} is not a containerPort "
                       f"({sorted(cports)})")
    ann = dep["spec"]["template"].get("metadata", {}).get("annotations", {})
    if "prometheus.io/port" in ann and ann["prometheus.io/port"] != str(ap):
        bad.append(f"prometheus.io/port {ann['prometheus.io/port']} is not "
                   f"the admin port {ap}")
    problems(bad)
    return (f"config listen {cfg['listen']} and admin {cfg['admin']} are "
            f"containerPorts {lp} and {ap}, on all interfaces")


def check_probes(objs):
    dep, c = gateway_deployment(objs)
    cfg = gateway_config(objs)
    _, lp = split_addr(cfg["listen"])
    _, ap = split_addr(cfg["admin"])
    bad = []
    rp = c.get("readinessProbe")
    if not rp or "httpGet" not in rp:
        bad.append("the gateway has no httpGet readinessProbe")
    else:
        h = rp["httpGet"]
        if h.get("path") != "/healthz" or port_number(c, h["port"]) != ap:
            bad.append(f"readinessProbe GET {h.get('path')} on port "
                       f"{h['port']}: want /healthz on the admin port {ap} "
                       f"(503 while draining)")
    lv = c.get("livenessProbe")
    what = "none"
    if not lv:
        bad.append("the gateway has no livenessProbe")
    else:
        if "httpGet" in lv:
            port = port_number(c, lv["httpGet"]["port"])
            what = f"httpGet {lv['httpGet'].get('path')} :{port}"
            if lv["httpGet"].get("path") != "/healthz":
                bad.append(f"livenessProbe path {lv['httpGet'].get('path')}"
                           f": want /healthz")
        elif "tcpSocket" in lv:
            port = port_number(c, lv["tcpSocket"]["port"])
            what = f"tcpSocket :{port}"
        elif "exec" in lv:
            m = re.search(r"--probe\s+http://[^:/]+:(\d+)",
                          " ".join(lv["exec"]["command"]))
            port = int(m.group(1)) if m else None
            what = "exec"
        else:
            port = None
        if port not in (lp, ap):
            bad.append(f"livenessProbe port {port} is neither listen "
                       f"({lp}) nor admin ({ap})")
        # Every kind of probe fails while the gateway drains (listeners
        # closed, /healthz 503): it may not add up to a restart before
        # the drain has ended.
        # The first failure may come as the drain starts: the restart
        # comes (failureThreshold - 1) periods later at the earliest.
        window = (lv.get("failureThreshold", 3) - 1) * \
            lv.get("periodSeconds", 10)
        if window <= drain_s(cfg) + 1:
            bad.append(f"livenessProbe: (failureThreshold - 1) x "
                       f"periodSeconds = {window} s, not more than the "
                       f"drain ({drain_s(cfg):g} s) + 1 s to exit: it could "
                       f"kill a draining gateway")
    problems(bad)
    return (f"readiness GET /healthz on admin :{ap}; liveness {what}, "
            f"restarts after >= {window} s of failures > {drain_s(cfg):g} "
            f"s of drain + 1")


def check_grace(objs):
    dep, c = gateway_deployment(objs)
    cfg = gateway_config(objs)
    tgps = dep["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", 30)
    pre, _ = prestop_seconds(c)
    need = pre + drain_s(cfg) + 1
    if pre == 0:
        raise Fail(["the gateway has no preStop sleep: SIGTERM closes the "
                    "listeners before endpoints drop the pod"])
    if not tgps > pre + drain_s(cfg) or tgps < need:
        raise Fail([f"terminationGracePeriodSeconds {tgps} < preStop {pre} "
                    f"+ drain_timeout_ms/1000 {drain_s(cfg):g} + 1 s to "
                    f"exit = {need:g}"])
    return (f"terminationGracePeriodSeconds {tgps} >= preStop {pre} + drain "
            f"{drain_s(cfg):g} + 1 = {need:g}")


def check_resources(objs):
    bad, seen = [], 0
    for d in of_kind(objs, "Deployment"):
        for c in containers(d):
            res = c.get("resources", {})
            req, lim = res.get("requests", {}), res.get("limits", {})
            where = f"{name(d)}/{c['name']}"
            if not req or not lim:
                bad.append(f"{where}: requests and limits both wanted")
            for r in set(req) & set(lim):
                seen += 1
                try:
                    if quantity(req[r]) > quantity(lim[r]):
                        bad.append(f"{where}: {r} request {req[r]} > limit "
                                   f"{lim[r]}")
                except ValueError as e:
                    bad.append(f"{where}: {e}")
    dep, c = gateway_deployment(objs)
    cfg = gateway_config(objs)
    cpu = c.get("resources", {}).get("limits", {}).get("cpu")
    note = ""
    if cfg.get("workers", 0) == 0:
        if cpu is None:
            bad.append("workers 0 without a CPU limit: one worker per CPU "
                       "of the node")
        else:
            ps = -(-quantity(cpu) // 1)
            note = f"; workers 0 with CPU limit {cpu} -> {ps:.0f} workers"
    if "cpu" not in c.get("resources", {}).get("requests", {}):
        bad.append("the gateway has no CPU request: the HPA's utilisation "
                   "is a fraction of it")
    problems(bad)
    return f"{seen} requests <= their limits{note}"


def check_services(objs):
    dep, c = gateway_deployment(objs)
    cfg = gateway_config(objs)
    _, lp = split_addr(cfg["listen"])
    _, ap = split_addr(cfg["admin"])
    bad, gw_ports = [], []
    for s in of_kind(objs, "Service"):
        sel = s["spec"].get("selector", {})
        deps = selected(objs, sel)
        if len(deps) != 1:
            bad.append(f"Service {name(s)}: selector {sel} selects "
                       f"{[name(d) for d in deps]}, want one Deployment")
            continue
        if deps[0] is not dep:
            continue
        for p in s["spec"]["ports"]:
            t = port_number(c, p.get("targetPort", p["port"]))
            if t == ap:
                bad.append(f"Service {name(s)} exposes the admin port {ap} "
                           f"(no authentication)")
            elif t != lp:
                bad.append(f"Service {name(s)}: targetPort "
                           f"{p.get('targetPort')} is {t}, the gateway "
                           f"listens on {lp}")
            else:
                gw_ports.append(f"{p['port']}->{t}")
    if not gw_ports:
        bad.append("no Service sends traffic to the gateway's port")
    problems(bad)
    return (f"Service ports {gw_ports} reach the gateway's listen port; no "
            f"Service exposes admin :{ap}; each Service selects one "
            f"Deployment")


def check_backends(objs):
    cfg = gateway_config(objs)
    bad, seen = [], []
    services = {name(s): s for s in of_kind(objs, "Service")}
    for b, spec in cfg.get("backends", {}).items():
        m = re.match(r"^https?://([^/:]+)(?::(\d+))?", spec["url"])
        host = m.group(1)
        port = int(m.group(2) or (443 if spec["url"].startswith("https")
                                  else 80))
        s = services.get(host)
        if s is None:
            bad.append(f"backend {b}: host {host} is not a Service here")
            continue
        ps = [p for p in s["spec"]["ports"] if p["port"] == port]
        deps = selected(objs, s["spec"].get("selector", {}))
        if not ps or len(deps) != 1:
            bad.append(f"backend {b}: Service {host} has no port {port} or "
                       f"does not select one Deployment")
            continue
        c = containers(deps[0])[0]
        t = port_number(c, ps[0].get("targetPort", port))
        argv = cmdline(c)
        if argv[:1] == [MOCK_BIN]:
            mp = flag(argv, "--port")
            if mp is None or int(mp) != t:
                bad.append(f"backend {b}: Service {host} targets {t}, the "
                           f"mock runs with --port {mp}")
            if not all_interfaces(flag(argv, "--listen") or "127.0.0.1"):
                bad.append(f"backend {b}: the mock listens on "
                           f"{flag(argv, '--listen') or '127.0.0.1'}: want "
                           f"--listen 0.0.0.0")
            rp = c.get("readinessProbe", {}).get("httpGet")
            if rp and port_number(c, rp["port"]) != t:
                bad.append(f"backend {b}: readinessProbe on "
                           f"{rp['port']}, the mock on {t}")
        seen.append(f"{host}:{port}")
    problems(bad)
    return (f"the backends' hosts {seen} are Services whose pods listen "
            f"there (mock --port, --listen 0.0.0.0)")


def check_pdb_hpa(objs):
    dep, c = gateway_deployment(objs)
    bad = []
    pdbs = [p for p in of_kind(objs, "PodDisruptionBudget")
            if matches(match_labels(p["spec"]["selector"], name(p)),
                       pod_labels(dep))]
    for p in of_kind(objs, "PodDisruptionBudget"):
        got = selected(objs, p["spec"]["selector"]["matchLabels"])
        if [name(d) for d in got] != [name(dep)]:
            bad.append(f"PodDisruptionBudget {name(p)} selects "
                       f"{[name(d) for d in got]}")
    hpas = [h for h in of_kind(objs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"].get("name") == name(dep)]
    if len(pdbs) != 1 or len(hpas) != 1:
        bad.append(f"want one PodDisruptionBudget and one "
                   f"HorizontalPodAutoscaler for {name(dep)}, found "
                   f"{len(pdbs)} and {len(hpas)}")
        problems(bad)
    h = hpas[0]
    ref = h["spec"]["scaleTargetRef"]
    if (ref.get("apiVersion"), ref.get("kind")) != ("apps/v1", "Deployment"):
        bad.append(f"HPA scaleTargetRef {ref}: want apps/v1 Deployment")
    if h.get("apiVersion") != "autoscaling/v2":
        bad.append(f"HPA apiVersion {h.get('apiVersion')}: want "
                   f"autoscaling/v2")
    mins = h["spec"].get("minReplicas", 1)
    if not any(m.get("type") == "Resource" and
               m["resource"]["name"] == "cpu" for m in h["spec"]["metrics"]):
        bad.append("the HPA does not scale on CPU")
    if "replicas" in dep["spec"]:
        bad.append(f"Deployment {name(dep)} sets replicas: every apply "
                   f"would undo the HPA")
    p = pdbs[0]["spec"]
    if "minAvailable" in p and isinstance(p["minAvailable"], int) and \
            p["minAvailable"] >= mins:
        bad.append(f"PDB minAvailable {p['minAvailable']} >= HPA "
                   f"minReplicas {mins}: no voluntary eviction could pass")
    if mins < 2:
        bad.append(f"HPA minReplicas {mins}: a disruption would leave no "
                   f"gateway")
    problems(bad)
    budget = (f"maxUnavailable {p['maxUnavailable']}"
              if "maxUnavailable" in p
              else f"minAvailable {p['minAvailable']}")
    return (f"PDB {name(pdbs[0])} ({budget}) selects only {name(dep)}'s "
            f"pods; HPA {name(h)} scales Deployment {name(dep)} on CPU from "
            f"{mins} to {h['spec']['maxReplicas']}; no replicas field")


TIES = [
    ("selectors", check_selectors),
    ("image", check_image),
    ("user", check_user),
    ("addresses", check_addresses),
    ("probes", check_probes),
    ("grace", check_grace),
    ("resources", check_resources),
    ("services", check_services),
    ("backends", check_backends),
    ("pdb-hpa", check_pdb_hpa),
]

# ------------------------------------------------------- other checks


def check_kustomization(kust, files, objs):
    bad = []
    listed = set(files)
    for g in kust.get("configMapGenerator", []):
        for spec in g.get("files", []):
            listed.add(spec.rpartition("=")[2])
    for f in sorted(os.listdir(K8S)):
        if f == "kustomization.yaml" or f.endswith(".md"):
            continue
        if f not in listed:
            bad.append(f"{K8S}/{f} is neither a resource nor a generator "
                       f"file of kustomization.yaml")
    for o in objs:
        if o.get("kind") and o["kind"] != "ConfigMap" and \
                "namespace" in o.get("metadata", {}):
            bad.append(f"{o['kind']} {name(o)} sets a namespace")
    problems(bad)
    kinds = {}
    for o in objs:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    return (f"{len(files)} resource files and "
            f"{len(kust.get('configMapGenerator', []))} generated ConfigMap: "
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))


def check_prestop_binary(objs):
    """The preStop program exists in the image: it belongs to an Essential
    Debian package, which debian:bookworm-slim has."""
    _, c = gateway_deployment(objs)
    _, prog = prestop_seconds(c)
    if prog is None:
        return "no exec preStop (nothing to look for in the image)"
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            if "VERSION_CODENAME=bookworm" not in f.read():
                raise Skip("this is not Debian 12: cannot tell which package "
                           f"has {prog}")
        r = subprocess.run(["dpkg-query", "-S", prog], capture_output=True,
                           text=True)
    except FileNotFoundError:
        raise Skip("no dpkg-query here")
    pkg = r.stdout.split(":")[0] if r.returncode == 0 else ""
    if not pkg:
        raise Fail([f"preStop {prog}: no Debian package has it"])
    ess = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", pkg],
                         capture_output=True, text=True).stdout.strip()
    if ess != "yes":
        raise Fail([f"preStop {prog} is in {pkg}, which is not Essential: "
                    f"debian:bookworm-slim may not have it"])
    return f"preStop {prog} is in {pkg}, Essential: in every Debian 12 image"


def check_fields(objs):
    """Every field name and value shape of every object is one the API
    knows (kubectl apply refuses unknown fields), against the models of
    the python3-kubernetes package."""
    try:
        import kubernetes
        from kubernetes import client
    except ImportError:
        raise Skip("no python3-kubernetes "
                   "(apt-get install python3-kubernetes)")
    # Its 1.22-era models have autoscaling/v2's schema as v2beta2.
    models = {"apps/v1": "V1", "v1": "V1", "policy/v1": "V1",
              "autoscaling/v2": "V2beta2"}
    bad = []

    def walk(v, typ, where):
        if typ.startswith("list["):
            if not isinstance(v, list):
                bad.append(f"{where}: want a list")
                return
            for i, x in enumerate(v):
                walk(x, typ[5:-1], f"{where}[{i}]")
        elif typ.startswith("dict("):
            if not isinstance(v, dict):
                bad.append(f"{where}: want a map")
                return
            inner = typ[5:-1].split(", ", 1)[1]
            quant = where.endswith((".limits", ".requests"))
            for k, x in v.items():
                if quant and isinstance(x, (int, float)):
                    continue  # a Quantity may be a JSON number
                walk(x, inner, f"{where}.{k}")
        elif typ == "str":
            if not isinstance(v, str):
                bad.append(f"{where}: want a string, got {v!r}")
        elif typ == "int":
            if not isinstance(v, int) or isinstance(v, bool):
                bad.append(f"{where}: want an integer, got {v!r}")
        elif typ == "bool":
            if not isinstance(v, bool):
                bad.append(f"{where}: want true or false, got {v!r}")
        elif typ in ("object", "float", "datetime"):
            pass
        else:
            cls = getattr(client, typ)
            if not isinstance(v, dict):
                bad.append(f"{where}: want a {typ} map")
                return
            keys = {j: a for a, j in cls.attribute_map.items()}
            for k, x in v.items():
                if k not in keys:
                    bad.append(f"{where}: unknown field {k!r} in {typ}")
                else:
                    walk(x, cls.openapi_types[keys[k]], f"{where}.{k}")

    n = 0
    for o in objs:
        if "_generated_from" in o:
            continue
        prefix = models.get(o.get("apiVersion"))
        typ = f"{prefix}{o.get('kind')}" if prefix else None
        if typ is None or not hasattr(client, typ):
            bad.append(f"{o.get('apiVersion')} {o.get('kind')}: not a kind "
                       f"checked here")
            continue
        walk(o, typ, f"{o['kind']} {name(o)}")
        n += 1
    problems(bad)
    return (f"{n} objects: every field is known to the API, with the right "
            f"type (python3-kubernetes {kubernetes.__version__} models; "
            f"autoscaling/v2 as v2beta2)")


_GIVEN = set()  # ports handed out: never the same one twice


def free_port():
    """A free loopback port, never one this process was given before (the
    kernel may hand the port just closed to the next bind(0))."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def probe(gw, url):
    r = subprocess.run([gw, "--probe", url], capture_output=True, text=True,
                       timeout=10)
    return r.returncode, r.stderr.strip()


def check_live(objs, gw):
    """The ConfigMap's configuration started for real, on loopback ports
    in place of 8080/9901, and the probes' URLs asked."""
    dep, c = gateway_deployment(objs)
    cfg = gateway_config(objs)
    _, lp = split_addr(cfg["listen"])
    _, ap = split_addr(cfg["admin"])
    ports = {lp: free_port(), ap: free_port()}
    cfg = dict(cfg, listen=f"127.0.0.1:{ports[lp]}",
               admin=f"127.0.0.1:{ports[ap]}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "gateway.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        log = open(os.path.join(d, "log"), "w+", encoding="utf-8")
        p = subprocess.Popen([gw, "-c", path, "--workers", "1"],
                             stdout=log, stderr=log)
        try:
            for _ in range(50):
                log.seek(0)
                if "listening on" in log.read() or p.poll() is not None:
                    break
                time.sleep(0.1)
            rc, err = probe(gw, f"http://127.0.0.1:{ports[lp]}/healthz")
            if rc != 0:
                log.seek(0)
                raise Fail([f"the gateway with the ConfigMap's configuration "
                            f"does not answer /healthz on its listen port: "
                            f"{err}"] + log.read().splitlines())
            paths = []
            for kind in ("readinessProbe", "livenessProbe"):
                h = c.get(kind, {}).get("httpGet")
                if h:
                    paths.append((kind, port_number(c, h["port"]), h["path"]))
            bad, refused = [], []
            for kind, port, path_ in paths:
                rc, err = probe(gw, f"http://127.0.0.1:{ports[port]}{path_}")
                if rc == 0:
                    continue
                if port == ap and "refused" in err:
                    refused.append(kind)
                else:
                    bad.append(f"{kind} GET {path_} on :{port}: {err}")
            log.seek(0)
            started = log.read()
            if refused and f":{ports[ap]}" in started:
                bad.append(f"the gateway says it serves admin on "
                           f":{ports[ap]}, which refuses "
                           f"{' and '.join(refused)}")
            problems(bad)
            if refused:
                raise Skip(
                    f"nothing listens on the admin port although the "
                    f"configuration sets admin: this build does not start "
                    f"the admin listener (gateway/main.c), so in a pod the "
                    f"{' and '.join(refused)} would fail: never Ready. The "
                    f"listen port answers /healthz")
        finally:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
    return ("the ConfigMap's configuration starts; /healthz answers on "
            "listen and the probes' URLs answer 2xx")


def check_rendered(rendered, raw):
    """`kubectl kustomize` output: the same objects (the generated
    ConfigMap with a hash suffix, referenced by the Deployment), the same
    configuration, and every cross-check passes on it too."""
    if rendered.startswith("-"):
        raise Skip(rendered[1:])
    objs = load_docs(rendered)
    bad = []
    key = {(o["kind"], name(o)) for o in raw if "_generated_from" not in o}
    got = {(o["kind"], name(o)) for o in objs if o["kind"] != "ConfigMap"}
    if key != got:
        bad.append(f"kustomize output differs: missing "
                   f"{sorted(key - got)}, extra {sorted(got - key)}")
    for g in [o for o in raw if "_generated_from" in o]:
        hashed = [o for o in objs if o["kind"] == "ConfigMap" and
                  re.fullmatch(re.escape(name(g)) + r"-[a-z0-9]{10}",
                               name(o))]
        if len(hashed) != 1 or hashed[0].get("data") != g["data"]:
            bad.append(f"ConfigMap {name(g)}: not one hashed "
                       f"{name(g)}-<hash> with the file's data")
    problems(bad)
    dep, c = gateway_deployment(objs)
    _, _, _, cm = mounted_config(objs, dep, c)
    for what, fn in TIES:
        try:
            fn(objs)
        except Fail as e:
            bad += [f"{what} (rendered): {p}" for p in e.args[0]]
    problems(bad)
    return (f"kubectl kustomize renders {len(objs)} objects; the Deployment "
            f"mounts {name(cm)}; the {len(TIES)} cross-checks pass on the "
            f"rendered output too")


# ----------------------------------------------------------------- main


def main():
    gw = sys.argv[1]
    rendered = sys.argv[2] if len(sys.argv) > 2 else "-not asked"
    counts = {"ok": 0, "FAIL": 0, "SKIP": 0}

    def run(what, fn, *a):
        try:
            msg, tag = fn(*a), "ok"
        except Fail as e:
            msg, tag = "see above", "FAIL"
            for p in e.args[0]:
                print(f"  {what}: {p}", file=sys.stderr)
        except Skip as e:
            msg, tag = e.args[0], "SKIP"
        except (KeyError, TypeError, ValueError, IndexError) as e:
            msg, tag = f"unexpected shape: {type(e).__name__}: {e}", "FAIL"
        counts[tag] += 1
        print(f"{tag}: {what}: {msg}", flush=True)

    try:
        kust, files, objs = load_kustomization()
    except (OSError, yaml.YAMLError) as e:
        print(f"FAIL: yaml: {e}")
        return 1
    print(f"ok: yaml: kustomization.yaml and {len(files)} files parse "
          f"({len(objs)} objects with the generated ConfigMap)")
    counts["ok"] += 1
    run("kustomization", check_kustomization, kust, files, objs)
    run("config", check_config_mount, objs, gw)
    for what, fn in TIES:
        run(what, fn, objs)
    run("prestop", check_prestop_binary, objs)
    run("fields", check_fields, objs)
    run("live", check_live, objs, gw)
    run("kustomize", check_rendered, rendered, objs)
    print(f"k8s-check: {counts['ok']} checks ok, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
