#!/usr/bin/env python3
"""Hostile clients and resource exhaustion, against real processes.

Starts build/gateway in front of build/mock-backend processes on loopback
ports (the helpers of tests/ops-test.py) and checks:
  - slowloris: a client that trickles its head one byte at a time gets 408
    and a close when header_timeout_ms runs out, counted from its first
    byte however slowly the bytes come;
  - a slow reader: a client that pipelines requests for large answers and
    never reads them is closed once a write makes no progress for
    write_timeout_ms, and its goroutine ends;
  - connect-and-vanish: hundreds of connections opened and dropped (FIN or
    RST) at once leave the gateway serving, with its goroutines and open
    connections back to their baseline;
  - running out of file descriptors (the gateway under a 64-fd limit, then
    flooded with idle connections): the accept loop backs off and says so
    (at most once a second), the request already in flight is answered,
    and once the flood goes away new requests are served again;
  - a flood of requests at a route whose backend semaphore is full: every
    request is answered (parts fail "overloaded"), and goroutines, open
    connections and the semaphore go back to their baseline.

Run by `make test` (tests/run-tests.sh passes BUILD). Every wait is
bounded; every process started is killed at exit.
"""

import importlib
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ops = importlib.import_module("ops-test")  # the shared helpers
check, Fail, SLOW = ops.check, ops.Fail, ops.SLOW
val, metrics = ops.val, ops.metrics


def baseline_ok(gw, base):
    m = metrics(gw.admin)
    if os.environ.get("HOSTILE_DEBUG"):
        print(base, {k: v for k, v in m.items() if k[0] in (
            "fanfold_goroutines", "fanfold_connections_open", "fanfold_inflight_requests",
            "fanfold_semaphore_inflight")})
    return (val(m, "fanfold_goroutines") <= base
            and val(m, "fanfold_connections_open") == 0
            and val(m, "fanfold_inflight_requests") == 0
            and all(val(m, "fanfold_semaphore_inflight", backend=b) == 0
                    for b in ops.BACKENDS))


def settle(gw):
    ops.wait_until(lambda: val(metrics(gw.admin), "fanfold_goroutines") > 0, 2, "gauge")
    time.sleep(0.2)
    return val(metrics(gw.admin), "fanfold_goroutines")


def test_slowloris_trickle():
    cfg = ops.demo_config(ops.mocks(), limits={"header_timeout_ms": 1000})
    gw = ops.Gateway(cfg)
    try:
        for attempt in range(2):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10 * SLOW)
            head = b"GET /api/products/1?user=u HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"x" * 100
            t0 = time.monotonic()
            got = b""
            s.settimeout(0.2)
            for b in head:
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    break  # closed on us: read what came
                try:
                    chunk = s.recv(4096)
                    got += chunk
                    if not chunk or got.count(b"\r\n\r\n"):
                        break
                except socket.timeout:
                    pass
                if time.monotonic() - t0 > 5 * SLOW:
                    break
            s.settimeout(5 * SLOW)
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (socket.timeout, ConnectionResetError):
                pass
            took = time.monotonic() - t0
            s.close()
            check(got.startswith(b"HTTP/1.1 408 "), "want 408, got %r" % got[:80])
            if 0.9 <= took <= 1.0 + 0.5 * SLOW:
                break
        check(0.9 <= took <= 1.0 + 0.5 * SLOW,
              "408 after %.2f s of trickling (header_timeout_ms 1000)" % took)
    finally:
        gw.stop()


def test_connect_and_vanish_flood():
    cfg = ops.demo_config(ops.mocks())
    gw = ops.Gateway(cfg)
    try:
        base = settle(gw)
        socks = []
        for i in range(400):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5 * SLOW)
            if i % 2:
                # RST on close.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if i % 4 == 3:
                s.sendall(b"GET /api/products/1?user=u HTTP/1.1\r\nHo")
            socks.append(s)
        for s in socks:
            s.close()
        st, _, body = ops.request(gw.port, "/api/products/7?user=1")
        check(st == 200, "after the flood: status %d %r" % (st, body[:80]))
        ops.wait_until(lambda: baseline_ok(gw, base), 5,
                       "goroutines and connections back to baseline")
    finally:
        gw.stop()


