#!/usr/bin/env bash
# Cold start: the first response from a pool with no worker (the tenant's first visitor waits for a
# worker to be spawned, jailed, proven and handed to the dispatcher), COLD times, each on a pool of its
# own; the same from pools with a spare worker (minSpare 1, started before the request); and, side by
# side, the peer with the same job: nginx in front of a php-fpm pool with `pm = ondemand` (no child
# until the first request: php-fpm forks one), COLD times, each on a pool of its own, and nginx serving
# the same static file on a fresh connection (no process started: the floor).
#
#   sudo bench/coldstart.sh                 prints a Markdown section (and the per-step profile)
#
# Environment (all optional):
#   DISPATCH_APP=DIR   an already staged Dispatch (scripts/stage.sh); default: stage Release into $base/app
#   WORKER_DIR=DIR     a published Worker (e.g. NativeAOT: dotnet publish src/Worker -p:PublishAot=true
#                      -r linux-x64 -o DIR) used instead of the staged one (copied over it into $base/app-worker)
#   COLD=20            cold starts per case (one pool each)
#   PROFILE=1          run Dispatch at log.level Debug and print where each cold start's milliseconds go
#                      (the workers' and the master's monotonic timestamps: docs/coldstart.md)
#   PEER=1             also measure nginx + php-fpm (pm = ondemand) and nginx static (0 to skip)
# Time is measured by a Python client: connect, send a GET, read the whole response (a 5-byte file).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init coldstart "workers run as tenant uids"
base=$(bench_path /var/lib/dispatch-coldstart)
COLD=${COLD:-20}
PROFILE=${PROFILE:-1}
PEER=${PEER:-1}
FPM=/usr/sbin/php-fpm8.2
bench_traps

mkdir -p "$base"
chmod 755 "$base"
stage_dispatch "$base/app"
with_worker_dir "$base"
worker_kind=$(if [ -e "$app/Worker.dll" ]; then echo "JIT (Worker.dll on the shared runtime)"; else echo "NativeAOT (no Worker.dll)"; fi)

run="$base/run"
rm -rf "$run"
mkdir -p "$run/www"
chmod 755 "$run" "$run/www"
port=$(free_ports 1)
level=$([ "$PROFILE" = 1 ] && echo Debug || echo Warning)
"$PY" - "$run" "$COLD" "$port" "$level" <<'EOF'
import json, os, sys
d, n, port, level = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pools, vhosts = {}, {}
for kind, spare in (("c", 0), ("s", 1)):
    for i in range(1, n + 1):
        uid = 21000 + (0 if kind == "c" else 500) + i
        root = f"{d}/www/{kind}{i}"
        os.makedirs(root, exist_ok=True)
        with open(f"{root}/index.html", "w") as f:
            f.write("cold\n")
        for p in (root, f"{root}/index.html"):
            os.chown(p, uid, uid)
        os.chmod(root, 0o700)
        pools[f"{kind}{i}"] = {"user": str(uid), "group": str(uid), "maxWorkers": 1, "minSpare": spare, "idleTimeout": "600m"}
        vhosts[f"{kind}{i}.localhost"] = {"pool": f"{kind}{i}", "root": root}
config = {
    "listen": [{"endpoint": f"127.0.0.1:{port}", "protocol": "http"}],
    "dispatcher": {"user": "10000", "workerWait": "60s"},
    "pools": pools, "vhosts": vhosts,
    "control": {"socket": f"{d}/control.sock"},
    "log": {"level": level},
}
with open(f"{d}/dispatch.json", "w") as f:
    json.dump(config, f)
EOF

mlog="$run/master.log"
BENCH_LOGS=$run
start_bg master "$mlog" "$app/Master" --config "$run/dispatch.json"
master=$LAST_PID
wait_dispatch_ready "$mlog" "$master" 120
# The spares: every s-pool's worker ready (they start with the dispatcher).
for _ in $(seq 1 1200); do
  [ "$(grep -cE "Worker [0-9]+ for pool s[0-9]+ ready" "$mlog")" -ge "$COLD" ] && break
  sleep 0.25
done
# The dispatcher warm (a few requests it answers itself: 404 for an unknown host), then quiet.
"$PY" "$TOOL" fetch --port "$port" --host unknown.invalid --count 20 >/dev/null || true
sleep 2

