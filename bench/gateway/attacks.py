#!/usr/bin/env python3
"""bench/gateway/attacks.py: does a hostile client starve normal traffic?

For each attack, runs a normal wrk client (-c32, 2 threads, DURATION
seconds) against build/gateway in front of three build/mock-backend
processes, once alone (the baseline) and once beside the attack, back to
back, and reports that client's req/s and p99 with the attack against its
baseline in the same sitting. Attacks (each from this process, threads):
  slowloris      300 connections trickling their heads a byte a second
  slow-body      300 connections sending a 100 KB body a byte a second
  slow-reader    100 connections pipelining 200 requests, never reading
  conn-flood     connections beyond max_connections (set to 400), held
  vanish-flood   connect and close (FIN or RST) as fast as 2 threads can
  half-close     a request then shutdown(SHUT_WR), in a loop (cancels)
  reset-answer   a request then a reset before the answer, in a loop
Prints a markdown table with the CPU model; the aim (issue 11) is a p99
within 2x of the baseline. Not a test: numbers depend on the machine.

Env: DURATION [10], BUILD [build].
"""

import importlib
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
ops = importlib.import_module("ops-test")  # the shared helpers

DURATION = int(os.environ.get("DURATION", "10"))
REQ = b"GET /api/products/1?user=1 HTTP/1.1\r\nHost: a\r\n\r\n"



def wrk(port):
    out = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % DURATION, "--latency",
                          "http://127.0.0.1:%d/api/products/7?user=1" % port],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    errs = re.search(r"Socket errors:(.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, (errs.group(1).strip() if errs else "") + (
        " non-2xx %s" % non2xx.group(1) if non2xx else "")


class Attack:
    def __init__(self, port, fn, nthreads=1):
        self.port, self.fn, self.stop = port, fn, threading.Event()
        self.socks, self.count, self.lock = [], 0, threading.Lock()
        self.threads = [threading.Thread(target=self.fn, args=(self,), daemon=True)
                        for _ in range(nthreads)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(1)  # let it build up
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        with self.lock:
            self.socks.append(s)
        return s


def trickle(a, head_only):
    socks = []
    for _ in range(300):
        try:
            s = a.connect()
            if not head_only:
                s.sendall(b"POST /api/products/1?user=1 HTTP/1.1\r\nHost: a\r\n"
                          b"Content-Length: 100000\r\n\r\n")
            socks.append(s)
        except OSError:
            break
    while not a.stop.wait(1):
        for s in socks:
            try:
                s.send(b"X" if head_only else b"x")
                a.count += 1
            except OSError:
                pass


def slowloris(a):
    trickle(a, True)


def slow_body(a):
    trickle(a, False)


def slow_reader(a):
    for _ in range(100):
        try:
            s = a.connect()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            try:
                s.send(REQ * 200)
            except OSError:
                pass
            a.count += 1
        except OSError:
            break
    a.stop.wait()


def conn_flood(a):
    while not a.stop.is_set() and a.count < 1000:
        try:
            a.connect()
            a.count += 1
        except OSError:
            time.sleep(0.01)
    a.stop.wait()


def vanish_flood(a):
    i = 0
    while not a.stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            i += 1
            a.count += 1
        except OSError:
            time.sleep(0.001)


def half_close(a):
    while not a.stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            s.sendall(REQ)
            s.shutdown(socket.SHUT_WR)
            s.recv(4096)
            s.close()
            a.count += 1
        except OSError:
            time.sleep(0.001)


def reset_answer(a):
    while not a.stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(REQ)
            s.close()
            a.count += 1
        except OSError:
            time.sleep(0.001)


ATTACKS = [("slowloris", slowloris, 1), ("slow-body", slow_body, 1),
           ("slow-reader", slow_reader, 1), ("conn-flood", conn_flood, 1),
           ("vanish-flood", vanish_flood, 2), ("half-close", half_close, 2),
           ("reset-answer", reset_answer, 2)]


def main():
    only = sys.argv[1:]
    mocks = ops.mocks()
    cfg = ops.demo_config(mocks, limits={"max_connections": 400, "header_timeout_ms": 10000,
                                         "body_timeout_ms": 10000, "write_timeout_ms": 5000})
    gw = ops.Gateway(cfg, "--log-level", "warn")
    rows = []
    try:
        wrk(gw.port)  # warm-up
        for name, fn, nthreads in ATTACKS:
            if only and name not in only:
                continue
            base = wrk(gw.port)
            with Attack(gw.port, fn, nthreads) as a:
                under = wrk(gw.port)
                count = a.count
            alive = gw.p.poll() is None
            rows.append((name, base, under, count, alive))
            print("%-13s base %8.0f req/s p99 %7.2f ms | attacked %8.0f req/s p99 %7.2f ms "
                  "(x%.2f) %s" % (name, base[0], base[1], under[0], under[1],
                                  under[1] / base[1], under[2]), flush=True)
            time.sleep(2)
    finally:
        gw.stop()
    print()
    print("%s, 2 cores; wrk -t2 -c32 -d%ds beside each attack, baseline just before"
          % (ops.cpu_model(), DURATION))
    print()
    print("| attack | baseline req/s | p99 ms | attacked req/s | p99 ms | p99 ratio | "
          "wrk errors under attack | attack ops |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name, base, under, count, alive in rows:
        print("| %s | %.0f | %.2f | %.0f | %.2f | %.2f | %s | %d |"
              % (name, base[0], base[1], under[0], under[1], under[1] / base[1],
                 under[2] or "none", count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
