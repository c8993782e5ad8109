#!/usr/bin/env python3
"""make soak: the gateway under sustained load with faults, watched for
growth.

For SOAK_SECONDS (default 120) it runs, against build/gateway in front of
three build/mock-backend processes on loopback ports:
  - wrk at SOAK_CONNECTIONS (default 64) connections on the fan-out route,
    one request in ten asking pricing for a delay past the route's
    deadline (a timeout, so a cancelled call) and one in twenty asking
    inventory for a 503;
  - profile answering 503 to one call in ten (--fail-rate 0.1);
  - pricing killed and restarted on the same port every 15 s (refused
    calls while it is down, fresh connections after);
  - clients that send a request and go away before the answer, 20 a
    second (the cancellation path).
Every second it samples the gateway's goroutines and open connections
(/metrics), its RSS and open fds (/proc), and checks it is alive.

It fails when the gateway dies, when the second half of the run holds
more than the first (after a 10 s warm-up) by over the bounds below, or
when, 5 s after the load stops, goroutines and connections are not back
where they started and fds not within the idle keep-alive pools (3 x 32)
of it. Bounds on growth (not on level: the load itself keeps
SOAK_CONNECTIONS connections and their goroutines busy): RSS +16 MiB and
+25 %, fds +160 (the pools, plus 64), goroutines +256.

Prints a table of the samples (every 10 s) and a summary, with the CPU
model. Not part of make test. Env: SOAK_SECONDS, SOAK_CONNECTIONS, BUILD.
"""

import importlib
import os
import random
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
ops = importlib.import_module("ops-test")  # the shared helpers
val, metrics, Fail = ops.val, ops.metrics, ops.Fail

SECONDS = int(os.environ.get("SOAK_SECONDS", "120"))
CONNS = int(os.environ.get("SOAK_CONNECTIONS", "64"))
WARMUP = 10
# Keep-alive pools hold up to 32 idle connections per backend address for
# 30 s (GW_UPSTREAM_DEFAULT_MAX_IDLE): fds move by that much without a
# leak, so the fd bounds leave room for it.
POOLS = 3 * 32
RSS_SLACK, RSS_PCT, FD_SLACK, G_SLACK = 16 << 20, 0.25, POOLS + 64, 256

WRK_LUA = r'''
local n = 0
request = function()
  n = n + 1
  local h = {}
  if n % 10 == 0 then h["X-Mock-Delay"] = "pricing=800"
  elseif n % 20 == 7 then h["X-Mock-Status"] = "inventory=503" end
  return wrk.format("GET", "/api/products/" .. (n % 1000) .. "?user=" .. (n % 97), h)
end
'''



def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Restarter(threading.Thread):
    """Kills pricing's mock every 15 s and starts it again on its port."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.restarts = port, threading.Event(), 0
        self.p = self.spawn()

    def spawn(self):
        p = subprocess.Popen([ops.MOCK, "--port", str(self.port), "--name", "pricing"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ops.PROCS.append(p)
        ops.wait_until(lambda: ops.connectable(self.port), 10, "pricing mock")
        return p

    def run(self):
        while not self.stop.wait(15):
            self.p.kill()
            self.p.wait()
            time.sleep(1)  # down for a second: refused calls
            self.p = self.spawn()
            self.restarts += 1


class Leavers(threading.Thread):
    """Clients that send a request and leave before its answer."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.count = port, threading.Event(), 0

    def run(self):
        while not self.stop.wait(0.05):
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                s.sendall(b"GET /api/products/%d?user=1 HTTP/1.1\r\nHost: soak\r\n"
                          b"X-Mock-Delay: inventory=300\r\n\r\n" % random.randrange(1000))
                time.sleep(0.02)
                s.close()
                self.count += 1
            except OSError:
                pass


