#!/usr/bin/env python3
"""Operations tests: the gateway as an operator runs it.

Starts real processes on loopback ports (build/gateway, build/mock-backend
and small stub backends in this process) and checks, through HTTP, signals
and the log on stderr:
  - /metrics: valid Prometheus text exposition, every series of the
    contract, configured routes and backends present at 0, counters that
    move by exactly the right amounts (success, each part error,
    cancellations, 4xx), and gauges and the goroutine count back to their
    baseline after a burst of timeouts and client disconnects;
  - /debug/goroutines in Go's shape;
  - the access log's JSON lines and --log-level;
  - SIGHUP: a reload that applies (requests in flight finish on the old
    configuration), one that is refused (the --check messages, the old
    configuration keeps serving), restart notices, the semaphore carried
    over by backend name, and the TLS certificate read again;
  - SIGTERM/SIGINT: the drain (in flight finish with Connection: close,
    new connections refused, idle ones closed, /healthz 503, exit 0 within
    a second of the last answer) and its timeout (503 "shutting down",
    exit 1);
  - the TLS listener: a round trip with curl --cacert (ALPN http/1.1), and
    garbage handshakes that leave the listener serving.

Run by `make test` (tests/run-tests.sh passes BUILD). Every wait is
bounded; every process started is killed at exit. Timing tolerances are
wider for sanitizer builds (BUILD under build/asan or build/tsan).
"""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)
GATEWAY = os.path.join(BUILD, "gateway")
MOCK = os.path.join(BUILD, "mock-backend")
SANITIZED = "/asan" in BUILD or "/tsan" in BUILD
SLOW = 4 if SANITIZED else 1  # tolerance factor for timings
TMP = tempfile.mkdtemp(prefix="fanfold-ops-")
PROCS = []


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    shutil.rmtree(TMP, ignore_errors=True)


atexit.register(cleanup)


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


# Ports free_port() gave out: never twice in one process (the kernel
# may hand the port just closed to the next bind(0), and a config whose
# listen and admin ports are one port is refused).
_GIVEN = set()


def free_port():
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise Fail("no fresh free port after 100 tries")


# Sockets held by refused_port() until the process ends.
_REFUSING = []


