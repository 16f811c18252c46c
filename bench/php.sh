#!/usr/bin/env bash
# PHP "hello" through FastCGI: Dispatch vs nginx, the same php-fpm behind both, in one run. CPU per request of the
# front end (Dispatch: master + dispatcher + workers; nginx: master + workers) and of its php-fpm (one each, same
# settings), as ratios Dispatch ÷ nginx.
#
#   sudo bench/php.sh
#
# Environment (all optional): DURATION=10s WRK_THREADS=2 WRK_CONNS=10 FPM_CHILDREN=4 NGINX_WORKERS=auto
#   DISPATCH_APP=DIR (an already staged Dispatch; otherwise scripts/stage.sh builds one) SKIP_INSTALL=1
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "bench/php.sh must run as root" >&2; exit 77; }

repo=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-10}
FPM_CHILDREN=${FPM_CHILDREN:-4}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
FPM=/usr/sbin/php-fpm8.2
TENANT_UID=10001
DISPATCHER_UID=10000
base=/var/lib/dispatch-bench-php
log() { printf '[php.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

if [ -z "${SKIP_INSTALL:-}" ]; then
  need=()
  for t in nginx:nginx-light wrk:wrk; do command -v "${t%%:*}" >/dev/null || need+=("${t##*:}"); done
  [ -x "$FPM" ] || need+=(php8.2-fpm php8.2-cli)
  [ ${#need[@]} -eq 0 ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

if [ -n "${DISPATCH_APP:-}" ]; then
  app=$DISPATCH_APP
else
  app=/usr/local/lib/dispatch-bench-php
  log "staging Dispatch (Release) into $app"
  "$repo/scripts/stage.sh" "$app" Release >/tmp/dispatch-bench-php.stage.log 2>&1 || { tail -20 /tmp/dispatch-bench-php.stage.log >&2; exit 1; }
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
rm -rf "$base"; mkdir -p "$base/www" "$base/run" "$base/fpm"; chmod 755 "$base" "$base/run" "$base/fpm"
chown "$TENANT_UID:$TENANT_UID" "$base/fpm"
printf '<?php\necho "hello from php\\n";\n' >"$base/www/index.php"
chown -R "$TENANT_UID:$TENANT_UID" "$base/www"; chmod 755 "$base/www"

# One php-fpm per front end, as the tenant, same settings (static children: no spawning during the runs). Not one
# shared pool: php-fpm ties a child to each kept (FCGI_KEEP_CONN) connection until it closes, so the idle connections
# one front end keeps would hold children the other then waits for (measured: nginx fell to ~200 requests/s behind
# Dispatch's idle connections, and a Dispatch worker's warm-up request timed out and the worker restarted in a loop).
start_fpm() { # name -> pid; socket $base/fpm/$1.sock
  cat >"$base/fpm-$1.conf" <<CONF
[global]
daemonize = no
error_log = /dev/null
[$1]
listen = $base/fpm/$1.sock
listen.mode = 0666
pm = static
pm.max_children = $FPM_CHILDREN
CONF
  setpriv --reuid=$TENANT_UID --regid=$TENANT_UID --clear-groups -- "$FPM" -F -O -y "$base/fpm-$1.conf" 2>"$base/fpm-$1.log" &
  pids+=("$!"); echo "$!" >"$base/run/fpm-$1.pid"
  for _ in $(seq 100); do [ -S "$base/fpm/$1.sock" ] && break; sleep 0.1; done
}
start_fpm dispatch; dfpm_pid=$(cat "$base/run/fpm-dispatch.pid")
start_fpm nginx; nfpm_pid=$(cat "$base/run/fpm-nginx.pid")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dport=$(free_port); nport=$(free_port)

cat >"$base/dispatch.json" <<JSON
{ "listen": [ { "endpoint": "127.0.0.1:$dport", "protocol": "http" } ],
  "dispatcher": { "user": "$DISPATCHER_UID" },
  "control": { "socket": "$base/run/control.sock" },
  "pools": { "a": { "user": "$TENANT_UID", "group": "$TENANT_UID", "minSpare": 1 } },
  "vhosts": { "localhost": { "pool": "a", "root": "$base/www", "index": ["index.php"],
    "tryFiles": ["\$uri", "/index.php"], "accessLog": "$base/dispatch-access.log",
    "fastcgi": { "socket": "$base/fpm/dispatch.sock" } } } }
JSON
"$app/Master" --config "$base/dispatch.json" >"$base/dispatch.log" 2>&1 &
dispatch_pid=$!; pids+=("$dispatch_pid")

cat >"$base/nginx.conf" <<CONF
worker_processes $NGINX_WORKERS;
pid $base/run/nginx.pid;
error_log $base/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log $base/nginx-access.log;
  upstream php { server unix:$base/fpm/nginx.sock; keepalive 8; }
  server {
    listen 127.0.0.1:$nport;
    root $base/www;
    index index.php;
    location / { try_files \$uri /index.php\$is_args\$args; }
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_keep_conn on;
      fastcgi_pass php;
    }
  }
}
CONF
nginx -c "$base/nginx.conf" -g 'daemon off;' &
nginx_pid=$!; pids+=("$nginx_pid")

for port in $dport $nport; do
  for _ in $(seq 300); do curl -fsS -H "Host: localhost" "http://127.0.0.1:$port/x" >/dev/null 2>&1 && break; sleep 0.1; done
  [ "$(curl -fsS -H "Host: localhost" "http://127.0.0.1:$port/some/route")" = "hello from php" ] || { log "port $port does not answer; logs in $base"; exit 1; }
done

# CPU ticks (utime + stime) of a process and all its descendants.
tree_ticks() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1]); kids = {}; ticks = {}
for p in os.listdir('/proc'):
    if not p.isdigit(): continue
    try: s = open(f'/proc/{p}/stat').read()
    except OSError: continue
    f = s[s.rindex(')') + 2:].split()
    kids.setdefault(int(f[1]), []).append(int(p)); ticks[int(p)] = int(f[11]) + int(f[12])