# One request per pool, one after the other: one JSON line each in $run/NAME.jsonl (pool, the client's
# CLOCK_MONOTONIC ms at connect, first byte and whole response after connect, status).
cat >"$run/client.py" <<'PYCLIENT'
import json, socket, sys, time
port, host, pool = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0 = time.monotonic_ns()
s = socket.create_connection(("127.0.0.1", port), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
first, data = None, b""
while True:
    b = s.recv(65536)
    if first is None:
        first = time.monotonic_ns()
    if not b:
        break
    data += b
end = time.monotonic_ns()
status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
print(json.dumps({"pool": pool, "t0": t0 / 1e6, "ttfb": (first - t0) / 1e6, "ms": (end - t0) / 1e6, "status": status}))
PYCLIENT
fetch_pools() { # PREFIX COUNT NAME
  local out i
  : >"$run/$3.jsonl"
  for i in $(seq 1 "$2"); do
    if out=$("$PY" "$run/client.py" "$port" "$1$i.localhost" "$1$i") && echo "$out" | grep -q '"status": 200'; then
      echo "$out" >>"$run/$3.jsonl"
    else
      log "request to $1$i failed: $out"
    fi
    sleep 0.3
  done
}
log "cold: $COLD pools without a worker ($worker_kind)"
fetch_pools c "$COLD" cold
log "spare: $COLD pools with a spare worker"
fetch_pools s "$COLD" spare
# The second request to the cold pools: their worker is now warm (the steady state, for reference).
fetch_pools c "$(( COLD < 5 ? COLD : 5 ))" warm
sleep 1
stop_pid "$master"

: >"$run/peer.jsonl"
: >"$run/static.jsonl"
if [ "$PEER" = 1 ] && command -v nginx >/dev/null && [ -x "$FPM" ]; then
  # nginx + php-fpm, pm = ondemand: COLD pools (one socket each, as the tenant uid), one request each.
  prun="$run/peer"
  mkdir -p "$prun/fpm" "$prun/tmp"
  chmod 755 "$prun" "$prun/fpm"
  printf '<?php echo "cold\\n";\n' >"$run/www/index.php"
  chmod 644 "$run/www/index.php"
  {
    echo "[global]"; echo "daemonize = no"; echo "error_log = $prun/fpm.log"
    for i in $(seq 1 "$COLD"); do
      cat <<CONF
[p$i]
user = $((22000 + i))
group = $((22000 + i))
listen = $prun/fpm/p$i.sock
listen.mode = 0666
pm = ondemand
pm.max_children = 1
pm.process_idle_timeout = 600s
CONF
    done
  } >"$prun/fpm.conf"
  pport=$(free_ports 1)
  {
    echo "worker_processes 1; daemon off; pid $prun/nginx.pid; error_log $prun/nginx.err;"
    echo "events { worker_connections 1024; }"
    echo "http { access_log off; client_body_temp_path $prun/tmp; fastcgi_temp_path $prun/tmp; proxy_temp_path $prun/tmp; uwsgi_temp_path $prun/tmp; scgi_temp_path $prun/tmp;"
    echo "  server { listen 127.0.0.1:$pport; server_name static.localhost; root $run/www/c1; }"
    for i in $(seq 1 "$COLD"); do
      echo "  server { listen 127.0.0.1:$pport; server_name p$i.localhost; root $run/www;"
      echo "    location / { include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $run/www/index.php; fastcgi_pass unix:$prun/fpm/p$i.sock; } }"
    done
    echo "}"
  } >"$prun/nginx.conf"
  start_bg php-fpm "$prun/fpm.out" "$FPM" -F -y "$prun/fpm.conf"
  start_bg nginx "$prun/nginx.out" nginx -c "$prun/nginx.conf" -p "$prun"
  chmod 755 "$run/www/c1"   # nginx's static row serves c1's file
  "$PY" "$TOOL" wait-ready --port "$pport" --host static.localhost --path /index.html --timeout 30 >/dev/null \
    && for _ in $(seq 1 50); do [ -S "$prun/fpm/p$COLD.sock" ] && break; sleep 0.1; done \
    && {
      port_saved=$port
      port=$pport
      for _ in $(seq 1 "$COLD"); do "$PY" "$run/client.py" "$port" static.localhost static >>"$run/static.jsonl"; done
      sleep 1
      fetch_pools p "$COLD" peer
      port=$port_saved
    } || log "WARNING: nginx/php-fpm did not come up; see $prun"
fi

"$PY" - "$run" "$COLD" "$worker_kind" "$mlog" "$PROFILE" <<'PYREPORT'
import json, re, statistics, sys
run, n, kind, mlog, profile = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
def load(name):
    try:
        return [json.loads(l) for l in open(f"{run}/{name}.jsonl") if l.strip()]
    except FileNotFoundError:
        return []
cold, spare, warm, peer, static = (load(x) for x in ("cold", "spare", "warm", "peer", "static"))
ref = statistics.median([r["ms"] for r in peer]) if peer else None
def row(name, rs):
    if not rs:
        return f"| {name} | not measured | | | | |"
    xs = [r["ms"] for r in rs]
    med = statistics.median(xs)
    ratio = f"{med / ref:.2f}×" if ref else "n/a"
    return f"| {name} | {len(xs)} | {med:.1f} | {max(xs):.1f} | {min(xs):.1f} | {ratio} |"
print()
print(f"## Cold start (bench/coldstart.sh, {n} pools per case, worker: {kind})")
print()
print("| first response (fresh connection, plain HTTP, 5-byte file; connect to last byte) | n | median ms | max ms | min ms | ÷ nginx + php-fpm ondemand |")
print("|---|---|---|---|---|---|")
print(row("Dispatch: pool with no worker (spawn, stage 1, jail, proof, Ready, hand-off)", cold))
print(row("Dispatch: pool with a spare worker (minSpare 1)", spare))
print(row("Dispatch: the same pools' second request (worker warm)", warm))
print(row("nginx + php-fpm pm=ondemand: pool with no child (php-fpm forks one)", peer))
print(row("nginx: static file (no process started)", static))
print()
if not profile:
    sys.exit(0)
# The profile: every "Start-up STEP at MS ms" line of the master's log (Debug), by pool, against the
# client's connect time. A step's time is from the previous step, in the order of the table.
steps = {}
line_re = re.compile(r"Start-up (\S+) at ([\d.]+) ms")
pool_re = re.compile(r"\((c\d+)\)|pool (c\d+)")
for line in open(mlog, errors="replace"):
    m = line_re.search(line)
    p = pool_re.search(line) if m else None
    if p:
        steps.setdefault(p.group(1) or p.group(2), {}).setdefault(m.group(1), float(m.group(2)))
order = [
    ("need-worker", "dispatcher: connection accepted, read, routed; NeedWorker sent"),
    ("spawn", "master: NeedWorker read, jail spec built; posix_spawn called"),
    ("stage1-main", "stage 1: fork/exec of the image, runtime start, Main"),
    ("stage1-spec", "stage 1: JailSpec received"),
    ("stage1-exec", "stage 1: jail applied (cgroup, rlimits, caps, ids, Landlock); execve called"),
    ("main", "jailed image: exec, runtime start, Main"),
    ("hello", "master: Hello read"),
    ("setup", "jailed image: WorkerSetup and log files received"),
    ("proof", "jailed image: jail proof run (threads, child probe), sent"),
    ("proof-checked", "master: proof read and checked"),
    ("server", "jailed image: Kestrel started"),
    ("ready", "jailed image: warm-up self-request (if any) done; Ready sent"),
    ("given-to-dispatcher", "master: Ready read; WorkerReady sent to the dispatcher"),
    ("handed", "dispatcher: WorkerReady read; connection handed to the worker"),
    ("first-byte", "worker: request read and served; first byte at the client"),
]
clients = {r["pool"]: r for r in cold}
rows = {k: [] for k, _ in order}
totals = []
for pool, st in steps.items():
    c = clients.get(pool)
    if c is None:
        continue
    st = dict(st, **{"first-byte": c["t0"] + c["ttfb"]})
    if any(k not in st for k, _ in order):
        continue
    prev = c["t0"]
    for k, _ in order:
        rows[k].append(st[k] - prev)
        prev = st[k]
    totals.append(c["ttfb"])
if not totals:
    print("(profile: no complete start-up trace in the master's log)")
    sys.exit(0)
print(f"### Where a cold start's milliseconds go ({len(totals)} cold starts at log.level Debug; CLOCK_MONOTONIC in every process)")
print()
print("| step (time since the previous step; the client connected at 0) | median ms | max ms |")
print("|---|---|---|")
for k, label in order:
    xs = rows[k]
    print(f"| {label} (`{k}`) | {statistics.median(xs):.1f} | {max(xs):.1f} |")
print(f"| **first byte after connect** | **{statistics.median(totals):.1f}** | {max(totals):.1f} |")
print()
PYREPORT
