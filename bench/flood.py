#!/usr/bin/python3
"""The flood bench's load tool (bench/flood.sh): floods, a good client, /proc accounting, the report.

Standard-library Python 3 only (asyncio for the floods). Subcommands:

  flood --kind K ...     hold N hostile connections of one kind for D seconds (reopening those the
                         server ends), from one address or many (127.0.0.0/8), then close them all
                         kinds: stalled (GET a large file, never read), hello (a few bytes of a
                         ClientHello, then nothing), handshake (full TLS 1.3 handshakes as fast as
                         possible, then close), slowloris (a request head dribbled a byte at a time,
                         plain or inside TLS)
  good ...               one request per fresh connection in a loop (alternating vhosts) until
                         SIGTERM; one line per request: time, vhost, latency, status
  scenario ...           one measurement: good client idle / during a flood / after it, and the
                         descriptors and RSS of every process of the server before, during, after;
                         appends one JSON line
  wake                   how long this machine takes to pass a byte around a ring of processes that
                         sleep between passes (the hops a fresh connection makes through Dispatch's
                         processes and threads): prints one line, for the report's header
  report RESULTS META    Markdown report from the JSON lines
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tool  # noqa: E402  (the run.sh helpers: process trees and roles)
import tlsclient  # noqa: E402  (TLS client contexts, a ClientHello)

HERE = os.path.abspath(__file__)
TCP_ESTABLISHED = 1


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def addresses(spec):
    """'127.0.0.2' -> [it]; '127.0.0.3-102' -> 127.0.0.3 ... 127.0.0.102 (last octets, or the third too)."""
    if "-" not in spec:
        return [spec]
    first, last = spec.split("-")
    parts = first.split(".")
    base = int(parts[2]) * 256 + int(parts[3])
    end = int(last)
    out = []
    for i in range(base, base + (end - int(parts[3])) + 1):
        out.append(f"{parts[0]}.{parts[1]}.{i // 256}.{i % 256}")
    return out


def tls_context(version13=True):
    """No session tickets, nothing verified (every connection a full handshake); TLS 1.3 only unless version13 is False."""
    return tlsclient.context(minimum=ssl.TLSVersion.TLSv1_3 if version13 else None, tickets=False)


def client_hello(host):
    """The first flight of a real TLS 1.3 client for `host` (a ClientHello record)."""
    return tlsclient.client_hello(tls_context(), host)


def tcp_state(sock):
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# flood


class Flood:
    def __init__(self, a):
        self.a = a
        self.addrs = addresses(a.source)
        self.stop = asyncio.Event()
        self.held = 0          # connections currently in their hostile state
        self.peak = 0
        self.opened = 0        # connections that reached their hostile state
        self.server_closed = 0  # of those, ended by the server while the flood ran
        self.connect_errors = 0
        self.first_error = None
        self.handshakes = 0
        self.next_addr = 0
        self.ctx = tls_context()
        self.hello = client_hello(a.host)
        self.connecting = asyncio.Semaphore(a.connecting)

    def addr(self):
        self.next_addr += 1
        return self.addrs[self.next_addr % len(self.addrs)]

    def error(self, e):
        self.connect_errors += 1
        if self.first_error is None:
            self.first_error = f"{type(e).__name__}: {e}"

    async def open_raw(self):
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            s.bind((self.addr(), 0))
            await asyncio.wait_for(loop.sock_connect(s, (self.a.addr, self.a.port)), 10)
        except BaseException:
            s.close()
            raise
        return s

    async def open_tls(self):
        """A TLS connection (full handshake); returns (reader, writer)."""
        s = await self.open_raw()
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(sock=s, ssl=self.ctx, server_hostname=self.a.host, limit=1024), 15)
        except BaseException:
            s.close()
            raise
        self.handshakes += 1
        return r, w

    def hold(self, on):
        if on:
            self.held += 1
            self.opened += 1
            self.peak = max(self.peak, self.held)
        else:
            self.held -= 1

    async def watch(self, sock, tick=None):
        """Until the flood stops (True) or the server ends the connection (False); `tick` is called every interval."""
        interval = self.a.dribble if tick else 2.0
        while True:
            try:
                await asyncio.wait_for(self.stop.wait(), interval)
                return True
            except asyncio.TimeoutError:
                pass
            if tcp_state(sock) != TCP_ESTABLISHED:
                return False
            if tick is not None and not await tick():
                return False

    async def one(self):
        """One hostile connection slot: open, misbehave, reopen when the server ends it."""
        a = self.a
        while not self.stop.is_set():
            sock = writer = None
            try:
                async with self.connecting:
                    if self.stop.is_set():
                        return
                    if a.tls and a.kind in ("stalled", "slowloris"):
                        _, writer = await self.open_tls()
                        sock = writer.get_extra_info("socket")
                    else:
                        sock = await self.open_raw()
                    loop = asyncio.get_running_loop()
                    if a.kind == "stalled":
                        req = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\nUser-Agent: flood\r\n\r\n".encode()
                        if writer is not None:
                            writer.write(req)
                            await writer.drain()
                        else:
                            await loop.sock_sendall(sock, req)
                    elif a.kind == "hello":
                        await loop.sock_sendall(sock, self.hello[:a.hello_bytes])
            except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as e:
                self.error(e)
                if writer is not None:
                    writer.transport.abort()
                elif sock is not None:
                    sock.close()
                await asyncio.sleep(0.2)
                continue
            tick = None
            if a.kind == "slowloris":
                head = f"GET / HTTP/1.1\r\nHost: {a.host}\r\nUser-Agent: flood\r\nX-Slow: ".encode()
                pos = [0]

                async def tick():
                    b = head[pos[0]:pos[0] + 1] if pos[0] < len(head) else b"a"
                    pos[0] += 1
                    try:
                        if writer is not None:
                            writer.write(b)
                            await writer.drain()
                        else:
                            await asyncio.get_running_loop().sock_sendall(sock, b)
                    except (OSError, ConnectionError, ssl.SSLError):
                        return False
                    return True
            self.hold(True)
            stopped = await self.watch(sock, tick)
            self.hold(False)
            if not stopped:
                self.server_closed += 1
            if writer is not None:
                writer.transport.abort()
            else:
                sock.close()

    async def run(self):
        a = self.a
        start = time.monotonic()
        tasks = [asyncio.create_task(self.one()) for _ in range(a.n)]
        samples = []
        while time.monotonic() - start < a.duration:
            await asyncio.sleep(1)
            samples.append(self.held)
            if a.verbose:
                print(f"[flood] t={time.monotonic() - start:.0f}s held={self.held} opened={self.opened} "
                      f"server_closed={self.server_closed} errors={self.connect_errors}", file=sys.stderr, flush=True)
        self.stop.set()
        await asyncio.wait(tasks, timeout=30)
        return {"kind": a.kind, "tls": a.tls, "n": a.n, "addresses": len(self.addrs), "duration_s": a.duration,
                "peak_held": self.peak, "median_held": statistics.median(samples) if samples else 0,
                "opened": self.opened, "server_closed": self.server_closed,
                "connect_errors": self.connect_errors, "first_error": self.first_error,
                "handshakes": self.handshakes}


def handshake_flood(a):
    """Full TLS 1.3 handshakes as fast as possible from `a.conc` threads (OpenSSL releases the GIL), then close."""
    ctx = tls_context()
    addrs = addresses(a.source)
    stop = time.monotonic() + a.duration
    lock = threading.Lock()
    st = {"handshakes": 0, "errors": 0, "first_error": None}

    def worker(k):
        i = k
        while time.monotonic() < stop:
            i += a.conc
            s = socket.socket()
            try:
                s.settimeout(10)
                s.bind((addrs[i % len(addrs)], 0))
                s.connect((a.addr, a.port))
                t = ctx.wrap_socket(s, server_hostname=a.host)
                t.close()
                with lock:
                    st["handshakes"] += 1
            except (OSError, ssl.SSLError) as e:
                with lock:
                    st["errors"] += 1
                    st["first_error"] = st["first_error"] or f"{type(e).__name__}: {e}"
                time.sleep(0.05)
            finally:
                s.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(a.conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"kind": "handshake", "tls": True, "n": a.conc, "addresses": len(addrs), "duration_s": a.duration,
            "handshakes": st["handshakes"], "handshakes_per_s": round(st["handshakes"] / a.duration, 1),
            "connect_errors": st["errors"], "first_error": st["first_error"]}


def cmd_flood(a):
    raise_nofile()
    if a.kind == "handshake":
        out = handshake_flood(a)
    else:
        out = asyncio.run(Flood(a).run())
    print(json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# good client


def cmd_good(a):
    ctx = tls_context()
    hosts = a.hosts.split(",")
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    out = open(a.out, "a", buffering=1)
    i = 0
    while running[0]:
        host = hosts[i % len(hosts)]
        i += 1
        t0 = time.monotonic()
        connected = shaken = None
        port = 0
        status = 0
        err = ""
        s = socket.socket()
        try:
            s.settimeout(a.timeout)
            s.bind((a.source, 0))
            s.connect((a.addr, a.port))
            connected = time.monotonic()
            port = s.getsockname()[1]
            if a.tls:
                s = ctx.wrap_socket(s, server_hostname=host)
            shaken = time.monotonic()
            s.sendall(tool.http_request(host, a.path, True))
            status, _ = tool.read_response(s)
        except (OSError, ssl.SSLError, ValueError, IndexError) as e:
            err = f"{type(e).__name__}: {e}"[:120]
        finally:
            s.close()
        end = time.monotonic()
        ms = (end - t0) * 1000
        # Where the time went: TCP connect, TLS handshake (0 for plain), request to the end of the response; and the
        # local port, by which a trace of the server's steps finds this connection (docs/floods.md, "step by step").
        phases = [round((b - a_) * 1000, 3) if a_ is not None and b is not None else None
                  for a_, b in ((t0, connected), (connected, shaken), (shaken, end))]
        out.write(json.dumps({"t": time.time(), "host": host, "ms": round(ms, 3), "status": status, "error": err,
                              "connect_ms": phases[0], "handshake_ms": phases[1], "response_ms": phases[2],
                              "port": port}) + "\n")
        time.sleep(a.interval)
    return 0


# ---------------------------------------------------------------------------------------------
# scenario


def proc_stats(root):
    """{pid: {role, fds, rss_kib}} for every process in root's tree."""
    out = {}
    for pid in tool.tree(root):
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * tool.PAGE_KIB
        except OSError:
            continue
        out[pid] = {"role": tool.role(pid), "fds": fds, "rss_kib": rss}
    return out


