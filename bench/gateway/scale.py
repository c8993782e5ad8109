#!/usr/bin/env python3
"""Scale and memory checks of the gateway (issue: "Scale and memory").

    bench/gateway/scale.py [--gateway build/gateway] [--mock build/mock-backend]
                           [--idle 5000] [--parallel 1000] [--disconnect 500]

Starts three mock backends and a gateway of its own on free loopback ports
(a temporary configuration), then measures:

  idle        N plain keep-alive connections, each after one request, held
              open at once: the gateway's RSS growth per connection; then
              the same with TLS connections (a throw-away certificate made
              with openssl) when openssl is installed.
  parallel    N concurrent fan-out requests against backends that answer
              after 1 s, with max_inflight high enough: the highest number
              of calls each backend saw in flight at once (its /stats).
  disconnect  N clients send a request to slow backends and close 200 ms
              later, twice: each backend must count the calls as cancelled,
              and the gateway's open fds, goroutines (when the admin
              listener's /debug/goroutines is there) and RSS after the
              second round must be where the first left them (the first
              warms pools and the heap up).

Prints one line per figure and a JSON summary on the last line. Needs only
Python's standard library. Every process it starts is stopped at the end.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time


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


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args[0]} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


def http_get(port, path, timeout=5.0, headers=""):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, body


def mock_stats(port):
    status, body = http_get(port, "/stats")
    return json.loads(body) if status == 200 else {}


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Stack:
    """Three mock backends and a gateway on free ports."""

    def __init__(self, args, tmp, tls=None, max_inflight=256, delay_ms=0):
        self.procs = []
        self.mock_ports = [free_port() for _ in range(3)]
        self.port = free_port()
        self.admin = free_port()
        names = ["profile", "inventory", "pricing"]
        for name, port in zip(names, self.mock_ports):
            p = subprocess.Popen([args.mock, "--port", str(port), "--name", name,
                                  "--delay-ms", str(delay_ms)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            wait_port(port, p)
        cfg = {
            "listen": f"127.0.0.1:{self.port}",
            "limits": {"max_connections": 100000, "idle_timeout_ms": 600000,
                       "header_timeout_ms": 60000},
            "backends": {n: {"url": f"http://127.0.0.1:{p}", "max_inflight": max_inflight}
                         for n, p in zip(names, self.mock_ports)},
            "routes": [{"method": "GET", "path": "/api/products/{id}", "timeout_ms": 10000,
                        "fanout": [
                            {"name": "profile", "backend": "profile", "path": "/users/{user}"},
                            {"name": "inventory", "backend": "inventory", "path": "/inventory/{id}",
                             "required": True},
                            {"name": "pricing", "backend": "pricing", "path": "/prices/{id}"}]}],
        }
        if os.environ.get("SCALE_ADMIN") != "0":
            cfg["admin"] = f"127.0.0.1:{self.admin}"
        if tls is not None:
            self.tls_port = free_port()
            cfg["tls"] = {"listen": f"127.0.0.1:{self.tls_port}", "cert": tls[0], "key": tls[1]}
        path = os.path.join(tmp, f"gw-{self.port}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.log = open(os.path.join(tmp, f"gw-{self.port}.log"), "w")
        self.gw = subprocess.Popen([args.gateway, "-c", path], stdout=self.log, stderr=self.log)
        self.procs.append(self.gw)
        wait_port(self.port, self.gw)
        if tls is not None:
            wait_port(self.tls_port, self.gw)

    def goroutines(self):
        try:
            status, body = http_get(self.admin, "/debug/goroutines")
            m = re.match(rb"goroutines: (\d+)", body)
            return int(m.group(1)) if status == 200 and m else None
        except OSError:
            return None

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


def hold_idle(port, n, tls_ctx=None):
    """Open n connections, one request each, keep them open."""
    socks = []
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls_ctx is not None:
            s = tls_ctx.wrap_socket(s, server_hostname="127.0.0.1")
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            b = s.recv(4096)
            if not b:
                raise SystemExit("gateway closed an idle test connection")
            data += b
        socks.append(s)
    return socks


def measure_idle(args, tmp, n, tls):
    stack = Stack(args, tmp, tls=tls)
    try:
        time.sleep(0.3)
        before = rss_kb(stack.gw.pid)
        ctx = None
        port = stack.port
        if tls is not None:
            ctx = ssl.create_default_context(cafile=tls[0])
            ctx.check_hostname = False
            port = stack.tls_port
        socks = hold_idle(port, n, ctx)
        time.sleep(1.0)
        after = rss_kb(stack.gw.pid)
        per = (after - before) * 1024 / n
        for s in socks:
            s.close()
        return {"connections": n, "tls": tls is not None, "rss_before_kb": before,
                "rss_after_kb": after, "bytes_per_connection": round(per)}
    finally:
        stack.stop()


def fire(port, n, path, hold_s=None):
    """n concurrent requests; returns the statuses (or closes after hold_s)."""
    statuses = []
    lock = threading.Lock()
    start = threading.Barrier(n + 1)

    def one():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            start.wait()
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            if hold_s is not None:
                time.sleep(hold_s)
                s.close()
                return
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            s.close()
            with lock:
                statuses.append(int(data.split()[1]) if data else 0)
        except (OSError, threading.BrokenBarrierError):
            with lock:
                statuses.append(-1)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    return statuses


def measure_parallel(args, tmp, n):
    stack = Stack(args, tmp, max_inflight=max(n, 256), delay_ms=1000)
    try:
        t0 = time.time()
        statuses = fire(stack.port, n, "/api/products/7?user=42")
        took = time.time() - t0
        peaks = {p: mock_stats(p).get("max_inflight", 0) for p in stack.mock_ports}
        ok = sum(1 for s in statuses if s == 200)
        return {"requests": n, "ok": ok, "seconds": round(took, 2),
                "backend_max_inflight": list(peaks.values())}
    finally:
        stack.stop()


def disconnect_round(stack, n, fds0, want):
    fire(stack.port, n, "/api/products/7?user=42", hold_s=0.2)
    deadline = time.time() + 10
    cancelled = []
    while time.time() < deadline:
        cancelled = [mock_stats(p).get("cancelled", 0) for p in stack.mock_ports]
        if min(cancelled) >= want and nfds(stack.gw.pid) <= fds0:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return cancelled


def measure_disconnect(args, tmp, n):
    """Two rounds: the first warms the gateway's pools and heap up; the
    second must leave fds, goroutines and RSS where the first left them."""
    stack = Stack(args, tmp, delay_ms=2000)
    try:
        time.sleep(0.3)
        http_get(stack.port, "/healthz")
        fds0, rss0, g0 = nfds(stack.gw.pid), rss_kb(stack.gw.pid), stack.goroutines()
        disconnect_round(stack, n, fds0, n)
        fds1, rss1, g1 = nfds(stack.gw.pid), rss_kb(stack.gw.pid), stack.goroutines()
        cancelled = disconnect_round(stack, n, fds0, 2 * n)
        fds2, rss2, g2 = nfds(stack.gw.pid), rss_kb(stack.gw.pid), stack.goroutines()
        return {"clients": n, "backend_cancelled_total": cancelled,
                "fds": [fds0, fds1, fds2], "rss_kb": [rss0, rss1, rss2],
                "goroutines": [g0, g1, g2]}
    finally:
        stack.stop()


def make_cert(tmp):
    if shutil.which("openssl") is None:
        return None
    crt, key = os.path.join(tmp, "s.crt"), os.path.join(tmp, "s.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway", default="build/gateway")
    ap.add_argument("--mock", default="build/mock-backend")
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--parallel", type=int, default=1000)
    ap.add_argument("--disconnect", type=int, default=500)
    args = ap.parse_args()
    limit = raise_nofile()
    need = args.idle + args.parallel + 200
    if limit < need:
        sys.exit(f"scale: the open-file limit is {limit}, {need} needed")
    out = {}
    with tempfile.TemporaryDirectory(prefix="fanfold-scale-") as tmp:
        if args.idle:
            out["idle_plain"] = measure_idle(args, tmp, args.idle, None)
            print("idle plain:", out["idle_plain"], flush=True)
            tls = make_cert(tmp)
            if tls is not None:
                out["idle_tls"] = measure_idle(args, tmp, args.idle, tls)
                print("idle tls:  ", out["idle_tls"], flush=True)
        if args.parallel:
            out["parallel"] = measure_parallel(args, tmp, args.parallel)
            print("parallel:  ", out["parallel"], flush=True)
        if args.disconnect:
            out["disconnect"] = measure_disconnect(args, tmp, args.disconnect)
            print("disconnect:", out["disconnect"], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
