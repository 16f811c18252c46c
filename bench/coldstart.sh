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
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/coldstart.sh must run as root (workers run as tenant uids)." >&2
  exit 77
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
TOOL="$repo/bench/tool.py"
base=/var/lib/dispatch-coldstart
COLD=${COLD:-20}
PROFILE=${PROFILE:-1}
PEER=${PEER:-1}
FPM=/usr/sbin/php-fpm8.2
log() { printf '[coldstart %s] %s\n' "$(date +%T)" "$*" >&2; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$base"
chmod 755 "$base"
app=${DISPATCH_APP:-}
if [ -z "$app" ]; then
  app="$base/app"
  log "staging Dispatch (Release) into $app"
  "$repo/scripts/stage.sh" "$app" Release >/dev/null
fi
if [ -n "${WORKER_DIR:-}" ]; then
  # The master starts "Worker" from its own directory: a copy of the staged app with the given worker in it.
  rm -rf "$base/app-worker"
  cp -a "$app/." "$base/app-worker/"
  rm -f "$base/app-worker/Worker" "$base/app-worker/Worker.dll"
  cp -a "$WORKER_DIR/Worker" "$base/app-worker/Worker"
  chown -R root:root "$base/app-worker"
  chmod -R go-w "$base/app-worker"
  app="$base/app-worker"
fi
worker_kind=$(if [ -e "$app/Worker.dll" ]; then echo "JIT (Worker.dll on the shared runtime)"; else echo "NativeAOT (no Worker.dll)"; fi)

run="$base/run"
rm -rf "$run"
mkdir -p "$run/www"
chmod 755 "$run" "$run/www"
port=$("$PY" "$TOOL" ports 1)
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
"$app/Master" --config "$run/dispatch.json" >"$mlog" 2>&1 &
master=$!
pids+=("$master")
for _ in $(seq 1 600); do grep -q "Dispatch ready" "$mlog" && break; sleep 0.2; done
grep -q "Dispatch ready" "$mlog" || { echo "master did not start; see $mlog" >&2; exit 1; }
# The spares: every s-pool's worker ready (they start with the dispatcher).
for _ in $(seq 1 1200); do
  [ "$(grep -cE "Worker [0-9]+ for pool s[0-9]+ ready" "$mlog")" -ge "$COLD" ] && break
  sleep 0.25
done
# The dispatcher warm (a few requests it answers itself: 404 for an unknown host), then quiet.
"$PY" "$TOOL" fetch --port "$port" --host unknown.invalid --count 20 >/dev/null || true
sleep 2

# One request per pool, one after the other; JSON list of ms.
fetch_pools() { # prefix count
  local out ms=()
  for i in $(seq 1 "$2"); do
    out=$("$PY" "$TOOL" fetch --port "$port" --host "$1$i.localhost" --count 1) || { log "request to $1$i failed: $out"; continue; }
    ms+=("$(echo "$out" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ms"][0])')")
    sleep 0.3
  done
  (IFS=,; echo "[${ms[*]}]")
}
log "cold: $COLD pools without a worker ($worker_kind)"
cold=$(fetch_pools c "$COLD")
log "spare: $COLD pools with a spare worker"
spare=$(fetch_pools s "$COLD")
# The second request to the cold pools: their worker is now warm (the steady state, for reference).
warm=$(fetch_pools c 5)
sleep 1
kill -TERM "$master"
wait "$master" 2>/dev/null || true

peer_cold='[]'
peer_static='[]'
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
  pport=$("$PY" "$TOOL" ports 1)
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
  "$FPM" -F -y "$prun/fpm.conf" >"$prun/fpm.out" 2>&1 &
  pids+=("$!")
  nginx -c "$prun/nginx.conf" -p "$prun" >"$prun/nginx.out" 2>&1 &
  pids+=("$!")
  "$PY" "$TOOL" wait-ready --port "$pport" --host static.localhost --path /index.html --timeout 30 >/dev/null \
    && for _ in $(seq 1 50); do [ -S "$prun/fpm/p$COLD.sock" ] && break; sleep 0.1; done \
    && {
      # nginx's static row: c1's file (readable by nginx: root), a fresh connection each.
      chmod 755 "$run/www/c1"
      peer_static=$("$PY" "$TOOL" fetch --port "$pport" --host static.localhost --path /index.html --count "$COLD" | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["ms"]))')
      sleep 1
      port_saved=$port; port=$pport
      peer_cold=$(fetch_pools p "$COLD")
      port=$port_saved
    } || log "WARNING: nginx/php-fpm did not come up; see $prun"
fi

"$PY" - "$cold" "$spare" "$warm" "$peer_cold" "$peer_static" "$COLD" "$worker_kind" <<'EOF'
import json, statistics, sys
cold, spare, warm, pcold, pstatic = (json.loads(x) for x in sys.argv[1:6])
n, kind = sys.argv[6], sys.argv[7]
def row(name, xs, ref=None):
    if not xs:
        return f"| {name} | not measured | | | |"
    med = statistics.median(xs)
    ratio = f"{med / statistics.median(ref):.1f}×" if ref else ""
    return f"| {name} | {len(xs)} | {med:.1f} | {max(xs):.1f} | {min(xs):.1f} | {ratio} |"
print()
print(f"## Cold start (bench/coldstart.sh, {n} pools per case, worker: {kind})")
print()
print("| first response (fresh connection, plain HTTP, 5-byte file) | n | median ms | max ms | min ms | ÷ nginx + php-fpm ondemand |")
print("|---|---|---|---|---|---|")
print(row("Dispatch: pool with no worker (spawn, stage 1, jail, proof, Ready, hand-off)", cold, pcold))
print(row("Dispatch: pool with a spare worker (minSpare 1)", spare, pcold))
print(row("Dispatch: the same pools' second request (worker warm)", warm, pcold))
print(row("nginx + php-fpm pm=ondemand: pool with no child (fork)", pcold, pcold))
print(row("nginx static file (no process started)", pstatic, pcold))
print()
EOF

if [ "$PROFILE" = 1 ]; then
  "$PY" "$repo/bench/coldprofile.py" "$mlog" || log "profile: could not parse $mlog"
fi