def refused_port():
    """A port of 127.0.0.1 that refuses connections: bound, never
    listening, and held until exit so that nothing else takes it (a port
    from free_port() is free for anyone, such as another test's backend)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _REFUSING.append(s)
    return s.getsockname()[1]


def wait_until(pred, timeout, what, step=0.02):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise Fail("timed out waiting for " + what)


# ------------------------------------------------------------ processes


def start_mock(name, *extra):
    port = free_port()
    p = subprocess.Popen([MOCK, "--port", str(port), "--name", name, *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(p)
    wait_until(lambda: connectable(port), 10, "mock-backend " + name)
    return port


def connectable(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Gateway:
    """build/gateway on a config file, stderr in a file we read."""

    def __init__(self, cfg, *args):
        self.cfg_path = os.path.join(TMP, "gw-%d.json" % free_port())
        self.write(cfg)
        self.port = int(cfg["listen"].rsplit(":", 1)[1])
        self.admin = int(cfg["admin"].rsplit(":", 1)[1]) if "admin" in cfg else None
        self.log_path = self.cfg_path + ".log"
        self.logf = open(self.log_path, "wb")
        self.p = subprocess.Popen([GATEWAY, "-c", self.cfg_path, *args],
                                  stdout=subprocess.DEVNULL, stderr=self.logf)
        PROCS.append(self.p)
        wait_until(lambda: "listening on" in self.log() or self.p.poll() is not None,
                   15, "the gateway to listen")
        check(self.p.poll() is None, "gateway exited at start: " + self.log())

    def write(self, cfg):
        tmp = self.cfg_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        os.replace(tmp, self.cfg_path)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def access(self):
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def signal(self, sig):
        self.p.send_signal(sig)

    def reload(self, cfg, expect):
        n = self.log().count(expect)
        self.write(cfg)
        self.signal(signal.SIGHUP)
        wait_until(lambda: self.log().count(expect) > n, 10, "reload: " + expect)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout * SLOW)

    def stop(self):
        """SIGTERM (unless it exited already); then fail on a hang, on a
        sanitizer report (races, leaks) or on an unexpected exit status."""
        # A failure already on its way out of the test is the one to
        # report: do not mask it with what the stop finds.
        failing = sys.exc_info()[0] is not None
        signalled = self.p.poll() is None
        if signalled:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=15 * SLOW)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                self.logf.close()
                raise Fail("the gateway did not exit after SIGTERM")
        self.logf.close()
        log = self.log()
        m = re.search(r"(WARNING|ERROR): (\w+Sanitizer)[^\n]*", log)
        if failing:
            return
        if m:
            raise Fail("sanitizer report: " + log[m.start():m.start() + 3000])
        if signalled and self.p.returncode != 0:
            raise Fail("exit status %d after SIGTERM: %s" % (self.p.returncode, log[-500:]))


# ---------------------------------------------------------------- HTTP


def request(port, path, headers=None, method="GET", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def get_json(port, path, headers=None):
    st, h, body = request(port, path, headers)
    return st, h, json.loads(body) if body else None


class Background(threading.Thread):
    """A request in a thread; .result is (status, headers, body) or the error."""

    def __init__(self, port, path, headers=None):
        super().__init__(daemon=True)
        self.args = (port, path, headers)
        self.result = None
        self.done_at = None
        self.start()

    def run(self):
        try:
            self.result = request(*self.args)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.result = e
        self.done_at = time.monotonic()

    def get(self, timeout=10):
        self.join(timeout * SLOW)
        check(not self.is_alive(), "background request still running")
        if isinstance(self.result, Exception):
            raise Fail("background request: %r" % self.result)
        return self.result


# ------------------------------------------------------------- metrics

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,(?:%s))*\})? (\S+)$" % (NAME, LABEL, LABEL))
LABELS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Check the text exposition format 0.0.4; return {(name, labels): value}
    and {family: type}."""
    types, helps, samples = {}, set(), {}
    check(text.endswith("\n"), "exposition does not end with a newline")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            check(len(parts) == 4 and re.fullmatch(NAME, parts[2]), "bad HELP: " + line)
            helps.add(parts[2])
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            check(len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram",
                                                   "summary", "untyped"),
                  "bad TYPE: " + line)
            check(parts[2] not in types, "TYPE twice: " + line)
            types[parts[2]] = parts[3]
            continue
        check(line and not line.startswith("#"), "stray line: %r" % line)
        m = SAMPLE.match(line)
        check(m is not None, "bad sample line: %r" % line)
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        float(value)  # raises on a bad value
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        check(name in types or (family in types and types[family] == "histogram"),
              "sample before its TYPE: " + line)
        key = (name, tuple(sorted(LABELS.findall(labels))))
        check(key not in samples, "duplicate series: " + line)
        samples[key] = float(value)
    for fam in types:
        check(fam in helps, "no HELP for " + fam)
    return samples, types


def metrics(port):
    st, h, body = request(port, "/metrics")
    check(st == 200, "/metrics status %d" % st)
    check(h.get("content-type", "").startswith("text/plain; version=0.0.4"),
          "/metrics content type " + h.get("content-type", ""))
    return parse_metrics(body.decode())[0]


