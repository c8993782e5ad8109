#!/usr/bin/env python3
"""Request smuggling and framing ambiguity: the gateway against hostile
request framing, end to end.

Starts build/gateway in front of three build/mock-backend processes on
loopback ports (the helpers of tests/ops-test.py) and, for every case,
sends an ambiguous or malformed request followed on the same connection by
a second, valid request - the one a smuggling attack hides. Checks:
  - exactly one answer, with the status DESIGN's contract names for the
    case (400, 501, 505, 414), and then the connection closed by the
    gateway (no second answer: the smuggled request is never parsed);
  - the backends served nothing (their /stats counts do not move): neither
    the rejected request nor the smuggled one reached a backend;
  - framings the RFC allows (OWS tab, a coding name's case, absolute-form,
    a chunked body with extensions and trailers) are read exactly: both
    pipelined requests are answered 200 and the backends see exactly two
    fan-outs.

Run by `make test` (tests/run-tests.sh passes BUILD). Every wait is
bounded; every process started is killed at exit.
"""

import importlib
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ops = importlib.import_module("ops-test")  # the shared helpers
check, Fail, SLOW = ops.check, ops.Fail, ops.SLOW

SMUGGLED = b"GET /api/products/666?user=smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
GOOD = b"GET /api/products/1?user=u HTTP/1.1\r\nHost: a\r\n\r\n"


def crlf(s):
    return s.replace(b"\n", b"\r\n")


