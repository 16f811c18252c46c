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
. "$(dirname "$0")/lib.sh"
bench_init php "Dispatch's master starts workers as tenant uids"
DURATION=${DURATION:-10s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-10}
FPM_CHILDREN=${FPM_CHILDREN:-4}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
FPM=/usr/sbin/php-fpm8.2
TENANT_UID=10001
DISPATCHER_UID=10000
base=$(bench_path /var/lib/dispatch-bench-php)

bench_need nginx:nginx-light wrk:wrk
[ -x "$FPM" ] || bench_need php-fpm8.2:php8.2-fpm php:php8.2-cli
[ -x "$FPM" ] || die "$FPM not found"
bench_traps
BENCH_LOGS=$base
stage_dispatch "$(bench_path /usr/local/lib/dispatch-bench-php)"

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
  start_bg "php-fpm $1" "$base/fpm-$1.log" setpriv --reuid=$TENANT_UID --regid=$TENANT_UID --clear-groups -- "$FPM" -F -O -y "$base/fpm-$1.conf"
  echo "$LAST_PID" >"$base/run/fpm-$1.pid"
  for _ in $(seq 100); do [ -S "$base/fpm/$1.sock" ] && break; sleep 0.1; done
}
start_fpm dispatch; dfpm_pid=$(cat "$base/run/fpm-dispatch.pid")
start_fpm nginx; nfpm_pid=$(cat "$base/run/fpm-nginx.pid")

read -r dport nport <<<"$(free_ports 2)"

cat >"$base/dispatch.json" <<JSON
{ "listen": [ { "endpoint": "127.0.0.1:$dport", "protocol": "http" } ],
  "dispatcher": { "user": "$DISPATCHER_UID" },
  "control": { "socket": "$base/run/control.sock" },
  "pools": { "a": { "user": "$TENANT_UID", "group": "$TENANT_UID", "minSpare": 1 } },
  "vhosts": { "localhost": { "pool": "a", "root": "$base/www", "index": ["index.php"],
    "tryFiles": ["\$uri", "/index.php"], "accessLog": "$base/dispatch-access.log",
    "fastcgi": { "socket": "$base/fpm/dispatch.sock" } } } }
JSON
start_bg dispatch "$base/dispatch.log" "$app/Master" --config "$base/dispatch.json"
dispatch_pid=$LAST_PID

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
start_bg nginx "$base/nginx.out" nginx -c "$base/nginx.conf" -g 'daemon off;'
nginx_pid=$LAST_PID

for port in $dport $nport; do
  for _ in $(seq 300); do curl -fsS -H "Host: localhost" "http://127.0.0.1:$port/x" >/dev/null 2>&1 && break; sleep 0.1; done
  [ "$(curl -fsS -H "Host: localhost" "http://127.0.0.1:$port/some/route")" = "hello from php" ] || { log "port $port does not answer; logs in $base"; exit 1; }
done

hz=$(getconf CLK_TCK)
measure() { # name pid port fpm_pid -> "requests front_ms fpm_ms"
  wrk -H "Host: localhost" -t "$WRK_THREADS" -c "$WRK_CONNS" -d 2s "http://127.0.0.1:$3/some/route" >/dev/null
  local f0 p0 f1 p1 out n
  f0=$(tree_ticks "$2"); p0=$(tree_ticks "$4")
  out=$(wrk -H "Host: localhost" -t "$WRK_THREADS" -c "$WRK_CONNS" -d "$DURATION" "http://127.0.0.1:$3/some/route")
  f1=$(tree_ticks "$2"); p1=$(tree_ticks "$4")
  n=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
  printf '%s\n' "$out" | grep -q "Non-2xx" && { log "$1: non-2xx answers"; printf '%s\n' "$out" >&2; exit 1; }
  "$PY" -c "import sys; n,f,p,hz=map(float,sys.argv[1:]); print(int(n), f*1000/hz/n, p*1000/hz/n)" "$n" "$((f1 - f0))" "$((p1 - p0))" "$hz"
}
read -r dn dfront dfpm < <(measure dispatch "$dispatch_pid" "$dport" "$dfpm_pid")
ps -o pid,ppid,time,rss,comm --ppid "$dispatch_pid" --pid "$dispatch_pid" >&2
read -r nn nfront nfpm < <(measure nginx "$nginx_pid" "$nport" "$nfpm_pid")
"$PY" - "$dn" "$dfront" "$dfpm" "$nn" "$nfront" "$nfpm" "$DURATION" <<'PY'
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