def totals(stats):
    return {"fds": sum(p["fds"] for p in stats.values()), "rss_kib": sum(p["rss_kib"] for p in stats.values()),
            "procs": len(stats)}


def by_role(stats):
    roles = {}
    for p in stats.values():
        r = roles.setdefault(p["role"], {"fds": 0, "rss_kib": 0, "procs": 0})
        r["fds"] += p["fds"]
        r["rss_kib"] += p["rss_kib"]
        r["procs"] += 1
    return roles


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def cmd_scenario(a):
    raise_nofile()
    goodlog = a.out + f".good-{a.server}-{a.name.replace('/', '-')}.jsonl"
    if os.path.exists(goodlog):
        os.unlink(goodlog)
    good_cmd = [sys.executable, HERE, "good", "--addr", a.addr, "--port", str(a.good_port), "--hosts", a.hosts,
                "--source", a.good_source, "--out", goodlog, "--interval", str(a.interval)]
    if a.tls:
        good_cmd.append("--tls")
    good = subprocess.Popen(good_cmd)
    marks = {}
    wake = None
    try:
        started = time.time()
        if a.warmup >= 20:
            # The machine's wake-ups, in the warm-up's last seconds (with the good client running): what the idle p99
            # below is mostly made of on a virtual machine, and it changes from one minute to the next.
            time.sleep(a.warmup - 15)
            try:
                probe = subprocess.run([sys.executable, HERE, "wake"], capture_output=True, text=True, timeout=60)
                wake = probe.stdout.strip() or None
            except subprocess.TimeoutExpired:
                wake = "did not finish within 60 s"
        time.sleep(max(0.0, a.warmup - (time.time() - started)))
        marks["idle"] = time.time()
        time.sleep(a.idle)
        before = proc_stats(a.root)
        marks["flood"] = time.time()
        flood_cmd = [sys.executable, HERE, "flood", "--kind", a.kind, "--addr", a.addr, "--port", str(a.port),
                     "--host", a.flood_host, "--source", a.source, "--n", str(a.n), "--duration", str(a.duration),
                     "--path", a.path_large, "--conc", str(a.hs_conc)]
        if a.tls:
            flood_cmd.append("--tls")
        flood = subprocess.Popen(flood_cmd, stdout=subprocess.PIPE, text=True)
        peak = totals(before)
        peak_roles = by_role(before)
        while flood.poll() is None:
            time.sleep(1)
            s = proc_stats(a.root)
            t = totals(s)
            peak = {k: max(peak[k], t[k]) for k in peak}
            for r, v in by_role(s).items():
                cur = peak_roles.setdefault(r, {"fds": 0, "rss_kib": 0, "procs": 0})
                for k in cur:
                    cur[k] = max(cur[k], v[k])
        flood_out = flood.stdout.read().strip()
        marks["after"] = time.time()
        flood_res = json.loads(flood_out.splitlines()[-1]) if flood_out else {"error": "no output"}
        # After: wait (up to after_max) for the descriptors to come back within 5 % of the baseline,
        # then go on measuring the good client for `after` seconds more.
        base = totals(before)
        recovered_s = None
        deadline = time.time() + a.after_max
        while time.time() < deadline:
            t = totals(proc_stats(a.root))
            if t["fds"] <= base["fds"] * 1.05 + 1:
                recovered_s = round(time.time() - marks["after"], 1)
                break
            time.sleep(0.5)
        time.sleep(a.after)
        after = proc_stats(a.root)
        marks["end"] = time.time()
    finally:
        good.send_signal(signal.SIGTERM)
        good.wait(timeout=30)
    samples = [json.loads(line) for line in open(goodlog)]
    phases = {}
    for name, lo, hi in (("idle", marks["idle"], marks["flood"]), ("during", marks["flood"], marks["after"]),
                         ("after", marks["after"] + (recovered_s or 0), marks["end"])):
        for host in a.hosts.split(","):
            xs = [s for s in samples if s["host"] == host and lo <= s["t"] - s["ms"] / 1000 < hi]
            ok = [s["ms"] for s in xs if 200 <= s["status"] < 400]
            fails = [s for s in xs if not (200 <= s["status"] < 400)]
            phases.setdefault(name, {})[host] = {
                "requests": len(xs), "failed": len(fails), "p50_ms": pct(ok, 50), "p99_ms": pct(ok, 99),
                "max_ms": max(ok) if ok else None,
                "first_failure": (fails[0]["error"] or f"status {fails[0]['status']}") if fails else None}
    rec = {"server": a.server, "scenario": a.name, "kind": a.kind, "tls": a.tls, "source": a.source,
           "flood": flood_res, "good": phases, "recovered_s": recovered_s, "wake": wake, "marks": marks,
           "procs": {"before": totals(before), "peak": peak, "after": totals(after),
                     "roles_before": by_role(before), "roles_peak": peak_roles, "roles_after": by_role(after)}}
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))
    return 0


