#!/usr/bin/env python3
"""Mixed connections against one Dispatch (or any server with the same names), for the leak check.

    leaks.py --http PORT --tls PORT --ca CA.pem --count N [--concurrency C]
             [--plain-host a.localhost] [--handed-host b.localhost] [--pumped-host c.localhost]
             [--passthrough-host p.localhost]

Kinds, in turn (so N connections hold about N/11 of each):
  plain        HTTP/1.1 GET on the http port, Connection: close, must answer 200
  tls13, tls12 GET over TLS 1.3 / TLS 1.2 to the handed host (the worker runs the record layer)
  pumped       GET over TLS 1.3 to the pumped host (the dispatcher pumps plaintext: the openssl engine)
  h2           TLS 1.3 with ALPN h2, one GET as HEADERS (HPACK by hand), must answer :status 200
  passthrough  GET over TLS 1.3 to the passthrough host (the tenant's worker terminates TLS)
  bad-hello    a TLS record header with a ClientHello of random bytes: must be refused
  bad-head     garbage instead of a request line: must be refused
  truncated    half a request head, then the client closes
  reset-hs     half of a real ClientHello, then a reset (SO_LINGER 0)
  reset-head   half a request head, then a reset

Prints one JSON object: per kind, how many were as expected and how many not (with the first reasons).
Only the good kinds can fail; a bad kind counts as expected whatever the server does, as long as it
ends the connection (no answer within the timeout counts as unexpected). Exit status 1 when any good
connection failed.
"""
import argparse
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time

import tlsclient

TIMEOUT = 30


def recv_all(sock, limit=1 << 20):
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def http_get(sock, host):
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: leaks.py\r\n\r\n".encode())
    data = recv_all(sock)
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answer {data[:40]!r}")


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def tls_context(args, version, alpn=None):
    return tlsclient.context(cafile=args.ca, minimum=version, maximum=version, alpn=alpn)


def tls_get(args, host, version):
    with connect(args.tls) as raw, tls_context(args, version).wrap_socket(raw, server_hostname=host) as s:
        http_get(s, host)


def hpack_literal(index, value):
    """Literal header field without indexing, name from the static table (RFC 7541 6.2.2)."""
    v = value.encode()
    assert index < 15 and len(v) < 127
    return bytes([index]) + bytes([len(v)]) + v


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_get(args, host):
    ctx = tls_context(args, ssl.TLSVersion.TLSv1_3, ["h2"])
    with connect(args.tls) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        if s.selected_alpn_protocol() != "h2":
            raise RuntimeError(f"ALPN {s.selected_alpn_protocol()}")
        # :method GET (static 2), :scheme https (7), :path / (4), :authority (name 1).
        block = bytes([0x82, 0x87, 0x84]) + hpack_literal(1, host)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x5, 1, block))
        buf = b""
        while True:
            while len(buf) < 9:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("closed before the response")
                buf += chunk
            length = int.from_bytes(buf[:3], "big")
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            while len(buf) < 9 + length:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("closed inside a frame")
                buf += chunk
            payload, buf = buf[9:9 + length], buf[9 + length:]
            if kind == 4 and not flags & 1:
                s.sendall(frame(4, 1, 0, b""))  # ack the server's SETTINGS
            elif kind == 1 and stream == 1:
                # :status 200 is static index 8 (0x88) when the server indexes it, as Kestrel does.
                if payload[:1] != b"\x88":
                    raise RuntimeError(f"status block {payload[:8].hex()}")
                s.sendall(frame(7, 0, 0, struct.pack(">II", 1, 0)))  # GOAWAY, no error
                return
            elif kind == 7:
                raise RuntimeError("GOAWAY before the response")


def client_hello_bytes(host):
    """The first flight of a real TLS client (Python's OpenSSL, its default context)."""
    return tlsclient.client_hello(ssl.create_default_context(), host)


def expect_end(sock):
    """A bad connection must be ended by the server: read until EOF or a reset; a silent server is unexpected."""
    try:
        recv_all(sock)
    except ConnectionResetError:
        pass


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def make_kinds(args):
    hello = client_hello_bytes(args.handed_host)

    def plain():
        with connect(args.http) as s:
            http_get(s, args.plain_host)

    def bad_hello():
        with connect(args.tls) as s:
            body = bytes([1]) + os.urandom(3) + os.urandom(random.randint(40, 400))
            s.sendall(bytes([0x16, 3, 1]) + struct.pack(">H", len(body)) + body)
            expect_end(s)

    def bad_head():
        with connect(args.http) as s:
            s.sendall(b"\x00\x01GARBAGE \xff\xfe\r\n\r\n")
            expect_end(s)

    def truncated():
        with connect(args.http) as s:
            s.sendall(f"GET /index.html HTTP/1.1\r\nHost: {args.plain_host}\r\nUser-Ag".encode())
            s.shutdown(socket.SHUT_WR)
            expect_end(s)

    def reset_hs():
        s = connect(args.tls)
        s.sendall(hello[: len(hello) // 2])
        reset(s)

    def reset_head():
        s = connect(args.http)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {args.plain_host}\r\n".encode())
        reset(s)

    kinds = [
        ("plain", True, plain),
        ("tls13", True, lambda: tls_get(args, args.handed_host, ssl.TLSVersion.TLSv1_3)),
        ("tls12", True, lambda: tls_get(args, args.handed_host, ssl.TLSVersion.TLSv1_2)),
        ("h2", True, lambda: h2_get(args, args.handed_host)),
        ("bad-hello", False, bad_hello),
        ("bad-head", False, bad_head),
        ("truncated", False, truncated),
        ("reset-hs", False, reset_hs),
        ("reset-head", False, reset_head),
    ]
    if args.pumped_host:
        kinds.append(("pumped", True, lambda: tls_get(args, args.pumped_host, ssl.TLSVersion.TLSv1_3)))
    if args.passthrough_host:
        kinds.append(("passthrough", True, lambda: tls_get(args, args.passthrough_host, ssl.TLSVersion.TLSv1_3)))
    return kinds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http", type=int, required=True)
    p.add_argument("--tls", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--plain-host", default="a.localhost")
    p.add_argument("--handed-host", default="b.localhost")
    p.add_argument("--pumped-host", default="")
    p.add_argument("--passthrough-host", default="")
    args = p.parse_args()
    kinds = make_kinds(args)
    lock = threading.Lock()
    results = {name: {"expected": 0, "unexpected": 0, "reasons": []} for name, _, _ in kinds}
    counter = iter(range(args.count))
    started = time.time()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            name, good, run = kinds[i % len(kinds)]
            try:
                run()
                ok, reason = True, None
            except (OSError, RuntimeError, ssl.SSLError, ValueError) as e:
                # A bad kind may be refused any way; only a good one (or a timeout) is a failure.
                ok = not good and not isinstance(e, socket.timeout)
                reason = f"{type(e).__name__}: {e}"
            with lock:
                r = results[name]
                r["expected" if ok else "unexpected"] += 1
                if not ok and len(r["reasons"]) < 3:
                    r["reasons"].append(reason)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {"connections": args.count, "seconds": round(time.time() - started, 1), "kinds": results}
    print(json.dumps(summary))
    good = {name for name, g, _ in kinds if g}
    bad_timeouts = any(results[n]["unexpected"] for n in results if n not in good)
    sys.exit(1 if any(results[n]["unexpected"] for n in good) or bad_timeouts else 0)


if __name__ == "__main__":
    main()