todo, total = [root], 0
while todo:
    p = todo.pop(); total += ticks.get(p, 0); todo += kids.get(p, [])
print(total)
PY
}

hz=$(getconf CLK_TCK)
measure() { # name pid port fpm_pid -> "requests front_ms fpm_ms"
  wrk -H "Host: localhost" -t "$WRK_THREADS" -c "$WRK_CONNS" -d 2s "http://127.0.0.1:$3/some/route" >/dev/null
  local f0 p0 f1 p1 out n
  f0=$(tree_ticks "$2"); p0=$(tree_ticks "$4")
  out=$(wrk -H "Host: localhost" -t "$WRK_THREADS" -c "$WRK_CONNS" -d "$DURATION" "http://127.0.0.1:$3/some/route")
  f1=$(tree_ticks "$2"); p1=$(tree_ticks "$4")
  n=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
  printf '%s\n' "$out" | grep -q "Non-2xx" && { log "$1: non-2xx answers"; printf '%s\n' "$out" >&2; exit 1; }
  python3 -c "import sys; n,f,p,hz=map(float,sys.argv[1:]); print(int(n), f*1000/hz/n, p*1000/hz/n)" "$n" "$((f1 - f0))" "$((p1 - p0))" "$hz"
}
read -r dn dfront dfpm < <(measure dispatch "$dispatch_pid" "$dport" "$dfpm_pid")
ps -o pid,ppid,time,rss,comm --ppid "$dispatch_pid" --pid "$dispatch_pid" >&2
read -r nn nfront nfpm < <(measure nginx "$nginx_pid" "$nport" "$nfpm_pid")
python3 - "$dn" "$dfront" "$dfpm" "$nn" "$nfront" "$nfpm" "$DURATION" <<'PY'
import sys
dn, df, dp, nn, nf, np_, dur = sys.argv[1:]
dn, df, dp, nn, nf, np_ = int(dn), float(df), float(dp), int(nn), float(nf), float(np_)
print(f"PHP hello through php-fpm (one identical pool per front end), wrk {dur}:")
print(f"| | requests | front end CPU/req | php-fpm CPU/req |")
print(f"|---|---|---|---|")
print(f"| Dispatch | {dn} | {df*1000:.0f} µs | {dp*1000:.0f} µs |")
print(f"| nginx | {nn} | {nf*1000:.0f} µs | {np_*1000:.0f} µs |")
print(f"| Dispatch ÷ nginx | {dn/nn:.2f}x | {df/nf:.2f}x | {dp/np_:.2f}x |")
PY