# ---------------------------------------------------------------------------------------------
# wake


def cmd_wake(a):
    """A byte around a ring of `hops` processes joined by pipes, every 20 ms, each process asleep in read() between
    passes: each pass is `hops` wake-ups of sleeping processes, on whichever cores the scheduler picks. On a machine
    whose idle cores wake slowly (a virtual machine's vCPUs) this shows the milliseconds that a fresh connection's
    hops through Dispatch's processes and threads pay while idle, and that a good client's idle p99 is made of
    (docs/floods.md, "What the idle p99 is made of")."""
    pipes = [os.pipe() for _ in range(a.hops + 1)]
    children = []
    for i in range(a.hops):
        pid = os.fork()
        if pid == 0:
            r, w = pipes[i][0], pipes[i + 1][1]
            for fd in {fd for pair in pipes for fd in pair} - {r, w}:
                os.close(fd)  # so that the end of the ring's first pipe reaches every process in turn
            while True:
                b = os.read(r, 1)
                if not b:
                    os._exit(0)
                os.write(w, b)
        children.append(pid)
    for i, (r, w) in enumerate(pipes):
        if i > 0:
            os.close(w)
        if i < a.hops:
            os.close(r)
    lat = []
    for _ in range(a.passes):
        t = time.perf_counter()
        os.write(pipes[0][1], b"x")
        os.read(pipes[a.hops][0], 1)
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.02)
    os.close(pipes[0][1])
    os.close(pipes[a.hops][0])
    for pid in children:
        os.waitpid(pid, 0)
    print(f"{a.hops} hops: p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, over 2 ms {sum(1 for x in lat if x > 2)} of {len(lat)}")
    return 0