def test_fd_exhaustion():
    wrapper = os.path.join(ops.TMP, "gateway-64fds")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec prlimit --nofile=64:64 %s \"$@\"\n" % ops.GATEWAY)
    os.chmod(wrapper, 0o755)
    saved = ops.GATEWAY
    ops.GATEWAY = wrapper
    try:
        cfg = ops.demo_config(ops.mocks())
        gw = ops.Gateway(cfg)
    finally:
        ops.GATEWAY = saved
    flood = []
    try:
        # Warm the upstream pools, then start a slow request: its backend
        # connections exist before the flood.
        check(ops.request(gw.port, "/api/products/1?user=1")[0] == 200, "warm-up")
        cfg_timeout = 1000  # demo_config's route deadline, ms
        slow = ops.Background(gw.port, "/api/products/2?user=1",
                              {"X-Mock-Delay": "inventory=%d" % (cfg_timeout - 300)})
        time.sleep(0.1)
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5 * SLOW)
            flood.append(s)
        ops.wait_until(lambda: "Too many open files" in gw.log(), 5,
                       "the accept loop to report EMFILE")
        st = slow.get(timeout=10)[0]
        check(st == 200, "the request in flight during the flood: status %d" % st)
        warned = gw.log().count("accept: Too many open files")
        time.sleep(1.0)
        more = gw.log().count("accept: Too many open files") - warned
        check(more <= 2, "EMFILE reported %d times in a second (want at most 1-2)" % more)
        for s in flood:
            s.close()
        flood = []

        def served():
            try:
                return ops.request(gw.port, "/api/products/3?user=1", timeout=2)[0] == 200
            except Exception:  # noqa: BLE001 - retried
                return False
        ops.wait_until(served, 10, "a request served after the flood went away")
        check(gw.p.poll() is None, "the gateway is still running")
    finally:
        for s in flood:
            s.close()
        gw.stop()


def test_overloaded_flood_bounded():
    m = ops.mocks()
    cfg = ops.demo_config(m)
    cfg["backends"]["inventory"]["max_inflight"] = 2
    cfg["routes"][0]["timeout_ms"] = 400
    gw = ops.Gateway(cfg)
    try:
        base = settle(gw)
        results = []
        lock = threading.Lock()

        def one(i):
            try:
                st = ops.request(gw.port, "/api/products/%d?user=1" % i,
                                 {"X-Mock-Delay": "inventory=300"})[0]
            except Exception as e:  # noqa: BLE001 - reported below
                st = repr(e)
            with lock:
                results.append(st)
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(150)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20 * SLOW)
        check(len(results) == 150, "%d of 150 requests answered" % len(results))
        bad = [r for r in results if r not in (200, 503, 504)]
        check(not bad, "unexpected answers: %s" % bad[:5])
        check(results.count(503) > 0, "no request was refused as overloaded: %s" % results[:10])
        ops.wait_until(lambda: baseline_ok(gw, base), 5,
                       "goroutines, connections and the semaphore back to baseline")
    finally:
        gw.stop()


def test_slow_reader_write_timeout():
    """A client that pipelines requests for large answers and never reads
    them: once the socket buffers are full the gateway's write makes no
    progress for write_timeout_ms, the connection is closed and its
    goroutine ends, while other clients are served."""
    m = dict(ops.mocks())
    m["pricing"] = ops.start_stub()  # /big: a 64 KiB JSON string
    cfg = ops.demo_config(m, limits={"write_timeout_ms": 500})
    cfg["backends"]["pricing"]["url"] += "/big"
    gw = ops.Gateway(cfg)
    s = None
    try:
        base = settle(gw)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw.port))
        # Answers of over 64 KiB, twice what the send buffer's autotuning
        # may absorb (tcp_wmem's maximum, 4 MiB by default), so a write
        # blocks.
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
        n = max(150, 2 * wmem_max // 65536 + 20)
        s.sendall(b"GET /api/products/1?user=1 HTTP/1.1\r\nHost: a\r\n\r\n" * n)
        st, _, body = ops.request(gw.port, "/api/products/2?user=1")
        check(st == 200 and len(body) > 65536, "a normal client beside it: %d" % st)
        ops.wait_until(lambda: baseline_ok(gw, base), 10,
                       "the stuck connection closed at write_timeout_ms, its goroutine gone")
    finally:
        if s is not None:
            s.close()
        gw.stop()


TESTS = [test_slowloris_trickle, test_slow_reader_write_timeout, test_connect_and_vanish_flood, test_fd_exhaustion,
         test_overloaded_flood_bounded]


def main():
    return ops.run_tests("hostile-test", TESTS)


if __name__ == "__main__":
    sys.exit(main())