def val(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def counters_diff(before, after):
    """The counter samples that moved (histograms and gauges left out)."""
    out = {}
    for k, v in after.items():
        name = k[0]
        if not name.endswith("_total"):
            continue
        d = v - before.get(k, 0.0)
        if d:
            out[k] = d
    return out


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


# -------------------------------------------------------------- stubs


class StubHandler(BaseHTTPRequestHandler):
    """/bad: not JSON; /big: 64 KiB of JSON; /slow: 1 s, then {}."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path.startswith("/bad"):
            body = b"this is not json"
        elif self.path.startswith("/big"):
            body = b'"' + b"x" * 65536 + b'"'
        elif self.path.startswith("/slow"):
            time.sleep(1.0)
            body = b"{}"
        else:
            body = b'{"ok":true}'
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the gateway cancelling a call resets the connection


def start_stub():
    srv = StubServer(("127.0.0.1", 0), StubHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


# ------------------------------------------------------------ configs

ROUTE = "/api/products/{id}"
LABEL_ROUTE = "GET " + ROUTE
BACKENDS = ("profile", "inventory", "pricing")


def demo_config(mocks, **over):
    limits = over.pop("limits", {})
    cfg = {
        "listen": "127.0.0.1:%d" % free_port(),
        "admin": "127.0.0.1:%d" % free_port(),
        "limits": limits,
        "backends": {n: {"url": "http://127.0.0.1:%d" % mocks[n]} for n in BACKENDS},
        "routes": [{
            "method": "GET", "path": ROUTE, "timeout_ms": 1000,
            "forward_headers": ["X-Mock-Delay", "X-Mock-Status"],
            "fanout": [
                {"name": "profile", "backend": "profile", "path": "/users/{user}"},
                {"name": "inventory", "backend": "inventory", "path": "/inventory/{id}",
                 "required": True},
                {"name": "pricing", "backend": "pricing", "path": "/prices/{id}"},
            ]}],
    }
    cfg.update(over)
    return cfg


MOCKS = {}


def mocks():
    if not MOCKS:
        for n in BACKENDS:
            MOCKS[n] = start_mock(n)
    return MOCKS


def products(gw, headers=None, pid="42"):
    return request(gw.port, "/api/products/%s?user=7" % pid, headers)


# -------------------------------------------------------------- tests


def test_metrics_at_start():
    stub = start_stub()
    cfg = demo_config(mocks())
    cfg["backends"]["stub"] = {"url": "http://127.0.0.1:%d" % stub}
    cfg["routes"].append({"method": "POST", "path": "/api/weird/{id}",
                          "fanout": [{"name": "a", "backend": "stub", "path": "/x"}]})
    gw = Gateway(cfg)
    try:
        st, h, body = request(gw.admin, "/metrics")
        check(st == 200, "status %d" % st)
        m, types = parse_metrics(body.decode())
        want = {
            "fanfold_requests_total": "counter",
            "fanfold_request_duration_seconds": "histogram",
            "fanfold_backend_requests_total": "counter",
            "fanfold_backend_duration_seconds": "histogram",
            "fanfold_inflight_requests": "gauge",
            "fanfold_connections_open": "gauge",
            "fanfold_connections_total": "counter",
            "fanfold_semaphore_inflight": "gauge",
            "fanfold_semaphore_waits_total": "counter",
            "fanfold_cancellations_total": "counter",
            "fanfold_goroutines": "gauge",
        }
        for fam, t in want.items():
            check(types.get(fam) == t, "%s: TYPE %s, want %s" % (fam, types.get(fam), t))
        for route in (LABEL_ROUTE, "POST /api/weird/{id}"):
            check(key("fanfold_request_duration_seconds_count", route=route) in m,
                  "no duration series for " + route)
            check(key("fanfold_requests_total", route=route, status="200") in m,
                  "no requests_total series for " + route)
            buckets = [float(dict(k[1])["le"]) for k in m
                       if k[0] == "fanfold_request_duration_seconds_bucket"
                       and dict(k[1])["route"] == route]
            check(min(buckets) <= 0.001 and 10 <= max(b for b in buckets if b != float("inf")),
                  "buckets do not span 1 ms..10 s: %s" % sorted(buckets))
        for b in BACKENDS + ("stub",):
            for o in ("ok", "timeout", "unavailable", "status", "invalid_json",
                      "too_large", "overloaded", "cancelled"):
                check(key("fanfold_backend_requests_total", backend=b, outcome=o) in m,
                      "no %s/%s series" % (b, o))
            for s in ("fanfold_semaphore_inflight", "fanfold_semaphore_waits_total",
                      "fanfold_backend_duration_seconds_count"):
                check(m.get(key(s, backend=b)) == 0, "%s{%s} not 0 at start" % (s, b))
        for r in ("client_gone", "deadline"):
            check(m.get(key("fanfold_cancellations_total", reason=r)) == 0, "cancellations " + r)
        check(val(m, "fanfold_goroutines") > 0, "goroutines gauge")
        check(val(m, "fanfold_inflight_requests") == 0, "inflight at start")
        check(val(m, "fanfold_connections_open") == 0, "admin connections are not counted")
        check(all(v == 0 for k, v in m.items() if k[0].endswith("_total")),
              "a counter is not 0 at start")
    finally:
        gw.stop()


def test_metrics_count():
    stub = start_stub()
    cfg = demo_config(mocks())
    cfg["backends"]["pricing"]["timeout_ms"] = 200
    cfg["backends"]["stub"] = {"url": "http://127.0.0.1:%d" % stub, "max_response_bytes": 1000}
    cfg["backends"]["tiny"] = {"url": "http://127.0.0.1:%d" % stub, "max_inflight": 1}
    cfg["backends"]["down"] = {"url": "http://127.0.0.1:%d" % refused_port()}
    cfg["routes"] += [
        {"method": "GET", "path": "/api/stub/{id}",
         "fanout": [{"name": "bad", "backend": "stub", "path": "/bad"},
                    {"name": "big", "backend": "stub", "path": "/big"},
                    {"name": "down", "backend": "down", "path": "/x"}]},
        {"method": "GET", "path": "/api/tiny/{id}", "timeout_ms": 3000,
         "fanout": [{"name": "slow", "backend": "tiny", "path": "/slow"}]},
        {"method": "GET", "path": "/api/tiny2/{id}", "timeout_ms": 300,
         "fanout": [{"name": "slow", "backend": "tiny", "path": "/slow"}]},
    ]
    gw = Gateway(cfg)
    R = LABEL_ROUTE
    try:
        before = metrics(gw.admin)
        exp = {}

        def add(k, n=1):
            exp[k] = exp.get(k, 0) + n

        def part(b, o, n=1):
            add(key("fanfold_backend_requests_total", backend=b, outcome=o), n)

        def req(route, status):
            add(key("fanfold_requests_total", route=route, status=str(status)))

        # A success.
        st, h, body = products(gw)
        check(st == 200 and h["x-gateway-completed"] == "true", "success: %d" % st)
        req(R, 200)
        for b in BACKENDS:
            part(b, "ok")
        # An optional part answering 503: status.
        st, h, body = products(gw, {"X-Mock-Status": "pricing=503"})
        check(st == 200 and json.loads(body)["errors"] == {"pricing": "status 503"},
              "optional status: %d %s" % (st, body[:200]))
        req(R, 200)
        part("profile", "ok"), part("inventory", "ok"), part("pricing", "status")
        # An optional part past its backend timeout: timeout.
        st, h, body = products(gw, {"X-Mock-Delay": "pricing=600"})
        check(st == 200 and json.loads(body)["errors"] == {"pricing": "timeout"},
              "optional timeout: %s" % body[:200])
        req(R, 200)
        part("profile", "ok"), part("inventory", "ok"), part("pricing", "timeout")
        # invalid json, too large, unavailable.
        st, h, body = request(gw.port, "/api/stub/1")
        errs = json.loads(body)["errors"]
        check(st == 200 and errs == {"bad": "invalid json", "big": "too large",
                                     "down": "unavailable"}, "stub parts: %s" % errs)
        req("GET /api/stub/{id}", 200)
        part("stub", "invalid_json"), part("stub", "too_large"), part("down", "unavailable")
        # A required part failing at once: 502; the pending sibling is
        # cancelled.
        st, h, body = products(gw, {"X-Mock-Status": "inventory=500",
                                    "X-Mock-Delay": "profile=150,pricing=150"})
        check(st == 502, "required status: %d" % st)
        req(R, 502)
        part("profile", "cancelled"), part("inventory", "status")
        part("pricing", "cancelled")
        # The route deadline with a required part pending: 504, deadline.
        st, h, body = products(gw, {"X-Mock-Delay": "inventory=1500"})
        check(st == 504, "deadline: %d" % st)
        req(R, 504)
        part("profile", "ok"), part("inventory", "timeout"), part("pricing", "ok")
        add(key("fanfold_cancellations_total", reason="deadline"))
        # Overloaded: max_inflight 1; a second call waits for the slot
        # the first holds for 1 s and is cut at its route's 300 ms.
        a = Background(gw.port, "/api/tiny/1")
        time.sleep(0.1 * SLOW)
        st, h, body = request(gw.port, "/api/tiny2/2")
        a_st, _, a_body = a.get()
        check(st == 200 and json.loads(body)["errors"] == {"slow": "overloaded"},
              "overloaded: %s" % body)
        check(a_st == 200 and json.loads(a_body) == {"slow": {}}, "the slot holder: %s" % a_body)
        req("GET /api/tiny/{id}", 200), req("GET /api/tiny2/{id}", 200)
        part("tiny", "ok"), part("tiny", "overloaded")
        add(key("fanfold_semaphore_waits_total", backend="tiny"))
        add(key("fanfold_cancellations_total", reason="deadline"))
        # The client leaves: 499, client_gone, the pending part cancelled.
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET /api/products/42?user=7 HTTP/1.1\r\nHost: x\r\n"
                  b"X-Mock-Delay: inventory=800\r\n\r\n")
        time.sleep(0.15 * SLOW)
        s.close()
        req(R, 499)
        part("profile", "ok"), part("inventory", "cancelled"), part("pricing", "ok")
        add(key("fanfold_cancellations_total", reason="client_gone"))
        # 4xx: no route, a method the route does not have, malformed.
        check(request(gw.port, "/nope")[0] == 404, "404")
        req("none", 404)
        check(request(gw.port, "/api/products/1", method="POST")[0] == 405, "405")
        req(R, 405)
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        check(s.recv(100).startswith(b"HTTP/1.1 400"), "400")
        s.close()
        req("none", 400)
        # Not counted: /healthz on the main listener, admin requests.
        check(request(gw.port, "/healthz")[0] == 200, "healthz")
        # Connections: every request above opened one.
        add(key("fanfold_connections_total"), 13)

        def settled():
            m = metrics(gw.admin)
            got = counters_diff(before, m)
            return got if got == exp and val(m, "fanfold_inflight_requests") == 0 else None
        try:
            wait_until(settled, 5, "counters")
        except Fail:
            got = counters_diff(before, metrics(gw.admin))
            lines = ["  %s %s: got %s, want %s" % (k[0], dict(k[1]), got.get(k), exp.get(k))
                     for k in sorted(set(got) | set(exp)) if got.get(k) != exp.get(k)]
            raise Fail("counters moved wrongly:\n" + "\n".join(lines))
        m = metrics(gw.admin)
        check(val(m, "fanfold_request_duration_seconds_count", route=R) ==
              val(before, "fanfold_request_duration_seconds_count", route=R) + 7,
              "duration histogram count")
    finally:
        gw.stop()


def test_goroutines_return_to_baseline():
    cfg = demo_config(mocks())
    gw = Gateway(cfg)
    try:
        wait_until(lambda: val(metrics(gw.admin), "fanfold_goroutines") > 0, 2, "gauge")
        time.sleep(0.2)
        base = val(metrics(gw.admin), "fanfold_goroutines")
        jobs = [Background(gw.port, "/api/products/%d?user=1" % i,
                           {"X-Mock-Delay": "inventory=1500"}) for i in range(30)]
        socks = []
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(b"GET /api/products/%d?user=1 HTTP/1.1\r\nHost: x\r\n"
                      b"X-Mock-Delay: pricing=900\r\n\r\n" % i)
            socks.append(s)
        time.sleep(0.2 * SLOW)
        mid = metrics(gw.admin)
        check(val(mid, "fanfold_goroutines") > base + 30, "the burst shows in goroutines")
        for s in socks:
            s.close()
        for j in jobs:
            check(j.get()[0] == 504, "timeout burst answers 504")

        def back():
            m = metrics(gw.admin)
            return (val(m, "fanfold_goroutines") <= base
                    and val(m, "fanfold_inflight_requests") == 0
                    and val(m, "fanfold_connections_open") == 0
                    and all(val(m, "fanfold_semaphore_inflight", backend=b) == 0
                            for b in BACKENDS))
        wait_until(back, 5, "goroutines, inflight, connections back to baseline")
    finally:
        gw.stop()


def test_debug_goroutines():
    gw = Gateway(demo_config(mocks()))
    try:
        st, h, body = request(gw.admin, "/debug/goroutines")
        check(st == 200 and h["content-type"].startswith("text/plain"), "status/type")
        lines = body.decode().split("\n")
        m = re.fullmatch(r"goroutines: (\d+)", lines[0])
        check(m is not None, "first line: %r" % lines[0])
        heads = [i for i, l in enumerate(lines) if re.match(r"goroutine \d+ \[[^\]]+\]:$", l)]
        check(len(heads) == int(m.group(1)), "%d blocks, header says %s" % (len(heads), m.group(1)))
        for i in heads:
            check(re.match(r"\s+spawned at \S+ \(\S+:\d+\)$", lines[i + 1]) is not None,
                  "spawned-at line: %r" % lines[i + 1])
    finally:
        gw.stop()


def test_access_log():
    gw = Gateway(demo_config(mocks()))
    try:
        st, h, body = products(gw, {"X-Request-Id": "ops-test-1",
                                    "X-Mock-Status": "pricing=503"})
        check(st == 200, "status")
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b'GET /nope"\\x?y=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        check(s.recv(100).startswith(b"HTTP/1.1 404"), "404 for a path with a quote")
        s.close()
        line = wait_until(lambda: [a for a in gw.access() if a.get("id") == "ops-test-1"],
                          3, "the access line")[0]
        check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]),
              "time: " + line["time"])
        for k, v in (("client", "127.0.0.1"), ("method", "GET"), ("path", "/api/products/42"),
                     ("route", LABEL_ROUTE), ("status", 200), ("completed", False)):
            check(line.get(k) == v, "%s: %r" % (k, line.get(k)))
        check(line["bytes"] > len(body), "bytes %d" % line["bytes"])
        check(isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0,
              "duration_ms")
        parts = line["parts"]
        check(parts["pricing"]["outcome"] == "status 503" and parts["profile"]["outcome"] == "ok",
              "parts: %s" % parts)
        check(all(p["ms"] >= 0 for p in parts.values()), "part latencies")
        nr = wait_until(lambda: [a for a in gw.access() if a.get("status") == 404], 3, "404 line")
        check(nr[0]["route"] is None and "completed" not in nr[0] and
              nr[0]["path"] == '/nope"\\x', "404 line: %s" % nr[0])
    finally:
        gw.stop()


def test_log_level_warn():
    cfg = demo_config(mocks())
    gw = Gateway(cfg, "--log-level", "warn")
    try:
        check(products(gw)[0] == 200, "status")
        time.sleep(0.3)
        check(gw.access() == [], "access lines at --log-level warn")
    finally:
        gw.stop()


def test_reload_applies_in_flight_keep_old():
    cfg = demo_config(mocks())
    gw = Gateway(cfg)
    try:
        slow = Background(gw.port, "/api/products/1?user=1", {"X-Mock-Delay": "pricing=600"})
        time.sleep(0.15 * SLOW)
        new = json.loads(json.dumps(cfg))
        new["backends"]["pricing"]["timeout_ms"] = 100
        new["routes"][0]["fanout"][0]["path"] = "/users/{user}"
        gw.reload(new, "applied")
        check("2 kept their connections, 1 got new clients" in gw.log(),
              "carry-over summary: " + gw.log()[-400:])
        st, h, body = slow.get()
        check(st == 200 and h["x-gateway-completed"] == "true",
              "in flight finished on the old config: %d %s" % (st, body[:200]))
        st, h, body = products(gw, {"X-Mock-Delay": "pricing=600"})
        check(json.loads(body).get("errors") == {"pricing": "timeout"},
              "new requests use the new config: %s" % body[:200])
    finally:
        gw.stop()


def test_reload_refused_and_restart_notice():
    cfg = demo_config(mocks())
    gw = Gateway(cfg)
    try:
        bad = json.loads(json.dumps(cfg))
        bad["routes"][0]["fanout"][1]["backend"] = "nowhere"
        bad["routes"][0]["bogus"] = 1
        gw.reload(bad, "still serving the previous configuration")
        log = gw.log()
        check("config: routes[0].fanout[1].backend:" in log, "path of the problem: " + log[-600:])
        check("config: routes[0].bogus:" in log, "unknown key: " + log[-600:])
        check(products(gw)[0] == 200, "still serving")
        moved = json.loads(json.dumps(cfg))
        moved["listen"] = "127.0.0.1:%d" % free_port()
        gw.reload(moved, "needs a restart")
        check(products(gw)[0] == 200, "still on the old port")
        syntax = "{ \"listen\": "
        gw.reload(syntax, "still serving the previous configuration")
        check(re.search(r"config: line \d+, column \d+:", gw.log()), "syntax message")
    finally:
        gw.stop()


def test_reload_keeps_semaphore():
    port = start_mock("inventory")
    m = dict(mocks())
    m["inventory"] = port
    cfg = demo_config(m)
    cfg["backends"]["inventory"]["max_inflight"] = 2
    gw = Gateway(cfg)
    try:
        first = [Background(gw.port, "/api/products/%d?user=1" % i,
                            {"X-Mock-Delay": "inventory=500"}) for i in range(2)]
        time.sleep(0.15 * SLOW)
        new = json.loads(json.dumps(cfg))
        new["backends"]["inventory"]["max_inflight"] = 1
        gw.reload(new, "applied")
        later = [Background(gw.port, "/api/products/%d?user=1" % i,
                            {"X-Mock-Delay": "inventory=100"}) for i in range(3)]
        for j in first + later:
            check(j.get()[0] == 200, "answered")
        st, h, stats = get_json(port, "/stats")
        check(stats["max_inflight"] <= 2,
              "the limit held across the swap: %d at once" % stats["max_inflight"])
    finally:
        gw.stop()


def test_drain():
    cfg = demo_config(mocks(), limits={"drain_timeout_ms": 10000})
    cfg["routes"][0]["timeout_ms"] = 10000
    gw = Gateway(cfg)
    try:
        idle = socket.create_connection(("127.0.0.1", gw.port))
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        check(idle.recv(1000).startswith(b"HTTP/1.1 200"), "idle conn's first answer")
        slow = Background(gw.port, "/api/products/1?user=1",
                          {"X-Mock-Delay": "inventory=%d" % (1000 * SLOW)})
        time.sleep(0.2 * SLOW)
        gw.signal(signal.SIGTERM)
        idle.settimeout(3 * SLOW)
        check(idle.recv(100) == b"", "the idle keep-alive connection is closed")
        idle.close()
        wait_until(lambda: not connectable(gw.port), 2, "the listener to close")
        st, h, body = request(gw.admin, "/healthz")
        check(st == 503, "admin /healthz while draining: %d" % st)
        st, h, body = slow.get()
        check(st == 200 and h.get("connection") == "close",
              "in flight finishes with Connection: close: %d %s" % (st, h))
        rc = gw.wait(5)
        exited = time.monotonic()
        check(rc == 0, "exit status %d" % rc)
        check(exited - slow.done_at < 1.0 * SLOW, "exit %.2fs after the last answer"
              % (exited - slow.done_at))
        check("drained" in gw.log(), "log: " + gw.log()[-300:])
    finally:
        gw.stop()


def test_drain_timeout():
    cfg = demo_config(mocks(), limits={"drain_timeout_ms": 300})
    cfg["routes"][0]["timeout_ms"] = 5000
    gw = Gateway(cfg)
    try:
        slow = Background(gw.port, "/api/products/1?user=1", {"X-Mock-Delay": "inventory=3000"})
        time.sleep(0.2 * SLOW)
        t0 = time.monotonic()
        gw.signal(signal.SIGINT)
        st, h, body = slow.get()
        check(st == 503 and json.loads(body) == {"error": "shutting down"},
              "what is left is answered 503: %d %s" % (st, body))
        check(h.get("connection") == "close", "and closed")
        rc = gw.wait(5)
        check(rc == 1, "exit status %d" % rc)
        took = time.monotonic() - t0
        check(0.25 < took < 2.0 * SLOW, "exit %.2fs after SIGINT (drain_timeout_ms 300)" % took)
    finally:
        gw.stop()


def test_second_signal_forces():
    cfg = demo_config(mocks(), limits={"drain_timeout_ms": 20000})
    cfg["routes"][0]["timeout_ms"] = 20000
    gw = Gateway(cfg)
    try:
        slow = Background(gw.port, "/api/products/1?user=1", {"X-Mock-Delay": "inventory=8000"})
        time.sleep(0.2 * SLOW)
        gw.signal(signal.SIGTERM)
        wait_until(lambda: "draining" in gw.log(), 5, "the drain to start")
        time.sleep(0.2)
        t0 = time.monotonic()
        gw.signal(signal.SIGINT)
        try:
            st, h, body = slow.get()
        except Fail as e:
            raise Fail("%s; log: %s" % (e, gw.log()[-1500:]))
        check(st == 503 and json.loads(body) == {"error": "shutting down"},
              "a second signal answers what is left 503: %d %s" % (st, body))
        rc = gw.wait(5)
        check(rc == 1, "exit status %d" % rc)
        check(time.monotonic() - t0 < 2.0 * SLOW, "exit %.2fs after the second signal"
              % (time.monotonic() - t0))
        check("SIGINT again" in gw.log(), "log: " + gw.log()[-300:])
    finally:
        gw.stop()


def make_certs(name):
    d = os.path.join(TMP, name)
    env = dict(os.environ, FANFOLD_CERTS_DIR=d)
    subprocess.run([os.path.join(ROOT, "certs", "make-certs.sh")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return d


def curl_tls(port, ca):
    r = subprocess.run(["curl", "-sS", "-v", "--max-time", str(10 * SLOW), "--cacert",
                        os.path.join(ca, "ca.crt"), "https://localhost:%d/healthz" % port],
                       capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def test_tls_listener_and_reload():
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        print("    skipped: curl or openssl missing")
        return
    c1, c2 = make_certs("c1"), make_certs("c2")
    live = os.path.join(TMP, "live")
    os.makedirs(live, exist_ok=True)
    for f in ("server.crt", "server.key"):
        shutil.copy(os.path.join(c1, f), os.path.join(live, f))
    tls_port = free_port()
    cfg = demo_config(mocks())
    cfg["tls"] = {"listen": "127.0.0.1:%d" % tls_port,
                  "cert": os.path.join(live, "server.crt"),
                  "key": os.path.join(live, "server.key")}
    gw = Gateway(cfg)
    try:
        rc, out, err = curl_tls(tls_port, c1)
        check(rc == 0 and '{"status":"ok"}' in out, "curl --cacert: %d %s" % (rc, err[-500:]))
        check(re.search(r"ALPN.*accepted.*http/1\.1", err), "ALPN http/1.1: " + err[-800:])
        # Garbage instead of a ClientHello, and a plain HTTP request: each
        # connection is closed; the listener keeps serving.
        for junk in (b"\x16\x03\x01\x00\x05garbage-garbage", b"GET / HTTP/1.1\r\n\r\n",
                     os.urandom(300)):
            s = socket.create_connection(("127.0.0.1", tls_port))
            s.settimeout(5 * SLOW)
            s.sendall(junk)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            s.close()
        rc, out, err = curl_tls(tls_port, c1)
        check(rc == 0, "serving after garbage: " + err[-300:])
        # A client that connects and says nothing is cut at the header
        # timeout without holding others up.
        # SIGHUP reads the certificate and key again.
        for f in ("server.crt", "server.key"):
            shutil.copy(os.path.join(c2, f), os.path.join(live, f))
        gw.reload(cfg, "applied")
        rc, out, err = curl_tls(tls_port, c2)
        check(rc == 0, "the new certificate after SIGHUP: " + err[-300:])
        rc, out, err = curl_tls(tls_port, c1)
        check(rc != 0, "the old CA no longer verifies")
        # A reload whose key does not match is refused; the old one stays.
        shutil.copy(os.path.join(c1, "server.key"), os.path.join(live, "server.key"))
        gw.reload(cfg, "still serving the previous configuration")
        rc, out, err = curl_tls(tls_port, c2)
        check(rc == 0, "still the previous certificate: " + err[-300:])
    finally:
        gw.stop()


def test_error_answer_not_reset():
    """A client that sends its whole oversized request before reading (as
    most HTTP clients do) gets its 431 or 413, not a reset: the gateway
    lingers after the answer (FIN, then reads and drops what comes) rather
    than closing on unread bytes."""
    gw = Gateway(demo_config(mocks()))
    try:
        for i in range(6):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.settimeout(10 * SLOW)
            if i % 2 == 0:
                req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000000 + b"\r\n\r\n"
                want = b"HTTP/1.1 431"
            else:
                req = (b"POST /api/products/1 HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 4000000\r\n\r\n" + b"b" * 4000000)
                want = b"HTTP/1.1 413"
            try:
                s.sendall(req)
                got = b""
                while b"\r\n" not in got:
                    d = s.recv(4096)
                    if not d:
                        break
                    got += d
            except OSError as e:
                raise Fail("round %d: %s before the answer was read" % (i, e))
            check(got.startswith(want), "round %d: %r" % (i, got[:40]))
            s.close()
    finally:
        gw.stop()


TESTS = [
    test_metrics_at_start,
    test_metrics_count,
    test_goroutines_return_to_baseline,
    test_debug_goroutines,
    test_access_log,
    test_log_level_warn,
    test_reload_applies_in_flight_keep_old,
    test_reload_refused_and_restart_notice,
    test_reload_keeps_semaphore,
    test_drain,
    test_drain_timeout,
    test_second_signal_forces,
    test_tls_listener_and_reload,
    test_error_answer_not_reset,
]


def cpu_model():
    """The CPU's model name, printed beside every measured figure."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run_one(name, fn, failed):
    """Runs fn() as the test called name, gtest-style lines; appends name
    to failed when it raises."""
    print("[ RUN      ] " + name, flush=True)
    t0 = time.monotonic()
    try:
        fn()
        print("[       OK ] %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failed.append(name)
        print("[  FAILED  ] %s: %s" % (name, e), flush=True)
        if not isinstance(e, Fail):
            traceback.print_exc()


def run_tests(prog, tests):
    """The main() of a test script: checks the binaries are built, runs
    the tests named on the command line (all by default), prints a count
    of failures; returns the exit status."""
    only = sys.argv[1:]
    for exe in (GATEWAY, MOCK):
        if not os.access(exe, os.X_OK):
            print("%s: %s is missing (run make)" % (prog, exe))
            return 1
    failed = []
    for t in tests:
        if not only or t.__name__ in only:
            run_one(t.__name__, t, failed)
    print("%s: %d failed" % (prog, len(failed)))
    return 1 if failed else 0


def main():
    return run_tests("ops-test", TESTS)


if __name__ == "__main__":
    sys.exit(main())
