#!/usr/bin/env python3
"""Backend faults: what a misbehaving backend does to a part, with each of
the two upstream clients, against real processes.

Starts build/gateway with pricing (an optional part) pointing at a fault
backend in this process - raw sockets, one behaviour per request path -
and profile and inventory at build/mock-backend. For every fault, with
pricing's `client` set to "native" and then to "curl", checks the answer
(200, pricing null, the part's reason in "errors") and that it comes
within the route's deadline:

  refused, reset before or inside the headers, reset inside the body,
  a truncated body (FIN early), not HTTP at all, a bad status line ->
  "unavailable"; a Content-Length body over max_response_bytes and an
  endless chunked body -> "too large"; headers then nothing, a body
  dripped a byte at a time, a request read and never answered, a
  connection never accepted, a DNS server that never answers ->
  "timeout" (at the route's deadline). A 2xx answer that is not JSON ->
  "invalid json".

Then, for each client, nothing leaked: the gateway's goroutines, open
connections and semaphores are back to their baseline once the faults are
over; and a backend whose DNS name moves to another address (the old one
going away) is reached at the new one once the cached answer expires. Run by `make test` (tests/run-tests.sh passes BUILD). Every wait is
bounded; every process started is killed at exit.
"""

import importlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ops = importlib.import_module("ops-test")  # the shared helpers
check, Fail, SLOW = ops.check, ops.Fail, ops.SLOW
val, metrics = ops.val, ops.metrics

