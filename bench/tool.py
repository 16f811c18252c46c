#!/usr/bin/python3
"""Helpers for bench/run.sh: free ports, TLS clients, /proc accounting, the report.

Everything here is standard-library Python 3 (Debian's /usr/bin/python3), so the benchmark needs no
pip. Subcommands:

  ports K                         print K free loopback TCP ports
  wait-ready URL_KIND ...         wait until a server answers (see cmd_wait)
  handshakes ...                  N full TLS handshakes (no resumption, no tickets), JSON result
  idle ...                        open N TLS connections, hold them idle until killed
  fetch ...                       time single requests, one fresh connection each, JSON result
  measure --group NAME=PID ... -- CMD...
                                  CPU (utime+stime+cutime+cstime of every process in each group's
                                  tree) around CMD; parses wrk or JSON output; appends a JSON line
  mem --group NAME=PID ...        RSS and PSS of each group's process tree, JSON
  tree PID                        list the process tree (pid comm) of PID
  report RESULTS META             markdown report from the JSON lines
"""

import argparse
import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

import tlsclient

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---------------------------------------------------------------------------------------------
# /proc accounting


def _children_map():
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode("latin-1")
        except OSError:
            continue
        rest = data[data.rindex(")") + 2:].split()
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def tree(root):
    """root and all its live descendants."""
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def role(pid):
    """A short name for a process: the basename of argv[0] (Master, TlsDispatcher, Worker, nginx...)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return "?"
    if comm == "nginx":
        # nginx rewrites argv: "nginx: master process nginx -c /path/..." (basename would be the path's
        # last component) / "nginx: worker process"
        full = b" ".join(argv).decode(errors="replace")
        return "nginx-master" if "master" in full else "nginx-worker"
    a0 = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else comm
    if a0 in ("dotnet",) and len(argv) > 1:
        a0 = os.path.basename(argv[1].decode(errors="replace"))
    if a0.startswith("nginx"):
        # "nginx: master process ..." / "nginx: worker process"
        full = b" ".join(argv).decode(errors="replace")
        return "nginx-master" if "master" in full else "nginx-worker"
    return a0 or comm


def cpu_ticks(pid):
    """(user, system) ticks of the process (all threads) plus those of its reaped children."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin-1")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime is field 14 -> rest[11], stime 15, cutime 16, cstime 17
    return int(rest[11]) + int(rest[13]), int(rest[12]) + int(rest[14])


def snapshot(groups):
    """{group: {pid: (role, user_ticks, sys_ticks)}}"""
    snap = {}
    for name, root in groups.items():
        procs = {}
        for pid in tree(root):
            t = cpu_ticks(pid)
            if t is not None:
                procs[pid] = (role(pid), t[0], t[1])
        snap[name] = procs
    return snap


def cpu_delta(before, after):
    """Per group: total seconds, seconds per role, system seconds per role. Processes that appeared
    count from 0; processes that vanished were reaped into their parent's cutime/cstime (counted
    there), so what had been counted for them before is taken back."""
    out = {}
    for name in after:
        b, a = before.get(name, {}), after[name]
        roles, sys_roles = {}, {}
        total = 0
        for pid, (r, u, st) in a.items():
            du = u - (b[pid][1] if pid in b else 0)
            ds = st - (b[pid][2] if pid in b else 0)
            roles[r] = roles.get(r, 0) + du + ds
            sys_roles[r] = sys_roles.get(r, 0) + ds
            total += du + ds
        for pid, (r, u, st) in b.items():
            if pid not in a:
                roles[r] = roles.get(r, 0) - u - st
                sys_roles[r] = sys_roles.get(r, 0) - st
                total -= u + st
        out[name] = {"cpu_s": total / CLK_TCK,
                     "roles": {k: v / CLK_TCK for k, v in sorted(roles.items())},
                     "sys_roles": {k: v / CLK_TCK for k, v in sorted(sys_roles.items())},
                     "procs": len(a)}
    return out


def memory(groups):
    out = {}
    for name, root in groups.items():
        rss = pss = 0
        roles = {}
        pids = tree(root)
        for pid in pids:
            r_rss = r_pss = 0
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Rss:"):
                            r_rss = int(line.split()[1])
                        elif line.startswith("Pss:"):
                            r_pss = int(line.split()[1])
            except OSError:
                try:
                    with open(f"/proc/{pid}/statm") as f:
                        r_rss = int(f.read().split()[1]) * PAGE_KIB
                except OSError:
                    continue
            rss += r_rss
            pss += r_pss
            r = role(pid)
            cur = roles.setdefault(r, {"rss_kib": 0, "pss_kib": 0})
            cur["rss_kib"] += r_rss
            cur["pss_kib"] += r_pss
        out[name] = {"rss_kib": rss, "pss_kib": pss, "procs": len(pids), "roles": roles}
    return out


def parse_groups(items):
    groups = {}
    for g in items or []:
        name, pid = g.split("=", 1)
        groups[name] = int(pid)
    return groups


# ---------------------------------------------------------------------------------------------
# TLS clients


def client_context(cipher, tickets=False, version="1.2"):
    """A client context pinned to one TLS version. "1.2": one cipher suite, group P-256 (the TLS 1.2
    rows compare every server on the same suite and group). "1.3": TLS 1.3 only, OpenSSL's default
    suites; the group is pinned by the caller's environment (OPENSSL_CONF with Groups = X25519, see
    run.sh: Debian's Python 3.11 refuses set_ecdh_curve("X25519")), so a server that cannot do
    TLS 1.3 fails the handshake instead of being measured on TLS 1.2."""
    pinned = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx = tlsclient.context(minimum=pinned, maximum=pinned, tickets=tickets)
    if version == "1.3":
        return ctx
    ctx.set_ciphers(cipher)
    # One group for everyone in the TLS 1.2 rows: P-256 (what the dispatcher's TLS 1.2 engine has).
    ctx.set_ecdh_curve("prime256v1")
    return ctx