# ---------------------------------------------------------------------------------------------
# report


def fmt_ms(x):
    return "-" if x is None else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def cmd_report(a):
    recs = [json.loads(line) for line in open(a.results) if line.strip()]
    meta = json.load(open(a.meta))
    out = [f"# Floods: {meta['date']}, commit {meta['commit']}", ""]
    for k, v in meta.get("machine", {}).items():
        out.append(f"- {k}: {v}")
    out.append("")
    out.append("Good client: one request per fresh connection, alternating vhosts; latency in ms (p50 / p99), "
               "idle / during the flood / after it. 'failed' counts requests that got no 2xx/3xx answer "
               "(the target: none). Target for p99 during: at most 10x idle.")
    out.append("")
    hosts = meta["hosts"]
    head = "| scenario | server | flood held (peak) | " + " | ".join(
        f"{h} idle | {h} during | {h} after" for h in hosts) + " | failed | p99 during / idle | fds before -> peak -> after | RSS MiB before -> peak -> after | back within 5% after |"
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    by = {}
    for r in recs:
        by.setdefault(r["scenario"], {})[r["server"]] = r
    for scen in meta["scenarios"]:
        for server in meta["servers"]:
            r = by.get(scen, {}).get(server)
            if r is None:
                continue
            f = r["flood"]
            held = f.get("peak_held")
            held = f"{held} ({f.get('opened')} opened, {f.get('server_closed')} ended by server)" if held is not None \
                else f"{f.get('handshakes')} handshakes ({f.get('handshakes_per_s')}/s)"
            cells = []
            failed = 0
            worst = 0
            for h in hosts:
                for ph in ("idle", "during", "after"):
                    g = r["good"][ph][h]
                    failed += g["failed"]
                    cells.append(f"{fmt_ms(g['p50_ms'])} / {fmt_ms(g['p99_ms'])}")
                i, d = r["good"]["idle"][h]["p99_ms"], r["good"]["during"][h]["p99_ms"]
                if i and d:
                    worst = max(worst, d / i)
            p = r["procs"]
            mib = lambda k: f"{k / 1024:.0f}"  # noqa: E731
            out.append(f"| {scen} | {server} | {held} | " + " | ".join(cells) +
                       f" | {failed} | {worst:.1f}x | {p['before']['fds']} -> {p['peak']['fds']} -> {p['after']['fds']}"
                       f" | {mib(p['before']['rss_kib'])} -> {mib(p['peak']['rss_kib'])} -> {mib(p['after']['rss_kib'])}"
                       f" | fds {'in ' + str(r['recovered_s']) + ' s' if r['recovered_s'] is not None else 'NO'}, RSS "
                       f"{100 * (p['after']['rss_kib'] / p['before']['rss_kib'] - 1):+.1f}% |")
    out.append("")
    out.append("Per process (Dispatch): descriptors and RSS (MiB) before -> peak -> after")
    out.append("")
    out.append("| scenario | role | fds | RSS MiB |")
    out.append("|---|---|---|---|")
    for scen in meta["scenarios"]:
        r = by.get(scen, {}).get("dispatch")
        if r is None:
            continue
        p = r["procs"]
        for role in sorted(p["roles_before"]):
            b, k, af = p["roles_before"][role], p["roles_peak"].get(role, {}), p["roles_after"].get(role, {})
            out.append(f"| {scen} | {role} | {b['fds']} -> {k.get('fds', '-')} -> {af.get('fds', '-')} | "
                       f"{b['rss_kib'] / 1024:.0f} -> {k.get('rss_kib', 0) / 1024:.0f} -> {af.get('rss_kib', 0) / 1024:.0f} |")
    out.append("")
    out.append("This machine's wake-ups during each scenario's warm-up (`bench/flood.py wake`: a byte passed around 4 "
               "processes asleep in read(), every 20 ms, 500 times; a fresh connection's path through Dispatch makes about "
               "as many hops, nginx's one; docs/floods.md, \"What the idle p99 is made of\"):")
    out.append("")
    for r in recs:
        out.append(f"- {r['scenario']} / {r['server']}: {r.get('wake') or 'not measured'}")
    out.append("")
    out.append("Flood details (JSON per scenario and server):")
    out.append("")
    for r in recs:
        out.append(f"- {r['scenario']} / {r['server']}: `{json.dumps(r['flood'])}`")
        fails = [(ph, h, g["first_failure"]) for ph, hs in r["good"].items() for h, g in hs.items() if g["first_failure"]]
        for ph, h, why in fails:
            out.append(f"  - good client {h} {ph}: {r['good'][ph][h]['failed']} failed, first: {why}")
    print("\n".join(out))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--kind", choices=["stalled", "hello", "handshake", "slowloris"], required=True)
    f.add_argument("--addr", default="127.0.0.1")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--tls", action="store_true")
    f.add_argument("--host", default="a.localhost")
    f.add_argument("--source", default="127.0.0.2", help="one address, or a range 127.0.0.3-102")
    f.add_argument("--n", type=int, default=10000)
    f.add_argument("--duration", type=float, default=20)
    f.add_argument("--path", default="/10m.bin")
    f.add_argument("--hello-bytes", type=int, default=40)
    f.add_argument("--dribble", type=float, default=1.0, help="slowloris: seconds between bytes")
    f.add_argument("--connecting", type=int, default=256, help="connections being opened at once")
    f.add_argument("--conc", type=int, default=8, help="handshake flood: client threads")
    f.add_argument("--verbose", action="store_true")
    g = sub.add_parser("good")
    g.add_argument("--addr", default="127.0.0.1")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--tls", action="store_true")
    g.add_argument("--hosts", default="a.localhost,b.localhost")
    g.add_argument("--source", default="127.0.0.1")
    g.add_argument("--path", default="/index.html")
    g.add_argument("--interval", type=float, default=0.02)
    g.add_argument("--timeout", type=float, default=10)
    g.add_argument("--out", required=True)
    s = sub.add_parser("scenario")
    s.add_argument("--server", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--root", type=int, required=True, help="the server's root pid (its tree is measured)")
    s.add_argument("--kind", required=True)
    s.add_argument("--tls", action="store_true")
    s.add_argument("--addr", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True, help="the flood's port")
    s.add_argument("--good-port", type=int, required=True)
    s.add_argument("--hosts", default="a.localhost,b.localhost")
    s.add_argument("--flood-host", default="a.localhost")
    s.add_argument("--source", required=True)
    s.add_argument("--good-source", default="127.0.0.1")
    s.add_argument("--n", type=int, default=10000)
    s.add_argument("--duration", type=float, default=20)
    s.add_argument("--path-large", default="/10m.bin")
    s.add_argument("--hs-conc", type=int, default=8)
    s.add_argument("--warmup", type=float, default=2)
    s.add_argument("--idle", type=float, default=5)
    s.add_argument("--after", type=float, default=10)
    s.add_argument("--after-max", type=float, default=90)
    s.add_argument("--interval", type=float, default=0.02)
    s.add_argument("--out", required=True)
    w = sub.add_parser("wake")
    w.add_argument("--hops", type=int, default=4)
    w.add_argument("--passes", type=int, default=500)
    r = sub.add_parser("report")
    r.add_argument("results")
    r.add_argument("meta")
    a = p.parse_args()
    return {"flood": cmd_flood, "good": cmd_good, "scenario": cmd_scenario, "wake": cmd_wake, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