DEADLINE_MS = 600
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def rst(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def serve_fault(conn, fault):
    """Acts out one fault on an accepted connection whose request head
    was read. Returns when done with the connection."""
    if fault == "ok":
        conn.sendall(HEAD + b"Content-Length: 11\r\n\r\n{\"ok\":true}")
        conn.close()
    elif fault == "reset_headers":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
        time.sleep(0.05)
        rst(conn)
    elif fault == "reset_body":
        conn.sendall(HEAD + b"Content-Length: 100\r\n\r\n{\"a\":\"0123")
        time.sleep(0.05)
        rst(conn)
    elif fault == "truncated":
        conn.sendall(HEAD + b"Content-Length: 100\r\n\r\n{\"a\":\"0123")
        time.sleep(0.05)
        conn.close()
    elif fault == "not_http":
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()
    elif fault == "bad_status":
        conn.sendall(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}")
        conn.close()
    elif fault == "huge":
        conn.sendall(HEAD + b"Content-Length: 10000000\r\n\r\n\"")
        try:
            for _ in range(200):
                conn.sendall(b"x" * 65536)
        except OSError:
            pass
        conn.close()
    elif fault == "endless":
        conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\n[\r\n")
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                conn.sendall(b"400\r\n" + b"1," * 512 + b"\r\n")
        except OSError:
            pass
        conn.close()
    elif fault == "hang_after_headers":
        conn.sendall(HEAD + b"Content-Length: 11\r\n\r\n")
        wait_gone(conn, 5)
    elif fault == "drip":
        body = b'{"a":"' + b"x" * 200 + b'"}'
        conn.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            for b in body:
                conn.sendall(bytes([b]))
                time.sleep(0.05)
        except OSError:
            pass
        conn.close()
    elif fault == "never":
        wait_gone(conn, 5)
    elif fault == "folded_first":
        # obs-fold on the first header line: a continuation of nothing.
        conn.sendall(b"HTTP/1.1 200 OK\r\n X-Folded: yes\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        conn.close()
    elif fault == "not_json":
        conn.sendall(HEAD + b"Content-Length: 9\r\n\r\nnot json!")
        conn.close()
    else:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
        conn.close()


def wait_gone(conn, secs):
    """Holds the connection until the peer closes it (or secs pass)."""
    conn.settimeout(secs)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()


class FaultBackend:
    """Accepts connections; each request's path /prices/<fault> says what
    to do (pricing's part path is /prices/{id})."""

    def __init__(self):
        self.ln = socket.socket()
        self.ln.bind(("127.0.0.1", 0))
        self.ln.listen(128)
        self.port = self.ln.getsockname()[1]
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            conn, _ = self.ln.accept()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    conn.close()
                    return
                data += chunk
            path = data.split(b" ", 2)[1].decode()
            serve_fault(conn, path.rsplit("/", 1)[-1])
        except OSError:
            conn.close()


def backlog_only_port():
    """A port that completes TCP handshakes (the kernel's backlog) but
    whose owner never accepts: a backend that hangs before the first read."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    ops._REFUSING.append(s)  # held until exit, never accepted
    return s.getsockname()[1]


def silent_dns():
    """A UDP port that reads DNS queries and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    ops._REFUSING.append(s)
    return s.getsockname()[1]


CASES = [
    # (fault, pricing backend, expected reason)
    ("ok", "fault", None),
    ("refused", "refused", "unavailable"),
    ("reset_headers", "fault", "unavailable"),
    ("reset_body", "fault", "unavailable"),
    ("truncated", "fault", "unavailable"),
    ("not_http", "fault", "unavailable"),
    ("bad_status", "fault", "unavailable"),
    ("not_json", "fault", "invalid json"),
    # After "ok" above: libcurl 7.88 reuses the previous transfer's freed
    # last header to unfold this one (curl issue 11620) unless the easy
    # handle is fresh.
    ("folded_first", "fault", "unavailable"),
    ("huge", "fault", "too large"),
    ("endless", "fault", "too large"),
    ("hang_after_headers", "fault", "timeout"),
    ("drip", "fault", "timeout"),
    ("never", "fault", "timeout"),
    ("never_accepted", "backlog", "timeout"),
    ("dns_silent", "dns", "timeout"),
]


def config(mocks, client, urls, dns_port):
    cfg = ops.demo_config(mocks)
    cfg["routes"][0]["timeout_ms"] = DEADLINE_MS
    cfg["dns"] = {"servers": ["127.0.0.1:%d" % dns_port]}
    for name, url in urls.items():
        cfg["backends"]["pricing_" + name] = {
            "url": url, "client": client, "max_response_bytes": 65536, "max_inflight": 8}
    # One route per kind of pricing backend, same shape as the demo's.
    base = cfg["routes"][0]
    routes = [base]
    for name in urls:
        r = json.loads(json.dumps(base))
        r["path"] = "/api/%s/{id}" % name
        r["fanout"][2]["backend"] = "pricing_" + name
        routes.append(r)
    cfg["routes"] = routes
    return cfg


def one_fault(gw, kind, fault, want):
    t0 = time.monotonic()
    st, _, body = ops.request(gw.port, "/api/%s/%s?user=1" % (kind, fault))
    took = (time.monotonic() - t0) * 1000
    check(st == 200, "status %d: %r" % (st, body[:200]))
    doc = json.loads(body)
    got = (doc.get("errors") or {}).get("pricing")
    check(got == want, "pricing reason %r, want %r: %r" % (got, want, body[:300]))
    check(doc.get("inventory") is not None, "inventory answered: %r" % body[:200])
    check(took < DEADLINE_MS + 400 * SLOW,
          "answered after %.0f ms (deadline %d ms)" % (took, DEADLINE_MS))


def run_client(client, fault_port):
    mocks = ops.mocks()
    dns_port = silent_dns()
    urls = {
        "fault": "http://127.0.0.1:%d" % fault_port,
        "refused": "http://127.0.0.1:%d" % ops.refused_port(),
        "backlog": "http://127.0.0.1:%d" % backlog_only_port(),
        "dns": "http://silent.invalid.test:%d" % fault_port,
    }
    gw = ops.Gateway(config(mocks, client, urls, dns_port))
    failed = []
    try:
        ops.wait_until(lambda: val(metrics(gw.admin), "fanfold_goroutines") > 0, 2, "gauge")
        time.sleep(0.2)
        base = val(metrics(gw.admin), "fanfold_goroutines")
        for fault, kind, want in CASES:
            ops.run_one("%s: %s" % (client, fault),
                        lambda: one_fault(gw, kind, fault, want), failed)

        def back():
            m = metrics(gw.admin)
            return (val(m, "fanfold_goroutines") <= base
                    and val(m, "fanfold_connections_open") == 0
                    and val(m, "fanfold_inflight_requests") == 0
                    and all(v == 0 for k, v in m.items()
                            if k[0] == "fanfold_semaphore_inflight"))
        ops.run_one("%s: nothing leaked" % client,
                    lambda: ops.wait_until(back, 10, "goroutines, connections, "
                                           "semaphores back to baseline"), failed)
    finally:
        gw.stop()
    return failed


class DnsStub(threading.Thread):
    """A DNS server for one name whose A records can be changed: answers
    every A query with self.addrs (TTL 1 s), anything else with no
    records."""

    def __init__(self, addrs):
        super().__init__(daemon=True)
        self.addrs = list(addrs)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.start()

    def run(self):
        while True:
            q, peer = self.sock.recvfrom(512)
            if len(q) < 12:
                continue
            end = 12
            while end < len(q) and q[end] != 0:
                end += q[end] + 1
            question = q[12:end + 5]
            qtype = struct.unpack("!H", q[end + 1:end + 3])[0] if end + 3 <= len(q) else 0
            addrs = list(self.addrs) if qtype == 1 else []
            head = q[:2] + struct.pack("!HHHHH", 0x8180, 1, len(addrs), 0, 0)
            answers = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a)
                               for a in addrs)
            self.sock.sendto(head + question + answers, peer)


def mock_stats(addr, port):
    with socket.create_connection((addr, port), timeout=5) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["served"]


def test_address_change(client):
    """The backend's name moves from 127.0.0.1 to 127.0.0.2 and the old
    address goes away: once the cached answer expires (max_ttl_ms 300),
    every call goes to the new address and succeeds."""
    port = ops.free_port()
    one = subprocess.Popen([ops.MOCK, "--port", str(port), "--name", "one"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    two = subprocess.Popen([ops.MOCK, "--port", str(port), "--name", "two",
                            "--listen", "127.0.0.2"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ops.PROCS.extend([one, two])
    ops.wait_until(lambda: ops.connectable(port), 10, "mock one")
    dns = DnsStub(["127.0.0.1"])
    cfg = ops.demo_config(ops.mocks())
    cfg["dns"] = {"servers": ["127.0.0.1:%d" % dns.port], "min_ttl_ms": 100,
                  "max_ttl_ms": 300}
    cfg["backends"]["inventory"] = {"url": "http://moving.test:%d" % port, "client": client}
    gw = ops.Gateway(cfg)
    try:
        for i in range(5):
            st = ops.request(gw.port, "/api/products/%d?user=1" % i)[0]
            check(st == 200, "before the move: status %d" % st)
        check(mock_stats("127.0.0.1", port) == 5, "the first address served the first 5")
        dns.addrs = ["127.0.0.2"]
        one.kill()
        one.wait()
        time.sleep(0.6 * SLOW)  # past max_ttl_ms
        for i in range(10):
            st = ops.request(gw.port, "/api/products/%d?user=1" % i)[0]
            check(st == 200, "after the move: status %d" % st)
        check(mock_stats("127.0.0.2", port) == 10, "the new address served the next 10")
    finally:
        gw.stop()
        two.kill()


def main():
    for exe in (ops.GATEWAY, ops.MOCK):
        if not os.access(exe, os.X_OK):
            print("backend-fault-test: %s is missing (run make)" % exe)
            return 1
    fb = FaultBackend()
    failed = []
    for client in (sys.argv[1:] or ["native", "curl"]):
        failed += run_client(client, fb.port)
        ops.run_one("%s: address list changes" % client,
                    lambda: test_address_change(client), failed)
    print("backend-fault-test: %d failed" % len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