def http_request(host, path, close):
    conn = "close" if close else "keep-alive"
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dispatch-bench\r\nConnection: {conn}\r\n\r\n".encode()


def read_response(sock):
    """Read one HTTP/1.1 response with Content-Length (or until close). Returns (status, body_len)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length is None:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, len(body)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return status, len(body)


def cmd_handshakes(a):
    ctx = client_context(a.cipher, version=a.tls_version)
    lock = threading.Lock()
    state = {"left": a.n, "ok": 0, "errors": 0, "reused": 0, "first_error": None, "cipher": None,
             "version": None, "statuses": {}}

    def worker():
        while True:
            with lock:
                if state["left"] <= 0:
                    return
                state["left"] -= 1
            try:
                raw = socket.create_connection((a.addr, a.port), timeout=30)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s = ctx.wrap_socket(raw, server_hostname=a.sni)
                status = None
                if a.request:
                    s.sendall(http_request(a.sni, a.request, True))
                    status, _ = read_response(s)
                with lock:
                    state["ok"] += 1
                    if s.session_reused:
                        state["reused"] += 1
                    if state["cipher"] is None:
                        state["cipher"] = s.cipher()[0]
                        state["version"] = s.version()
                    if status is not None:
                        state["statuses"][status] = state["statuses"].get(status, 0) + 1
                s.close()
            except Exception as e:  # noqa: BLE001 - count and go on
                with lock:
                    state["errors"] += 1
                    if state["first_error"] is None:
                        state["first_error"] = f"{type(e).__name__}: {e}"
                try:
                    raw.close()
                except Exception:  # noqa: BLE001
                    pass

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    out = {"count": state["ok"], "errors": state["errors"], "reused": state["reused"],
           "cipher": state["cipher"], "version": state["version"], "wall_s": wall,
           "rate": state["ok"] / wall if wall else 0, "first_error": state["first_error"],
           "statuses": {str(k): v for k, v in state["statuses"].items()}}
    print(json.dumps(out))
    return 0 if state["errors"] == 0 else 1


def cmd_idle(a):
    """Open N TLS connections (handshake complete) and hold them idle; write READY.1. Then, once
    GO exists, send one keep-alive GET on each, read the response, write READY.2, and hold again
    until killed."""
    import asyncio

    ctx = client_context(a.cipher, version=a.tls_version)

    async def connect(sem):
        async with sem:
            return await asyncio.wait_for(
                asyncio.open_connection(a.addr, a.port, ssl=ctx, server_hostname=a.sni), 30)

    async def request(rw, sem):
        r, w = rw
        async with sem:
            w.write(http_request(a.sni, a.request, False))
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m:
                await asyncio.wait_for(r.readexactly(int(m.group(1))), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))

    def publish(path, info):
        with open(path + ".tmp", "w") as f:
            json.dump(info, f)
        os.rename(path + ".tmp", path)

    async def main():
        sem = asyncio.Semaphore(a.conc)
        t0 = time.monotonic()
        results = await asyncio.gather(*(connect(sem) for _ in range(a.n)), return_exceptions=True)
        conns = [x for x in results if not isinstance(x, BaseException)]
        errs = [x for x in results if isinstance(x, BaseException)]
        info = {"open": len(conns), "errors": len(errs), "wall_s": time.monotonic() - t0,
                "first_error": repr(errs[0]) if errs else None}
        if conns:
            so = conns[0][1].get_extra_info("ssl_object")
            if so is not None:
                info["version"], info["cipher"] = so.version(), so.cipher()[0]
        publish(a.ready_file + ".1", info)
        while not os.path.exists(a.go_file):
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        results = await asyncio.gather(*(request(c, sem) for c in conns), return_exceptions=True)
        errs = [x for x in results if isinstance(x, BaseException)]
        publish(a.ready_file + ".2", {"open": len(conns) - len(errs), "errors": len(errs),
                                      "wall_s": time.monotonic() - t0, "first_error": repr(errs[0]) if errs else None})
        # Hold: the connections stay idle, nothing more is sent, until we are killed.
        await asyncio.sleep(a.hold)
        for _, w in conns:
            w.close()

    asyncio.run(main())
    return 0


def cmd_fetch(a):
    """Time a.count single requests, each on a fresh connection (TLS if --tls); JSON ms list."""
    ctx = client_context(a.cipher, version=a.tls_version) if a.tls else None
    times, statuses = [], []
    for _ in range(a.count):
        t0 = time.perf_counter()
        raw = socket.create_connection((a.addr, a.port), timeout=a.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(raw, server_hostname=a.host) if ctx else raw
        s.sendall(http_request(a.host, a.path, True))
        status, n = read_response(s)
        times.append((time.perf_counter() - t0) * 1000)
        statuses.append(status)
        s.close()
    print(json.dumps({"ms": times, "statuses": statuses}))
    return 0 if all(x == 200 for x in statuses) else 1


def cmd_wait(a):
    """Wait until GET a.path answers 200 (fresh connection each try)."""
    ctx = client_context(a.cipher, version=a.tls_version) if a.tls else None
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            raw = socket.create_connection((a.addr, a.port), timeout=5)
            s = ctx.wrap_socket(raw, server_hostname=a.host) if ctx else raw
            if a.handshake_only:
                s.close()
                return 0
            s.sendall(http_request(a.host, a.path, True))
            status, _ = read_response(s)
            s.close()
            if status == 200 or a.any_status:
                return 0
            last = f"status {status}"
        except Exception as e:  # noqa: BLE001
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    print(f"not ready after {a.timeout}s: {last}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# measure / mem


WRK_REQS = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_ERR = re.compile(r"Socket errors: (.*)")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
# h2load's summary: "requests: N total, N started, N done, N succeeded, ..." and "finished in 8.00s, 1234.56 req/s, ..."
H2LOAD_REQS = re.compile(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", re.M)
H2LOAD_RATE = re.compile(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", re.M)
# printed by run.sh's wrk script (done()): exact counters instead of wrk's rounded "2.74GB read"
WRK_BENCH = re.compile(r"^BENCH (.*)$", re.M)


def parse_output(text):
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text.splitlines()[-1])
        except ValueError:
            pass
    out = {}
    m = WRK_REQS.search(text)
    if m:
        out["count"] = int(m.group(1))
    m = WRK_RPS.search(text)
    if m:
        out["rate"] = float(m.group(1))
    m = WRK_ERR.search(text)
    if m:
        out["socket_errors"] = m.group(1)
    m = WRK_NON2XX.search(text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = H2LOAD_REQS.search(text)
    if m:
        out["count"] = int(m.group(1))
        if int(m.group(2)) or int(m.group(3)):
            out["h2load_errors"] = {"failed": int(m.group(2)), "errored": int(m.group(3))}
        r = H2LOAD_RATE.search(text)
        if r:
            out["rate"] = float(r.group(3))
            out["duration_s"] = float(r.group(1)) / (1000 if r.group(2) == "ms" else 1)
    m = WRK_BENCH.search(text)
    if m:
        f = dict(kv.split("=", 1) for kv in m.group(1).split())
        out["count"] = int(f["requests"])
        out["bytes"] = int(f["bytes"])
        dur = int(f["duration_us"]) / 1e6
        out["duration_s"] = dur
        if dur > 0:
            out["rate"] = out["count"] / dur
            out["mib_s"] = out["bytes"] / dur / 2**20
        errs = {k: int(f[k]) for k in ("connect", "read", "write", "status", "timeout") if int(f.get(k, 0))}
        if errs:
            out["wrk_errors"] = errs
    return out


def machine_busy():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def cmd_measure(a):
    groups = parse_groups(a.group)
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    busy0 = machine_busy()
    before = snapshot(groups)
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    time.sleep(a.settle)   # let the servers finish closing what the client just closed
    after = snapshot(groups)
    busy1 = machine_busy()
    rec = {"metric": a.metric, "server": a.server, "round": a.round, "wall_s": wall,
           "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
           "rc": p.returncode, "cmd": " ".join(cmd), "client": parse_output(p.stdout),
           "cpu": cpu_delta(before, after)}
    if p.returncode != 0 or a.keep_output:
        rec["stdout"] = p.stdout[-2000:]
        rec["stderr"] = p.stderr[-2000:]
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    return p.returncode


def cmd_idle_measure(a):
    """Memory of each group before and after a.n idle TLS connections held by a child client: phase 1
    handshake only, phase 2 the same connections after one keep-alive GET each. Two records."""
    import resource

    groups = parse_groups(a.group)
    stem = f"/tmp/dispatch-bench-idle-{os.getpid()}"
    ready, go = stem + ".ready", stem + ".go"
    for f in (ready + ".1", ready + ".2", go):
        if os.path.exists(f):
            os.unlink(f)
    cmd = [sys.executable, os.path.abspath(__file__), "idle", "--port", str(a.port), "--sni", a.sni,
           "--n", str(a.n), "--cipher", a.cipher, "--tls-version", a.tls_version, "--request", a.request,
           "--conc", str(a.conc), "--ready-file", ready,
           "--go-file", go, "--hold", "600"]

    def raise_nofile():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def wait_for(path, child):
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline and not os.path.exists(path):
            if child.poll() is not None:
                return None
            time.sleep(0.05)
        return json.load(open(path)) if os.path.exists(path) else None

    before = memory(groups)
    child = subprocess.Popen(cmd, preexec_fn=raise_nofile)
    phases = []
    try:
        info = wait_for(ready + ".1", child)
        if info is not None:
            time.sleep(a.settle)
            phases.append((a.metric_stem, info, memory(groups)))
            open(go, "w").close()
            info = wait_for(ready + ".2", child)
            if info is not None:
                time.sleep(a.settle)
                phases.append((a.metric_stem + "-req", info, memory(groups)))
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for f in (ready + ".1", ready + ".2", go):
            if os.path.exists(f):
                os.unlink(f)
    ok = len(phases) == 2
    for metric, info, after in phases:
        info["asked"] = a.n
        rec = {"metric": metric, "server": a.server, "round": a.round, "cmd": " ".join(cmd[1:]),
               "client": info, "before": before, "after": after}
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({"metric": metric, "client": info,
                          "rss_kib": {g: [before[g]["rss_kib"], after[g]["rss_kib"]] for g in groups}}))
        ok = ok and info.get("errors") == 0
    return 0 if ok else 1


S_CLIENT_ERR = re.compile(r":error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+):")


def cmd_probe(a):
    """One handshake with `openssl s_client` under OPENSSL_CONF=a.cnf (the same client pin as wrk's
    and Python's for that row); prints and records what was negotiated (protocol, suite, group) or
    why the handshake failed. Exit status 0 if a handshake of the pinned version completed."""
    env = dict(os.environ, OPENSSL_CONF=a.cnf)
    cmd = ["openssl", "s_client", "-connect", f"{a.addr}:{a.port}", "-servername", a.sni]
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env, timeout=a.timeout)
        text = p.stdout
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\n(no answer within {a.timeout:g} s)"
    info = {"ok": False}
    m = re.search(r"^New, (\S+), Cipher is (\S+)", text, re.M)
    if m and m.group(2) != "(NONE)":
        info.update(ok=True, protocol=m.group(1).rstrip(","), cipher=m.group(2))
    m = re.search(r"^(?:Server|Peer) Temp Key: ([^,\n]+(?:, [^,\n]+)?)", text, re.M)
    if m:
        parts = [x.strip() for x in m.group(1).split(",")]
        info["group"] = parts[1] if parts[0] == "ECDH" and len(parts) > 1 else parts[0]
    m = re.search(r"^Peer signature type: (\S+)", text, re.M)
    if m:
        info["signature"] = m.group(1)
    if a.expect and info.get("protocol") not in (None, a.expect):
        info["ok"] = False
        info["error"] = f"negotiated {info.get('protocol')}, not {a.expect}"
    if not info["ok"] and "error" not in info:
        reasons = S_CLIENT_ERR.findall(text)
        alert = re.search(r"SSL alert number (\d+)", text)
        if reasons:
            info["error"] = reasons[0] + (f" (alert {alert.group(1)})" if alert else "")
        elif "(no answer" in text:
            info["error"] = text.strip().splitlines()[-1]
        else:
            tail = [l for l in text.strip().splitlines() if l.strip() and not l.startswith("---")]
            info["error"] = (tail[-1] if tail else "no output from openssl s_client")[:200]
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps({"metric": a.metric, "server": a.server, "round": a.round,
                                "cmd": f"OPENSSL_CONF={a.cnf} " + " ".join(cmd), "client": info}) + "\n")
    print(json.dumps(info))
    return 0 if info["ok"] else 1


def cmd_record_failure(a):
    """A row that could not be measured: the report shows a.reason in its cell instead of a number."""
    for metric in a.metric:
        with open(a.out, "a") as f:
            f.write(json.dumps({"metric": metric, "server": a.server, "round": a.round,
                                "failed": a.reason, "client": {}}) + "\n")
    return 0


def cmd_mem(a):
    print(json.dumps(memory(parse_groups(a.group))))
    return 0


def cmd_tree(a):
    for pid in tree(a.pid):
        print(pid, role(pid))
    return 0


def cmd_ports(a):
    socks, ports = [], []
    for _ in range(a.k):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))
    return 0


# ---------------------------------------------------------------------------------------------
# report

SERVERS = ["dispatch", "nginx", "haproxy"]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def spread(xs):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return f" ({fmt(min(xs))}–{fmt(max(xs))})"


def cmd_report(a):
    recs = [json.loads(line) for line in open(a.results) if line.strip()]
    meta = json.load(open(a.meta))
    by = {}
    for r in recs:
        by.setdefault((r["metric"], r["server"]), []).append(r)

    def server_groups(server):
        # the groups whose CPU is "the server": HAProxy's row includes its nginx backend
        return {"dispatch": ["dispatch"], "nginx": ["nginx"], "haproxy": ["haproxy", "backend"],
                "haproxy-only": ["haproxy"]}[server]

    def server_cpu(rec, server):
        return sum(rec["cpu"].get(g, {}).get("cpu_s", 0) for g in server_groups(server))

    def cpu_per_unit(rec, server, unit_scale):
        if "cpu" not in rec:
            return None
        cnt = rec["client"].get("count")
        if not cnt:
            return None
        return server_cpu(rec, server) / cnt * unit_scale

    def cpu_per_mib(rec, server):
        if "cpu" not in rec or not rec["client"].get("bytes"):
            return None
        return server_cpu(rec, server) / (rec["client"]["bytes"] / 2**20) * 1000

    def why_missing(rs):
        """The text for a cell whose rounds produced no number."""
        for r in rs:
            if r.get("failed"):
                return r["failed"]
        for r in rs:
            c = r.get("client", {})
            if c.get("first_error"):
                return "failed: " + str(c["first_error"])[:160]
            if c.get("wrk_errors") or c.get("socket_errors"):
                return "failed: wrk errors " + json.dumps(c.get("wrk_errors") or c.get("socket_errors"))
        return "no result"

    rows = []

    def add_row(label, values):
        d, n, h = values.get("dispatch"), values.get("nginx"), values.get("haproxy")
        rows.append((label, values, ratio(d[0] if d else None, n[0] if n else None),
                     ratio(d[0] if d else None, h[0] if h else None)))

    def section(title):
        rows.append((f"**{title}**", {}, "", ""))

    def metric_row(metric, label, value_of, servers=SERVERS, backend_row=False, backend_value_of=None):
        vals = {}
        for s in servers:
            rs = by.get((metric, s), [])
            if not rs:
                continue
            xs = [value_of(r, s) for r in rs]
            if any(x is not None for x in xs):
                vals[s] = (med(xs), spread(xs))
            else:
                vals[s] = (None, "", why_missing(rs))
        if vals:
            add_row(label, vals)
        rs = by.get((metric, "haproxy"), [])
        if rs and backend_row:
            xs = [backend_value_of(r) for r in rs]
            d = vals.get("dispatch", (None, ""))[0]
            rows.append((label + " — HAProxy process only (no backend)",
                         {"haproxy": (med(xs), spread(xs))}, "", ratio(d, med(xs))))

    def cpu_metric(metric, label, scale, backend_row=True):
        metric_row(metric, label, lambda r, s: cpu_per_unit(r, s, scale), backend_row=backend_row,
                   backend_value_of=lambda r: cpu_per_unit(r, "haproxy-only", scale))

    def rate_metric(metric, label):
        metric_row(metric, label, lambda r, s: r["client"].get("rate") if "cpu" in r else None)

    def dl_metrics(metric, tls):
        metric_row(metric, f"10 MiB download, keep-alive, {tls} — MiB/s (**higher is better**: "
                   "a ratio below 1 means Dispatch is slower)",
                   lambda r, s: r["client"].get("mib_s") if "cpu" in r else None)
        metric_row(metric, f"10 MiB download, {tls} — server CPU ms / MiB", cpu_per_mib, backend_row=True,
                   backend_value_of=lambda r: cpu_per_mib(r, "haproxy-only"))

    def mem_per_conn(r, s, kind):
        n = r["client"].get("open") or 0
        if not n or "after" not in r:
            return None
        return sum(r["after"][g][kind] - r["before"][g][kind] for g in server_groups(s) if g in r["after"]) / n

    def idle_metrics(stem, tls):
        metric_row(stem, f"Idle {tls} connections opened (of {idle_asked(stem)} asked; higher is better)",
                   lambda r, s: r["client"].get("open") if "after" in r else None)
        for metric, what in ((stem, "handshake only"), (stem + "-req", "after one keep-alive GET")):
            for kind, name in (("rss_kib", "RSS"), ("pss_kib", "PSS")):
                metric_row(metric, f"Idle {tls} connection, {what} — KiB {name} / connection (whole tree)",
                           lambda r, s, kind=kind: mem_per_conn(r, s, kind))

    def idle_asked(stem):
        xs = {r["client"].get("asked") for s in SERVERS for r in by.get((stem, s), []) if r["client"].get("asked")}
        return "/".join(str(x) for x in sorted(xs)) or "?"

    has13 = any(m.startswith(("handshake13", "https13", "dl-tls13", "idle-tls13")) for m, _ in by)
    if has13:
        section("TLS 1.3 — X25519, ECDSA P-256 certificate, cipher suite as negotiated (see below)")
        cpu_metric("handshake13", "Full TLS 1.3 handshake — server CPU ms / handshake", 1000, False)
        rate_metric("handshake13", "  TLS 1.3 handshakes/s achieved (client shares the 2 cores)")
        cpu_metric("handshake13-req", "Full TLS 1.3 handshake + one GET / (1 KiB) + close — server CPU ms / connection", 1000)
        cpu_metric("https13-ka", "Keep-alive TLS 1.3 GET 1 KiB (wrk -c10) — server CPU µs / request", 1e6)
        rate_metric("https13-ka", "  TLS 1.3 requests/s (wrk, higher is better)")
        cpu_metric("https13-ka-100k", "Keep-alive TLS 1.3 GET 100 KiB (wrk -c10) — server CPU µs / request", 1e6)
        rate_metric("https13-ka-100k", "  TLS 1.3 100 KiB requests/s (higher is better)")
        cpu_metric("h2-ka", "HTTP/2 over TLS 1.3, GET 1 KiB (h2load -c10 -m10) — server CPU µs / request", 1e6)
        rate_metric("h2-ka", "  HTTP/2 requests/s (higher is better)")
        cpu_metric("h2-ka-100k", "HTTP/2 over TLS 1.3, GET 100 KiB (h2load -c10 -m10) — server CPU µs / request", 1e6)
        rate_metric("h2-ka-100k", "  HTTP/2 100 KiB requests/s (higher is better)")
        dl_metrics("dl-tls13", "TLS 1.3")
        idle_metrics("idle-tls13", "TLS 1.3")
    section("TLS 1.2 — ECDHE-ECDSA-AES128-GCM-SHA256, P-256")
    cpu_metric("handshake-ecdsa", "Full TLS 1.2 handshake, ECDSA P-256 — server CPU ms / handshake", 1000, False)
    rate_metric("handshake-ecdsa", "  handshakes/s achieved (client shares the 2 cores)")
    cpu_metric("handshake-rsa", "Full TLS 1.2 handshake, RSA-2048 — server CPU ms / handshake", 1000, False)
    cpu_metric("handshake-req", "Full handshake + one GET / (1 KiB) + close, ECDSA — server CPU ms / connection", 1000)
    cpu_metric("https-ka", "Keep-alive HTTPS GET 1 KiB (wrk -c10) — server CPU µs / request", 1e6)
    rate_metric("https-ka", "  HTTPS requests/s (wrk, higher is better)")
    cpu_metric("https-ka-100k", "Keep-alive HTTPS GET 100 KiB (wrk -c10) — server CPU µs / request", 1e6)
    rate_metric("https-ka-100k", "  HTTPS 100 KiB requests/s (higher is better)")
    dl_metrics("dl-tls12", "TLS 1.2")
    idle_metrics("idle-tls", "TLS 1.2")
    section("Plain HTTP")
    cpu_metric("http-ka", "Keep-alive plain HTTP GET 1 KiB (wrk -c10) — server CPU µs / request", 1e6)
    rate_metric("http-ka", "  HTTP requests/s (higher is better)")
    cpu_metric("http-close", "Plain HTTP GET 1 KiB, one request per connection (wrk -c10, Connection: close) — server CPU µs / connection", 1e6)
    rate_metric("http-close", "  HTTP connections/s (higher is better)")

    out = []
    engine = meta.get("dispatch_engine", "default")
    out.append(f"# Dispatch vs nginx vs HAProxy — {meta['date']} ({meta['commit']})"
               + ("" if engine == "default" else f" — Dispatch TLS engine: {engine} (DISPATCH_ENGINE)") + "\n")
    out.append("Lower is better for CPU and memory; higher is better for requests/s, MiB/s and "
               "connections opened. Ratios are Dispatch ÷ peer (1.00× = parity; for CPU and memory, "
               "3.00× means Dispatch uses three times as much; for MiB/s, 0.50× means Dispatch "
               f"delivers half as fast). Values are medians over {meta['rounds']} round(s); the range across "
               "rounds is in parentheses. Absolute numbers on a shared 2-core machine are noise; "
               "read the ratios. A cell that says \"handshake failed\" is a server that could not "
               "complete a handshake with that row's client pin (nothing was measured for it).\n")
    out.append("| metric | Dispatch | nginx | HAProxy | Dispatch/nginx | Dispatch/HAProxy |")
    out.append("|---|---|---|---|---|---|")
    for label, vals, rn, rh in rows:
        def cell(s):
            v = vals.get(s)
            if not v:
                return ""
            if v[0] is None and len(v) > 2:
                return v[2].replace("|", "\\|")
            return f"{fmt(v[0])}{v[1]}"
        out.append(f"| {label} | {cell('dispatch')} | {cell('nginx')} | {cell('haproxy')} | {rn} | {rh} |")
    out.append("")
    hs = [r for r in recs if r["metric"].startswith("handshake") and "reused" in r.get("client", {})]
    if hs:
        bad = [f"{r['metric']}/{r['server']}/round {r['round']}: {r['client']['reused']}" for r in hs if r["client"]["reused"]]
        out.append(("Session resumption check: **FAILED**, sessions reused in " + "; ".join(bad)) if bad else
                   f"Session resumption check: `reused` = 0 in all {len(hs)} handshake runs (every handshake was full).")
        out.append("")
    out.append("HAProxy column: HAProxy plus its backend (a separate nginx, worker_processes 1, plain HTTP, "
               "same files) whenever a request is served; the handshake rows involve HAProxy alone. The "
               "\"HAProxy process only\" rows leave the backend out.\n")

    # targets
    out.append("## Against the bar (nginx/HAProxy class)\n")
    bar = [("handshake-ecdsa", "0.30–0.45 ms CPU / full handshake", 1000, "ms"),
           ("https-ka", "≈ 35 µs CPU / keep-alive HTTPS request", 1e6, "µs")]
    for metric, text, scale, unit in bar:
        xs = [cpu_per_unit(r, "dispatch", scale) for r in by.get((metric, "dispatch"), [])]
        out.append(f"- {text}: Dispatch {fmt(med(xs))} {unit}")
    xs = []
    for r in by.get(("idle-tls", "dispatch"), []):
        n = r["client"].get("open") or 0
        if n:
            xs.append((r["after"]["dispatch"]["rss_kib"] - r["before"]["dispatch"]["rss_kib"]) / n)
    out.append(f"- ≈ 17 KiB / idle TLS connection: Dispatch {fmt(med(xs))} KiB RSS")
    out.append("")

    # Dispatch CPU split
    out.append("## Where Dispatch spends its CPU (share of the Dispatch process tree's CPU)\n")
    out.append("Each cell: CPU seconds summed over all rounds (share of the tree; share of that "
               "process's time spent in the kernel).\n")
    out.append("| metric | total CPU s | " + " | ".join(["Master", "TlsDispatcher", "Worker", "other"]) + " |")
    out.append("|---|---|---|---|---|---|")
    for metric in ("handshake13", "handshake13-req", "https13-ka", "https13-ka-100k", "h2-ka", "h2-ka-100k", "dl-tls13",
                   "handshake-ecdsa", "handshake-rsa", "handshake-req", "https-ka", "https-ka-100k", "dl-tls12",
                   "http-ka", "http-close"):
        rs = [r for r in by.get((metric, "dispatch"), []) if "cpu" in r]
        if not rs:
            continue
        tot = sum(r["cpu"]["dispatch"]["cpu_s"] for r in rs)
        acc, sacc = {}, {}
        for r in rs:
            for k, v in r["cpu"]["dispatch"]["roles"].items():
                key = k if k in ("Master", "TlsDispatcher", "Worker") else "other"
                acc[key] = acc.get(key, 0) + v
                sacc[key] = sacc.get(key, 0) + r["cpu"]["dispatch"].get("sys_roles", {}).get(k, 0)

        def cell(k):
            v = acc.get(k, 0)
            if not tot:
                return "n/a"
            sys_share = f"; {100 * sacc.get(k, 0) / v:.0f}% sys" if v > 0 else ""
            return f"{v:.2f} s ({100 * v / tot:.0f}%{sys_share})"
        out.append(f"| {metric} | {tot:.2f} | " + " | ".join(cell(k) for k in ("Master", "TlsDispatcher", "Worker", "other")) + " |")
    out.append("")
    # the same kernel share for the peers, for comparison
    peers = []
    for metric in ("handshake-ecdsa", "https-ka", "http-ka"):
        for srv, grp in (("nginx", "nginx"), ("haproxy", "haproxy")):
            rs = by.get((metric, srv), [])
            t = sum(r["cpu"][grp]["cpu_s"] for r in rs)
            sy = sum(sum(r["cpu"][grp].get("sys_roles", {}).values()) for r in rs)
            if t:
                peers.append(f"{metric} {srv} {100 * sy / t:.0f}%")
    if peers:
        out.append("Kernel share of the peers' CPU, for comparison: " + ", ".join(peers) + ".\n")
    # memory per idle connection, split by process
    idle_ms = [m for m in ("idle-tls13", "idle-tls13-req", "idle-tls", "idle-tls-req")
               if any(by.get((m, s)) for s in SERVERS)]

    def per_role(r, server):
        """{process label: (KiB RSS, KiB PSS) per connection} for one record."""
        n = r["client"].get("open") or 0
        if not n or "after" not in r:
            return None
        res = {}
        for g in server_groups(server):
            after, before = r["after"].get(g, {}).get("roles", {}), r["before"].get(g, {}).get("roles", {})
            for k in set(after) | set(before):
                label = f"backend {k}" if g == "backend" else k
                a_, b_ = after.get(k, {}), before.get(k, {})
                res[label] = tuple((a_.get(x, 0) - b_.get(x, 0)) / n for x in ("rss_kib", "pss_kib"))
        return res

    def role_medians(rs, server):
        acc = {}
        for r in rs:
            pr = per_role(r, server)
            for k, v in (pr or {}).items():
                acc.setdefault(k, []).append(v)
        return {k: (med([x[0] for x in v]), med([x[1] for x in v])) for k, v in acc.items()}

    def opened(rs):
        xs = [r["client"].get("open") for r in rs if "after" in r]
        asked = next((r["client"].get("asked") for r in rs if r["client"].get("asked")), None)
        return f"{'/'.join(str(x) for x in xs) or '0'} of {asked or '?'}"

    if idle_ms:
        out.append("## Memory per idle connection, by process\n")
        out.append("KiB per connection, RSS / PSS (median over rounds): each process's growth from just before the "
                   "client connected to 2 s after the last connection was established (or after the last GET), "
                   "divided by the connections open. Dispatch: the dispatcher (TlsDispatcher) completes each "
                   "handshake and hands the session to the worker, which holds the connection and runs its TLS "
                   "record layer; the dispatcher's column is the growth of its heap over the handshakes, not "
                   "state it keeps (it holds no descriptor of a handed connection). Kernel socket buffers are "
                   "in no process's RSS.\n")
        out.append("| metric | opened | Master | TlsDispatcher | Worker | other | whole tree |")
        out.append("|---|---|---|---|---|---|---|")
        for m in idle_ms:
            rs = by.get((m, "dispatch"), [])
            if not rs:
                continue
            if not any("after" in r for r in rs):
                out.append(f"| {m} | 0 | {why_missing(rs)} | | | | |")
                continue
            rm = role_medians(rs, "dispatch")
            other = [v for k, v in rm.items() if k not in ("Master", "TlsDispatcher", "Worker")]
            def rp(v):
                return f"{fmt(v[0])} / {fmt(v[1])}" if v else ""
            oth = (sum(v[0] for v in other), sum(v[1] for v in other)) if other else None
            tot = (med([mem_per_conn(r, "dispatch", "rss_kib") for r in rs]),
                   med([mem_per_conn(r, "dispatch", "pss_kib") for r in rs]))
            out.append(f"| {m} | {opened(rs)} | {rp(rm.get('Master'))} | {rp(rm.get('TlsDispatcher'))} | "
                       f"{rp(rm.get('Worker'))} | {rp(oth)} | {rp(tot)} |")
        out.append("")
        out.append("The peers, the same way (nginx: master + workers; HAProxy: the haproxy process + its backend nginx):\n")
        out.append("| metric | server | opened | per process: RSS / PSS KiB per connection | whole tree |")
        out.append("|---|---|---|---|---|")
        for m in idle_ms:
            for srv in ("nginx", "haproxy"):
                rs = by.get((m, srv), [])
                if not rs:
                    continue
                rm = role_medians(rs, srv)
                parts = "; ".join(f"{k} {fmt(v[0])} / {fmt(v[1])}" for k, v in sorted(rm.items()))
                tot = (med([mem_per_conn(r, srv, "rss_kib") for r in rs]),
                       med([mem_per_conn(r, srv, "pss_kib") for r in rs]))
                out.append(f"| {m} | {srv} | {opened(rs)} | {parts or why_missing(rs)} | {fmt(tot[0])} / {fmt(tot[1])} |")
        out.append("")
        last = [r for r in by.get(("idle-tls", "dispatch"), []) + by.get(("idle-tls13", "dispatch"), []) if "after" in r]
        for r in last[-2:]:
            out.append(f"- {r['metric']}, round {r['round']}: Dispatch tree KiB RSS {r['before']['dispatch']['rss_kib']:,} → "
                       f"{r['after']['dispatch']['rss_kib']:,} with {r['client'].get('open')} connections")
        out.append("")

    # what was negotiated
    probes = [r for r in recs if r["metric"].startswith("probe-")]
    if probes:
        out.append("## What each client pin negotiated\n")
        out.append("One `openssl s_client` handshake per server and pin, with the same `OPENSSL_CONF` as the row's "
                   "clients (wrk, Python), at the start of each round.\n")
        out.append("| pin | server | round | result |")
        out.append("|---|---|---|---|")
        for r in probes:
            c = r["client"]
            if c.get("ok"):
                res = f"{c.get('protocol')}, {c.get('cipher')}, group {c.get('group', '?')}, signature {c.get('signature', '?')}"
            else:
                res = f"handshake failed: {c.get('error')}"
            out.append(f"| {r['metric'][6:]} | {r['server']} | {r['round']} | {res} |")
        out.append("")

    # cold start
    cold = [r for r in recs if r["metric"] == "cold"]
    if cold:
        out.append("## Dispatch cold start (client-side time to the full response, ms)\n")
        out.append("| case | median | min | max | samples |")
        out.append("|---|---|---|---|---|")
        cases = {}
        for r in cold:
            for k, v in r["cases"].items():
                cases.setdefault(k, []).extend(v)
        for k, v in cases.items():
            out.append(f"| {k} | {fmt(statistics.median(v))} | {fmt(min(v))} | {fmt(max(v))} | {len(v)} |")
        out.append("")

    # sanity details
    out.append("## Client-side details per run\n")
    out.append("Machine busy = share of all cores' time not idle during the measurement (client + servers + "
               "anything else running on the machine).\n")
    out.append("| metric | server | round | client result | server CPU s (per group), or memory | wall s | machine busy |")
    out.append("|---|---|---|---|---|---|---|")
    for r in recs:
        if r["metric"] == "cold" or r["metric"].startswith("probe-"):
            continue
        if r.get("failed"):
            out.append(f"| {r['metric']} | {r['server']} | {r['round']} | not measured: {r['failed']} | | | |")
            continue
        c = r["client"]
        keep = {k: c[k] for k in ("count", "open", "asked", "rate", "mib_s", "bytes", "errors", "reused", "cipher",
                                  "version", "statuses", "socket_errors", "wrk_errors", "non2xx", "first_error")
                if c.get(k) not in (None, 0, {}, "") or (k == "reused" and k in c)}
        for k in ("rate", "mib_s"):
            if k in keep:
                keep[k] = round(keep[k], 1)
        cpu = ", ".join(f"{g} {v['cpu_s']:.2f}" for g, v in r.get("cpu", {}).items())
        if "after" in r:
            cpu = "RSS KiB " + ", ".join(f"{g} {r['before'][g]['rss_kib']:,} → {v['rss_kib']:,}"
                                         for g, v in r["after"].items())
        busy = f"{100 * r['machine_busy']:.0f}%" if "machine_busy" in r else ""
        out.append(f"| {r['metric']} | {r['server']} | {r['round']} | `{json.dumps(keep)}` | {cpu} | {r.get('wall_s', 0):.1f} | {busy} |")
    out.append("")

    out.append("## Machine and software\n")
    for k, v in meta["machine"].items():
        out.append(f"- {k}: {v}")
    out.append("")
    out.append("## Setup\n")
    for line in meta["setup"]:
        out.append(f"- {line}")
    out.append("")
    out.append("## Exact commands\n")
    out.append("```")
    seen = set()
    for r in recs:
        if r["metric"] == "cold" or not r.get("cmd"):
            continue
        key = (r["metric"], r["server"])
        if key in seen:
            continue
        seen.add(key)
        out.append(f"[{r['metric']} / {r['server']}] {r['cmd']}")
    out.append("```")
    out.append("")
    if meta.get("servers"):
        out.append("Servers (started fresh for every round):\n")
        out.append("```")
        out.extend(meta["servers"])
        out.append("```")
        out.append("")
    if meta.get("caveats"):
        out.append("## Caveats\n")
        for c in meta["caveats"]:
            out.append(f"- {c}")
        out.append("")
    for name, text in meta.get("configs", {}).items():
        out.append(f"<details><summary>{name}</summary>\n")
        out.append("```")
        out.append(text.rstrip())
        out.append("```")
        out.append("</details>\n")
    print("\n".join(out))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd_name", required=True)

    s = sub.add_parser("ports")
    s.add_argument("k", type=int)
    s.set_defaults(f=cmd_ports)

    def tls_args(s):
        s.add_argument("--addr", default="127.0.0.1")
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--cipher", default="ECDHE-ECDSA-AES128-GCM-SHA256", help="TLS 1.2 only")
        s.add_argument("--tls-version", choices=("1.2", "1.3"), default="1.2")

    s = sub.add_parser("handshakes")
    tls_args(s)
    s.add_argument("--sni", default="a.localhost")
    s.add_argument("--n", type=int, default=3000)
    s.add_argument("--conc", type=int, default=4)
    s.add_argument("--request", default=None, help="send GET PATH (Connection: close) after the handshake")
    s.set_defaults(f=cmd_handshakes)

    s = sub.add_parser("idle")
    tls_args(s)
    s.add_argument("--sni", default="a.localhost")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--conc", type=int, default=50)
    s.add_argument("--request", default="/")
    s.add_argument("--ready-file", required=True)
    s.add_argument("--go-file", required=True)
    s.add_argument("--hold", type=float, default=300)
    s.set_defaults(f=cmd_idle)

    s = sub.add_parser("fetch")
    tls_args(s)
    s.add_argument("--host", default="a.localhost")
    s.add_argument("--path", default="/")
    s.add_argument("--tls", action="store_true")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(f=cmd_fetch)

    s = sub.add_parser("wait-ready")
    tls_args(s)
    s.add_argument("--host", default="a.localhost")
    s.add_argument("--path", default="/")
    s.add_argument("--tls", action="store_true")
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--handshake-only", action="store_true", help="ready once a TLS handshake completes")
    s.add_argument("--any-status", action="store_true", help="ready once any HTTP response arrives")
    s.set_defaults(f=cmd_wait)

    s = sub.add_parser("measure")
    s.add_argument("--group", action="append", required=True)
    s.add_argument("--metric", required=True)
    s.add_argument("--server", required=True)
    s.add_argument("--round", type=int, default=1)
    s.add_argument("--out", required=True)
    s.add_argument("--keep-output", action="store_true")
    s.add_argument("--settle", type=float, default=0.5)
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s.set_defaults(f=cmd_measure)

    s = sub.add_parser("idle-measure")
    tls_args(s)
    s.add_argument("--group", action="append", required=True)
    s.add_argument("--sni", default="a.localhost")
    s.add_argument("--n", type=int, default=5000)
    s.add_argument("--conc", type=int, default=50, help="handshakes (then GETs) in flight at once")
    s.add_argument("--metric-stem", default="idle-tls", help="records STEM (handshake only) and STEM-req")
    s.add_argument("--request", default="/")
    s.add_argument("--settle", type=float, default=2.0)
    s.add_argument("--timeout", type=float, default=600, help="for each phase of the client")
    s.add_argument("--server", required=True)
    s.add_argument("--round", type=int, default=1)
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_idle_measure)

    s = sub.add_parser("probe")
    s.add_argument("--addr", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--sni", default="a.localhost")
    s.add_argument("--cnf", required=True, help="OpenSSL config pinning the client (OPENSSL_CONF)")
    s.add_argument("--expect", default=None, help="protocol that must be negotiated, e.g. TLSv1.3")
    s.add_argument("--timeout", type=float, default=15)
    s.add_argument("--metric", default="probe")
    s.add_argument("--server", default="")
    s.add_argument("--round", type=int, default=1)
    s.add_argument("--out", default=None)
    s.set_defaults(f=cmd_probe)

    s = sub.add_parser("record-failure")
    s.add_argument("--metric", action="append", required=True)
    s.add_argument("--server", required=True)
    s.add_argument("--round", type=int, default=1)
    s.add_argument("--reason", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_record_failure)

    s = sub.add_parser("mem")
    s.add_argument("--group", action="append", required=True)
    s.set_defaults(f=cmd_mem)

    s = sub.add_parser("tree")
    s.add_argument("pid", type=int)
    s.set_defaults(f=cmd_tree)

    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("meta")
    s.set_defaults(f=cmd_report)

    a = p.parse_args()
    return a.f(a)


if __name__ == "__main__":
    sys.exit(main())