# (name, request bytes, expected status). Each is followed by SMUGGLED.
# Framing errors inside a body use GET: the route's method, so the gateway
# reads the body (a POST would be answered 405 at its head, and closed,
# without reading it).
REJECTED = [
    ("CL+TE", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\nContent-Length: 6\n"
                   b"Transfer-Encoding: chunked\n\n0\n\nG"), 400),
    ("TE+CL", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n"
                   b"Content-Length: 3\n\n0\n\n"), 400),
    ("duplicate CL, different", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                                     b"Content-Length: 5\nContent-Length: 6\n\nhello!"), 400),
    ("comma-listed CL", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                             b"Content-Length: 5, 5\n\nhello"), 400),
    ("CL with sign", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                          b"Content-Length: +5\n\nhello"), 400),
    ("space before colon", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                                b"Transfer-Encoding : chunked\n\n0\n\n"), 400),
    ("TE chunked, identity", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                                  b"Transfer-Encoding: chunked, identity\n\n0\n\n"), 400),
    ("TE xchunked", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                         b"Transfer-Encoding: xchunked\n\n0\n\n"), 400),
    ("TE chunked twice, one field", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                                         b"Transfer-Encoding: chunked, chunked\n\n0\n\n"), 400),
    ("TE repeated fields", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                                b"Transfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n0\n\n"),
     400),
    ("TE empty", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\nTransfer-Encoding: \n\n"), 400),
    ("TE empty element", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                              b"Transfer-Encoding: , chunked\n\n0\n\n"), 400),
    ("TE lone gzip", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                          b"Transfer-Encoding: gzip\n\n"), 400),
    ("TE in HTTP/1.0", crlf(b"POST /api/products/1 HTTP/1.0\nHost: a\n"
                            b"Transfer-Encoding: chunked\n\n0\n\n"), 400),
    ("TE gzip, chunked", crlf(b"POST /api/products/1 HTTP/1.1\nHost: a\n"
                              b"Transfer-Encoding: gzip, chunked\n\n0\n\n"), 501),
    # A size that is grammatical hex but past any integer (and the body
    # limit): refused as too large before a byte of it is read.
    ("chunk size overflow", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\n"
                                 b"Transfer-Encoding: chunked\n\nFFFFFFFFFFFFFFFFFF\nx\n0\n\n"), 413),
    ("chunk size leading junk", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\n"
                                     b"Transfer-Encoding: chunked\n\n 5\nhello\n0\n\n"), 400),
    ("chunk size 0x prefix", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\n"
                                  b"Transfer-Encoding: chunked\n\n0x5\nhello\n0\n\n"), 400),
    ("chunk extension with a control byte", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\n"
                                                 b"Transfer-Encoding: chunked\n\n5;a=\x01\nhello\n0\n\n"),
     400),
    ("chunk data longer than its size", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\n"
                                             b"Transfer-Encoding: chunked\n\n3\nhello\n0\n\n"), 400),
    ("bare LF", b"GET /api/products/1?user=u HTTP/1.1\nHost: a\n\n", 400),
    ("bare CR in a header", b"GET /api/products/1?user=u HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    ("bare LF in chunked framing", b"GET /api/products/1?user=u HTTP/1.1\r\nHost: a\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("obs-fold", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\nX-A: b\n c\n\n"), 400),
    ("NUL in a value", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\nX-A: b\x00c\n\n"), 400),
    ("NUL in a name", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\nX\x00A: b\n\n"), 400),
    ("no Host", crlf(b"GET /api/products/1?user=u HTTP/1.1\n\n"), 400),
    ("two Hosts", crlf(b"GET /api/products/1?user=u HTTP/1.1\nHost: a\nHost: b\n\n"), 400),
    ("asterisk-form GET", crlf(b"GET * HTTP/1.1\nHost: a\n\n"), 400),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("HTTP/0.9", b"GET /api/products/1\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("HTTP/1.2", crlf(b"GET /api/products/1?user=u HTTP/1.2\nHost: a\n\n"), 505),
    ("CONNECT", crlf(b"CONNECT a:443 HTTP/1.1\nHost: a:443\n\n"), 501),
    ("unknown method", crlf(b"FOO /api/products/1 HTTP/1.1\nHost: a\n\n"), 400),
]

# (name, request bytes): framings the RFC allows, each followed by GOOD.
ACCEPTED = [
    ("TE with a tab", crlf(b"GET /api/products/2?user=u HTTP/1.1\nHost: a\n"
                           b"Transfer-Encoding:\tchunked\n\n5\nhello\n0\n\n")),
    ("TE Chunked", crlf(b"GET /api/products/3?user=u HTTP/1.1\nHost: a\n"
                        b"Transfer-Encoding: Chunked\n\n5\nhello\n0\n\n")),
    ("chunk extensions and trailers", crlf(b"GET /api/products/4?user=u HTTP/1.1\nHost: a\n"
                                           b"Transfer-Encoding: chunked\n\n5;name=\"v a\";x\nhello\n"
                                           b"0\nX-Trailer: t\n\n")),
    ("Content-Length body", crlf(b"GET /api/products/5?user=u HTTP/1.1\nHost: a\n"
                                 b"Content-Length: 5\n\nhello")),
    ("absolute-form", crlf(b"GET http://example.com/api/products/6?user=u HTTP/1.1\n"
                           b"Host: example.com\n\n")),
]


def served(mocks):
    total = 0
    for port in mocks.values():
        st = ops.get_json(port, "/stats")[2]
        total += st["served"]
    return total


def exchange(port, data, timeout=10):
    """Sends data, reads until the gateway closes; returns the bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # closed early by a rejection: read what came back
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise Fail("the gateway kept the connection open after %r" % out[:80])
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def statuses(resp):
    """The status of every final answer in resp (100 Continue skipped),
    each framed by its Content-Length; "bad" for bytes that are not an
    answer."""
    out = []
    while resp:
        end = resp.find(b"\r\n\r\n")
        if not resp.startswith(b"HTTP/1.1 ") or end < 0:
            out.append("bad")
            break
        head = resp[:end].decode("latin-1")
        code = int(head[9:12])
        length = 0
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.lower() == "content-length":
                length = int(v.strip())
        resp = resp[end + 4 + length:]
        if code != 100:
            out.append(code)
    return out


def rejected(port, mocks, req, want):
    """req, then SMUGGLED: one answer want, a close, no backend call."""
    before = served(mocks)
    resp = exchange(port, req + SMUGGLED)
    got = statuses(resp)
    check(got == [want], "want one answer %d, got %s: %r" % (want, got, resp[:200]))
    time.sleep(0.05 * SLOW)  # a late backend call would show now
    check(served(mocks) == before, "the backends served %d requests" % (served(mocks) - before))


def accepted(port, mocks, req):
    """req, then GOOD: two answers 200, two fan-outs."""
    before = served(mocks)
    resp = exchange(port, req + GOOD[:-2] + b"Connection: close\r\n\r\n")
    got = statuses(resp)
    check(got == [200, 200], "want two answers 200, got %s: %r" % (got, resp[:300]))
    check(served(mocks) - before == 6,
          "the backends served %d calls, want 6 (two fan-outs)" % (served(mocks) - before))


def main():
    for exe in (ops.GATEWAY, ops.MOCK):
        if not os.access(exe, os.X_OK):
            print("smuggling-test: %s is missing (run make)" % exe)
            return 1
    mocks = ops.mocks()
    cfg = ops.demo_config(mocks, limits={"header_timeout_ms": 2000, "body_timeout_ms": 2000})
    gw = ops.Gateway(cfg)
    failed = []
    try:
        for name, req, want in REJECTED:
            ops.run_one("rejected: " + name,
                        lambda: rejected(gw.port, mocks, req, want), failed)
        for name, req in ACCEPTED:
            ops.run_one("accepted: " + name, lambda: accepted(gw.port, mocks, req), failed)
    finally:
        gw.stop()
    print("smuggling-test: %d cases, %d failed" % (len(REJECTED) + len(ACCEPTED), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