def main():
    for exe in (ops.GATEWAY, ops.MOCK, "/usr/bin/wrk"):
        if not os.access(exe, os.X_OK):
            print("soak: %s is missing (make; apt-get install wrk)" % exe)
            return 1
    mocks = {"profile": ops.start_mock("profile", "--fail-rate", "0.1"),
             "inventory": ops.start_mock("inventory")}
    pport = ops.free_port()
    restarter = Restarter(pport)
    mocks["pricing"] = pport
    cfg = ops.demo_config(mocks)
    cfg["routes"][0]["timeout_ms"] = 500
    gw = ops.Gateway(cfg, "--log-level", "warn")
    pid = gw.p.pid
    lua = os.path.join(ops.TMP, "soak.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    time.sleep(0.5)
    m0 = metrics(gw.admin)
    start = {"g": val(m0, "fanfold_goroutines"), "fds": nfds(pid), "rss": rss(pid)}
    print("soak: %d s, wrk -c%d, on %s" % (SECONDS, CONNS, ops.cpu_model()), flush=True)
    print("soak: at start: %d goroutines, %d fds, RSS %.1f MiB"
          % (start["g"], start["fds"], start["rss"] / 2**20), flush=True)
    wrk = subprocess.Popen(["wrk", "-t2", "-c%d" % CONNS, "-d%ds" % SECONDS, "--timeout", "5s",
                            "-s", lua, "http://127.0.0.1:%d/" % gw.port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ops.PROCS.append(wrk)
    restarter.start()
    leavers = Leavers(gw.port)
    leavers.start()
    samples = []
    ok = True
    why = []
    print("%6s %10s %8s %6s %10s" % ("t (s)", "goroutines", "conns", "fds", "RSS MiB"))
    t0 = time.monotonic()
    while wrk.poll() is None:
        time.sleep(1)
        if gw.p.poll() is not None:
            ok = False
            why.append("the gateway exited (status %s) at %.0f s" % (gw.p.returncode,
                                                                     time.monotonic() - t0))
            break
        try:
            m = metrics(gw.admin)
            s = {"t": time.monotonic() - t0, "g": val(m, "fanfold_goroutines"),
                 "conns": val(m, "fanfold_connections_open"), "fds": nfds(pid), "rss": rss(pid)}
        except Exception as e:  # noqa: BLE001 - a missed sample is reported
            why.append("sample failed: %r" % e)
            continue
        samples.append(s)
        if len(samples) % 10 == 0:
            print("%6.0f %10d %8d %6d %10.1f" % (s["t"], s["g"], s["conns"], s["fds"],
                                                 s["rss"] / 2**20), flush=True)
    out = wrk.communicate()[0] if wrk.poll() is not None else ""
    restarter.stop.set()
    leavers.stop.set()
    steady = [s for s in samples if s["t"] >= WARMUP]
    if ok and len(steady) >= 6:
        half = len(steady) // 2
        first, second = steady[:half], steady[half:]
        for k, slack, pct in (("rss", RSS_SLACK, RSS_PCT), ("fds", FD_SLACK, 0),
                              ("g", G_SLACK, 0)):
            a, b = max(s[k] for s in first), max(s[k] for s in second)
            if b > a * (1 + pct) + slack:
                ok = False
                why.append("%s grew from %d (first half) to %d (second half)" % (k, a, b))
    elif ok:
        why.append("too few samples to judge growth (%d)" % len(steady))
        ok = False
    if gw.p.poll() is None:
        time.sleep(5)
        m = metrics(gw.admin)
        end = {"g": val(m, "fanfold_goroutines"), "conns": val(m, "fanfold_connections_open"),
               "fds": nfds(pid), "rss": rss(pid)}
        print("soak: 5 s after the load: %d goroutines, %d connections, %d fds, RSS %.1f MiB"
              % (end["g"], end["conns"], end["fds"], end["rss"] / 2**20))
        if (end["g"] > start["g"] + 8 or end["conns"] != 0
                or end["fds"] > start["fds"] + POOLS + 16):
            ok = False
            why.append("not back near the start: %r vs %r" % (end, start))
    summary = [line for line in out.splitlines()
               if "Requests/sec" in line or "requests in" in line or "Non-2xx" in line
               or "Socket errors" in line or "Latency" in line]
    for line in summary:
        print("wrk: " + line.strip())
    print("soak: pricing restarted %d times, %d clients left early"
          % (restarter.restarts, leavers.count))
    try:
        gw.stop()
    except Fail as e:
        ok = False
        why.append(str(e))
    for w in why:
        print("soak: " + w)
    print("soak: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
