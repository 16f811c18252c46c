#!/usr/bin/env bash
# Dispatch vs nginx vs HAProxy, side by side, in one run on this machine. See bench/README.md.
#
#   sudo bench/run.sh                      # everything, report in bench/results/<date>-<hash>.md
#
# Environment (all optional):
#   ROUNDS=3            rounds; servers are restarted fresh for each round, medians are reported
#   HANDSHAKES=3000     full handshakes per server per round (plus WARMUP_HANDSHAKES, not counted)
#   WARMUP_HANDSHAKES=300
#   HS_CONC=4           concurrent handshake clients (Python threads; OpenSSL releases the GIL)
#   DURATION=10s        wrk duration per keep-alive test (after a 2 s warm-up that is not counted)
#   WRK_THREADS=2 WRK_CONNS=10
#   IDLE_CONNS=5000     idle TLS connections for the memory test (per TLS version and server)
#   IDLE_CONC=50        handshakes in flight while the idle client opens them
#   TLS13=1             also measure TLS 1.3 (X25519) rows (0 to skip)
#   DL_THREADS=1 DL_CONNS=2   wrk for the 10 MiB download rows
#   DISPATCH_ENGINE=    Dispatch's dispatcher.engine (empty: its default engine, as a user gets it)
#   NGINX_WORKERS=auto  nginx worker_processes (auto = nproc here)
#   HAPROXY_THREADS=2   HAProxy nbthread
#   RSA=1               also measure RSA-2048 handshakes (0 to skip)
#   DISPATCH_APP=DIR    use an already staged Dispatch instead of staging a fresh build
#   SKIP_INSTALL=1      do not apt-get install
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init run "Dispatch's master starts workers as tenant uids; nginx/HAProxy bind as root"

ROUNDS=${ROUNDS:-3}
HANDSHAKES=${HANDSHAKES:-3000}
WARMUP_HANDSHAKES=${WARMUP_HANDSHAKES:-300}
HS_CONC=${HS_CONC:-4}
DURATION=${DURATION:-10s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-10}
IDLE_CONNS=${IDLE_CONNS:-5000}
IDLE_CONC=${IDLE_CONC:-50}
TLS13=${TLS13:-1}
DL_THREADS=${DL_THREADS:-1}
DL_CONNS=${DL_CONNS:-2}
DISPATCH_ENGINE=${DISPATCH_ENGINE:-}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
HAPROXY_THREADS=${HAPROXY_THREADS:-2}
RSA=${RSA:-1}
ECDSA_CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256
RSA_CIPHER=ECDHE-RSA-AES128-GCM-SHA256

TENANT_UID=10001      # pool a: owns the document root
DISPATCHER_UID=10000
base=$(bench_path /var/lib/dispatch-bench)          # docroots + per-run state (world-traversable)
certs=$(bench_path /etc/dispatch-bench/certs)       # certificates, root-owned as certbot leaves them
run="$base/run"
results_dir=${RESULTS_DIR:-$bench/results}

# Every process this script starts is recorded (start_bg, lib.sh) and ended by pid on exit.
HOSTS_FALLBACK=0
undo_hosts() {
  if [ "$HOSTS_FALLBACK" = 1 ]; then
    sed -i '/# dispatch-bench$/d' /etc/hosts || true
  fi
}
bench_traps undo_hosts
BENCH_LOGS=$run

# ------------------------------------------------------------------------------------------------
# 0. Tools
NOFILE=$(ulimit -Hn)
ulimit -n "$NOFILE"   # raising the hard limit needs CAP_SYS_RESOURCE, which this VM may withhold
bench_need nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl unshare:util-linux
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  # Debian starts the services on install unless policy-rc.d forbids it: stop them (ports 80/443).
  for svc in nginx haproxy; do
    if [ -e "/run/$svc.pid" ] && kill -0 "$(cat "/run/$svc.pid" 2>/dev/null)" 2>/dev/null; then
      log "stopping the $svc service apt started"
      service "$svc" stop >&2 || systemctl stop "$svc" >&2 || true
    fi
  done
fi

# ------------------------------------------------------------------------------------------------
# 1. Dispatch binaries
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain -- src 2>/dev/null | wc -l)
if [ -n "${DISPATCH_APP:-}" ]; then
  app=$DISPATCH_APP
  app_note="pre-staged copy $app (DISPATCH_APP), not rebuilt"
else
  app=$(bench_path /usr/local/lib/dispatch-bench)
  staged=0
  for attempt in 1 2 3; do
    log "staging Dispatch (Release) into $app, attempt $attempt"
    if "$repo/scripts/stage.sh" "$app" Release >"$base.stage.log" 2>&1; then staged=1; break; fi
    tail -5 "$base.stage.log" >&2
    [ "$attempt" -lt 3 ] && { log "build failed (someone mid-edit?); retrying in 60 s"; sleep 60; }
  done
  if [ "$staged" = 1 ]; then
    app_note="staged from the working tree at $commit ($dirty modified/untracked files under src/) into $app"
  elif [ -x "$app/Master" ]; then
    app_note="BUILD FAILED 3 times; using the copy already staged in $app ($(stat -c %y "$app/Master" | cut -d. -f1))"
    log "$app_note"
  elif [ -x /usr/local/lib/dispatch-sample/Master ]; then
    app=/usr/local/lib/dispatch-sample
    app_note="BUILD FAILED 3 times; using the sample's staged copy $app ($(stat -c %y "$app/Master" | cut -d. -f1))"
    log "$app_note"
  else
    die "could not build Dispatch and no staged copy exists"
  fi
fi
[ -x "$app/Master" ] || die "$app/Master missing"
rm -f "$base.stage.log"

# ------------------------------------------------------------------------------------------------
# 2. Content and certificates, the same for all three
log "preparing document roots and certificates"
mkdir -p "$base"
chmod 755 "$base"
rm -rf "$base/www" "$run"
mkdir -p "$base/www" "$run"
chmod 755 "$base/www" "$run"
for site in a b c; do
  d="$base/www/$site.localhost"
  mkdir -p "$d"
  # index.html: exactly 1024 bytes
  write_index "$d/index.html" "$site.localhost"
  # 100 KiB of text (a known content type everywhere)
  "$PY" -c 'import base64, os, sys
data = base64.encodebytes(os.urandom(76800))[:102400]
open(sys.argv[1], "wb").write(data)' "$d/100k.txt"
done
# the download rows: 10 MiB of random bytes (served as application/octet-stream everywhere)
head -c $((10 * 1048576)) /dev/urandom >"$base/www/a.localhost/10m.bin"
chown -R "$TENANT_UID:$TENANT_UID" "$base/www/a.localhost"
chown -R 10002:10002 "$base/www/b.localhost"
chown -R 10003:10003 "$base/www/c.localhost"
# world-readable so nginx's and HAProxy's backend workers (www-data) read the very same files
chmod -R u=rwX,go=rX "$base/www"

copy_certs "$certs"
# HAProxy wants certificate chain + key in one file
for lin in a.localhost a.localhost-rsa; do
  cat "$certs/live/$lin/fullchain.pem" "$certs/live/$lin/privkey.pem" >"$certs/haproxy-$lin.pem"
  chmod 600 "$certs/haproxy-$lin.pem"
done

# Host names for wrk (it takes SNI from the URL): a private mount namespace with its own /etc/hosts.
if [ "$(client_wrapper "$run" "a.localhost b.localhost c.localhost")" != 0 ]; then
  log "unshare -m not usable: adding a.localhost to /etc/hosts for the run (removed on exit)"
  getent hosts a.localhost >/dev/null || echo '127.0.0.1 a.localhost b.localhost c.localhost # dispatch-bench' >>/etc/hosts
  HOSTS_FALLBACK=1
fi
# client CMD...: run a client that resolves *.localhost to 127.0.0.1
client() { "$run/client.sh" "$@"; }

# Client-side TLS pins, one OpenSSL config per TLS version, given to every client of a row through
# OPENSSL_CONF (wrk has no TLS options; Python and openssl s_client read it too). The servers accept
# TLS 1.2 and 1.3 on one port, as deployed; the client decides which one a row measures, so a server
# without TLS 1.3 fails the TLS 1.3 rows instead of being measured on TLS 1.2.
#   TLS 1.2: one suite, ECDHE-ECDSA-AES128-GCM-SHA256, group P-256 (what Dispatch's TLS 1.2 engine does)
#   TLS 1.3: OpenSSL's default suites (server picks), group X25519: what clients offer by default;
#            ECDSA signatures only (so that every server presents its ECDSA certificate)
CNF12="$run/openssl-tls12.cnf"
CNF13="$run/openssl-tls13.cnf"
tls_cnf_write "$CNF12" "MinProtocol = TLSv1.2" "MaxProtocol = TLSv1.2" "Groups = P-256" "CipherString = $ECDSA_CIPHER"
# The TLS 1.3 pin also limits the signature algorithms to ECDSA: with TLS 1.3 nothing in the cipher
# suite says which certificate to use, and HAProxy 2.6 (ECDSA and RSA crt for the same name) picks the
# RSA one for a default client; the rows measure an ECDSA certificate everywhere.
tls_cnf_write "$CNF13" "MinProtocol = TLSv1.3" "MaxProtocol = TLSv1.3" "Groups = X25519" \
  "SignatureAlgorithms = ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512"
chmod 644 "$CNF12" "$CNF13"
cnf_for() { case $1 in 1.2) echo "$CNF12" ;; 1.3) echo "$CNF13" ;; esac; }
# wrk's done() hook prints exact counters (requests, bytes, duration) instead of rounded units
wrk_summary_lua "$run/wrk-summary.lua"
# wrk_cmd VERSION THREADS CONNS DURATION URL: the command line of a pinned wrk run (an array in WRK)
wrk_cmd() {
  WRK=(env "OPENSSL_CONF=$(cnf_for "$1")" "$run/client.sh" wrk -t "$2" -c "$3" -d "$4" -s "$run/wrk-summary.lua" "$5")
}

# File descriptors for IDLE_CONNS connections: the client holds one per connection; nginx's workers
# (worker_connections, worker_rlimit_nofile), HAProxy (maxconn; it sizes its own ulimit-n to about
# twice that) and Dispatch's dispatcher and pool (config "nofile") get limits above it.
CONN_LIMIT=$((IDLE_CONNS + 3000))
[ "$CONN_LIMIT" -lt 8192 ] && CONN_LIMIT=8192
HAPROXY_MAXCONN=$CONN_LIMIT
if [ $((2 * HAPROXY_MAXCONN + 200)) -gt "$NOFILE" ]; then HAPROXY_MAXCONN=$(((NOFILE - 200) / 2)); fi
if [ "$NOFILE" -lt $((2 * IDLE_CONNS + 500)) ] || [ "$HAPROXY_MAXCONN" -lt $((IDLE_CONNS + 100)) ]; then
  log "WARNING: file descriptor hard limit $NOFILE is low for IDLE_CONNS=$IDLE_CONNS (the report says how many opened)"
fi
log "fd limits: ulimit -n $NOFILE (hard $(ulimit -Hn)); nginx worker_connections $CONN_LIMIT; haproxy maxconn $HAPROXY_MAXCONN; Dispatch nofile $NOFILE"

# ------------------------------------------------------------------------------------------------
# 3. Ports and configs
read -r P_D_TLS P_D_HTTP P_N_TLS P_N_HTTP P_H_TLS P_H_HTTP P_B_HTTP <<<"$(free_ports 7)"
log "ports: dispatch tls $P_D_TLS http $P_D_HTTP; nginx tls $P_N_TLS http $P_N_HTTP; haproxy tls $P_H_TLS http $P_H_HTTP; backend $P_B_HTTP"

engine_json=''
[ -n "$DISPATCH_ENGINE" ] && engine_json=", \"engine\": \"$DISPATCH_ENGINE\""
cat >"$run/dispatch.json" <<JSON
{
  "listen": [
    { "endpoint": "127.0.0.1:$P_D_TLS", "protocol": "tls" },
    { "endpoint": "127.0.0.1:$P_D_HTTP", "protocol": "http" }
  ],
  "dispatcher": { "user": "$DISPATCHER_UID", "headerTimeout": "300s", "handshakeTimeout": "30s", "nofile": $NOFILE$engine_json },
  "security": { "minUid": 1000 },
  "pools": {
    "a": { "user": "$TENANT_UID", "group": "$TENANT_UID", "maxWorkers": 1, "nofile": $NOFILE },
    "b": { "user": "10002", "group": "10002", "maxWorkers": 1 },
    "c": { "user": "10003", "group": "10003", "maxWorkers": 1 }
  },
  "vhosts": {
    "a.localhost": { "pool": "a", "root": "$base/www/a.localhost", "tls": "terminate",
                     "certDirs": [ "$certs/live/a.localhost", "$certs/live/a.localhost-rsa" ] },
    "b.localhost": { "pool": "b", "root": "$base/www/b.localhost", "tls": "terminate",
                     "certDirs": [ "$certs/live/b.localhost" ] },
    "c.localhost": { "pool": "c", "root": "$base/www/c.localhost", "tls": "terminate",
                     "certDirs": [ "$certs/live/c.localhost" ] }
  },
  "log": { "level": "Warning" }
}
JSON
if ! "$app/Master" check --config "$run/dispatch.json" >"$run/dispatch-check.log" 2>&1; then
  cat "$run/dispatch-check.log" >&2
  if grep -q 'log:level' "$run/dispatch-check.log"; then
    log "log.level Warning refused: using the default log level"
    sed -i 's/,\s*"log": { "level": "Warning" }//; /"log": { "level": "Warning" }/d' "$run/dispatch.json"
  fi
  "$app/Master" check --config "$run/dispatch.json" >&2 || die "Dispatch refuses the generated config"
fi

mkdir -p "$run/nginx/tmp" "$run/backend/tmp"
nginx_conf() {   # nginx_conf WORKERS PREFIX SERVER-BLOCKS
  cat <<NGINX
worker_processes $1;
worker_rlimit_nofile $NOFILE;
daemon off;
master_process on;
user www-data;
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections $CONN_LIMIT; }
http {
$(nginx_http_common static "$2/tmp")
  client_header_timeout 300s;
  ssl_ciphers $ECDSA_CIPHER:$RSA_CIPHER;
  ssl_prefer_server_ciphers on;
$3
}
NGINX
}
nginx_conf "$NGINX_WORKERS" "$run/nginx" "
  server {
    listen 127.0.0.1:$P_N_TLS ssl http2;
    server_name a.localhost;
    ssl_certificate     $certs/live/a.localhost/fullchain.pem;
    ssl_certificate_key $certs/live/a.localhost/privkey.pem;
    ssl_certificate     $certs/live/a.localhost-rsa/fullchain.pem;
    ssl_certificate_key $certs/live/a.localhost-rsa/privkey.pem;
    root $base/www/a.localhost;
    index index.html;
  }
  server {
    listen 127.0.0.1:$P_N_HTTP;
    server_name a.localhost;
    root $base/www/a.localhost;
    index index.html;
  }" >"$run/nginx/nginx.conf"
# HAProxy's backend: a second, separate nginx (one worker, plain HTTP, the same files), so that
# its CPU can be reported apart from HAProxy's.
nginx_conf 1 "$run/backend" "
  server {
    listen 127.0.0.1:$P_B_HTTP;
    server_name a.localhost;
    root $base/www/a.localhost;
    index index.html;
  }" >"$run/backend/nginx.conf"
nginx -t -q -c "$run/nginx/nginx.conf" -p "$run/nginx" || die "nginx config"
nginx -t -q -c "$run/backend/nginx.conf" -p "$run/backend" || die "backend nginx config"

cat >"$run/haproxy.cfg" <<HAP
global
  nbthread $HAPROXY_THREADS
  maxconn $HAPROXY_MAXCONN
  ssl-default-bind-ciphers $ECDSA_CIPHER:$RSA_CIPHER
  ssl-default-bind-options ssl-min-ver TLSv1.2
  tune.ssl.default-dh-param 2048

defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always

frontend fe_tls
  bind 127.0.0.1:$P_H_TLS ssl crt $certs/haproxy-a.localhost.pem crt $certs/haproxy-a.localhost-rsa.pem curves X25519:P-256 alpn h2,http/1.1
  default_backend be

frontend fe_http
  bind 127.0.0.1:$P_H_HTTP
  default_backend be

backend be
  server nginx 127.0.0.1:$P_B_HTTP maxconn 1000
HAP
haproxy -c -q -f "$run/haproxy.cfg" || die "haproxy config"

# ------------------------------------------------------------------------------------------------
# 4. Machine info
dotnet_version=$(dotnet --list-runtimes 2>/dev/null | awk '/Microsoft.NETCore.App/ {v=$2} END {print v}')
date_tag=$(date -u +%Y-%m-%d)
loadavg_start=$(cat /proc/loadavg)
results="$run/results.jsonl"
: >"$results"
mkdir -p "$results_dir"
tag="$date_tag-$commit${DISPATCH_ENGINE:+-engine-$DISPATCH_ENGINE}"
report="$results_dir/$tag.md"
n=2
while [ -e "$report" ]; do report="$results_dir/$tag-$n.md"; n=$((n + 1)); done

# ------------------------------------------------------------------------------------------------
# 5. Servers
D_PID='' N_PID='' H_PID='' B_PID=''
start_servers() {
  log "starting servers"
  start_bg dispatch "$run/dispatch-r$1.log" "$app/Master" --config "$run/dispatch.json"
  D_PID=$LAST_PID
  start_bg nginx "$run/nginx/stdout-r$1.log" nginx -c "$run/nginx/nginx.conf" -p "$run/nginx"
  N_PID=$LAST_PID
  start_bg backend "$run/backend/stdout-r$1.log" nginx -c "$run/backend/nginx.conf" -p "$run/backend"
  B_PID=$LAST_PID
  start_bg haproxy "$run/haproxy-r$1.log" haproxy -db -f "$run/haproxy.cfg"
  H_PID=$LAST_PID
}
servers_ready() {
  "$PY" "$TOOL" wait-ready --port "$P_N_TLS" --tls --timeout 30 || die "nginx TLS not answering"
  "$PY" "$TOOL" wait-ready --port "$P_H_TLS" --tls --timeout 30 || die "HAProxy TLS not answering"
  "$PY" "$TOOL" wait-ready --port "$P_H_HTTP" --timeout 30 || die "HAProxy HTTP not answering"
  "$PY" "$TOOL" wait-ready --port "$P_N_HTTP" --timeout 30 || die "nginx HTTP not answering"
}
add_cold() {   # add_cold ROUND CASE JSON
  "$PY" - "$results" "$1" "$2" "$3" <<'PY'
import json, sys
out, rnd, case, data = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
with open(out, "a") as f:
    f.write(json.dumps({"metric": "cold", "server": "dispatch", "round": rnd, "cases": {case: data["ms"]}}) + "\n")
PY
}

groups_for() {
  case $1 in
    dispatch) echo "--group dispatch=$D_PID" ;;
    nginx) echo "--group nginx=$N_PID" ;;
    haproxy) echo "--group haproxy=$H_PID --group backend=$B_PID" ;;
  esac
}
tls_port() { case $1 in dispatch) echo "$P_D_TLS" ;; nginx) echo "$P_N_TLS" ;; haproxy) echo "$P_H_TLS" ;; esac; }
http_port() { case $1 in dispatch) echo "$P_D_HTTP" ;; nginx) echo "$P_N_HTTP" ;; haproxy) echo "$P_H_HTTP" ;; esac; }

SERVERS=(dispatch nginx haproxy)
declare -A TLS13_FAIL=()   # server -> why its TLS 1.3 handshake failed (empty/unset: it works)
TLS13_METRICS=(handshake13 handshake13-req https13-ka https13-ka-100k h2-ka h2-ka-100k dl-tls13 idle-tls13 idle-tls13-req)

# bring_up ROUND PHASE: start all servers, wait until they answer, probe what each negotiates under
# the two client pins, warm up. PHASE a is the round's first start (records Dispatch's cold start and
# the probes); PHASE b restarts everything for the second idle-memory test.
bring_up() {
  local round=$1 phase=$2 s out v
  start_servers "$round$phase"
  # Dispatch: the first request after start (worker cold). The master binds the ports before the
  # dispatcher is up, and a connection that makes the dispatcher ask for a worker before the master
  # has its Ready crashes the master ("expected Ready, got NeedWorker"); a TLS handshake alone does
  # (the dispatcher hands every terminated connection to a worker right after the handshake). So
  # probe with a plain request for an unknown host (answered 404 by the dispatcher itself, no
  # worker) and give the dispatcher 1 s more before the first real request.
  "$PY" "$TOOL" wait-ready --port "$P_D_HTTP" --host probe.invalid --any-status --timeout 60 \
    || die "Dispatch never answered (log: $run/dispatch-r$round$phase.log)"
  sleep 1
  first=$("$PY" "$TOOL" fetch --port "$P_D_HTTP" --host a.localhost --path / --count 1) \
    || die "Dispatch's first request failed: $first (log: $run/dispatch-r$round$phase.log)"
  [ "$phase" = a ] && add_cold "$round" "first request after start (HTTP; worker cold, dispatcher started 1 s before)" "$first"
  "$PY" "$TOOL" wait-ready --port "$P_D_TLS" --tls --timeout 30 || die "Dispatch TLS not answering"
  servers_ready
  log "process trees: dispatch $("$PY" "$TOOL" tree "$D_PID" | awk '{printf "%s ", $2}'); nginx $("$PY" "$TOOL" tree "$N_PID" | wc -l); haproxy $("$PY" "$TOOL" tree "$H_PID" | wc -l); backend $("$PY" "$TOOL" tree "$B_PID" | wc -l)"

  # What each server negotiates with each client pin (openssl s_client, the same OPENSSL_CONF as the
  # row's clients). A server whose TLS 1.3 handshake fails gets "handshake failed: ..." in every
  # TLS 1.3 row instead of a number.
  if [ "$phase" = a ]; then
    TLS13_FAIL=()
    for s in "${SERVERS[@]}"; do
      out=$("$PY" "$TOOL" probe --port "$(tls_port "$s")" --cnf "$CNF12" --expect TLSv1.2 \
        --metric probe-tls12 --server "$s" --round "$round" --out "$results") || log "WARNING: $s TLS 1.2 probe: $out"
      log "TLS 1.2 client pin against $s: $out"
      [ "$TLS13" = 1 ] || continue
      if out=$("$PY" "$TOOL" probe --port "$(tls_port "$s")" --cnf "$CNF13" --expect TLSv1.3 \
          --metric probe-tls13 --server "$s" --round "$round" --out "$results"); then
        log "TLS 1.3 client pin against $s: $out"
      else
        TLS13_FAIL[$s]=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1]).get("error") or "?")' "$out" 2>/dev/null || echo "?")
        log "TLS 1.3 client pin against $s: handshake failed: ${TLS13_FAIL[$s]} (its TLS 1.3 rows will say so)"
        "$PY" "$TOOL" record-failure $(printf -- '--metric %s ' "${TLS13_METRICS[@]}") --server "$s" --round "$round" \
          --reason "handshake failed: ${TLS13_FAIL[$s]}" --out "$results"
      fi
    done
  fi

  # warm-up: handshakes and requests, so that JIT tiers and allocator pools are in steady state
  for s in "${SERVERS[@]}"; do
    for v in 1.2 1.3; do
      [ "$v" = 1.3 ] && { [ "$TLS13" = 1 ] && [ -z "${TLS13_FAIL[$s]:-}" ] || continue; }
      OPENSSL_CONF=$(cnf_for $v) "$PY" "$TOOL" handshakes --tls-version $v --port "$(tls_port "$s")" \
        --n "$WARMUP_HANDSHAKES" --conc "$HS_CONC" --request / >/dev/null \
        || { [ "$v" = 1.3 ] && log "WARNING: warm-up TLS 1.3 handshakes against $s had errors"; } \
        || die "warm-up handshakes (TLS $v) against $s failed"
      wrk_cmd $v "$WRK_THREADS" "$WRK_CONNS" 2s "https://a.localhost:$(tls_port "$s")/"
      "${WRK[@]}" >/dev/null
    done
    client wrk -t "$WRK_THREADS" -c "$WRK_CONNS" -d 2s "http://a.localhost:$(http_port "$s")/" >/dev/null
  done
  sleep 2
}

# idle_test VERSION METRIC-STEM: memory per idle TLS connection, IDLE_CONNS per server; the same
# connections are measured twice, after the handshake (STEM) and after one keep-alive GET each
# (STEM-req)
idle_test() {
  local v=$1 stem=$2 s
  for s in "${SERVERS[@]}"; do
    if [ "$v" = 1.3 ] && [ -n "${TLS13_FAIL[$s]:-}" ]; then
      log "idle connections TLS $v: $s skipped (handshake failed: ${TLS13_FAIL[$s]})"
      continue
    fi
    log "idle connections TLS $v: $s ($IDLE_CONNS)"
    # shellcheck disable=SC2046
    OPENSSL_CONF=$(cnf_for "$v") "$PY" "$TOOL" idle-measure $(groups_for "$s") --port "$(tls_port "$s")" \
      --tls-version "$v" --n "$IDLE_CONNS" --conc "$IDLE_CONC" --metric-stem "$stem" \
      --server "$s" --round "$round" --out "$results" >&2 \
      || log "WARNING: idle connections (TLS $v) against $s incomplete"
    sleep 2
  done
}

# skip13 SERVER: true (and logs) when the TLS 1.3 rows of SERVER are not to be run
skip13() {
  [ "$TLS13" = 1 ] || return 0
  [ -n "${TLS13_FAIL[$1]:-}" ] || return 1
  log "  $1 skipped: handshake failed: ${TLS13_FAIL[$1]}"
  return 0
}

for round in $(seq 1 "$ROUNDS"); do
  log "=== round $round/$ROUNDS"
  bring_up "$round" a

  # d. memory per idle TLS connection, first, before the heavy tests inflate heaps; and the servers
  # are restarted between the two TLS versions so that the second does not reuse the first's memory
  if [ "$TLS13" = 1 ]; then
    idle_test 1.3 idle-tls13
    stop_all
    sleep 1
    bring_up "$round" b
  fi
  idle_test 1.2 idle-tls

  # a. full handshakes (no resumption, no tickets), handshake only; then handshake + one request
  for s in "${SERVERS[@]}"; do
    log "handshakes TLS 1.2 ECDSA: $s"
    # shellcheck disable=SC2046
    "$PY" "$TOOL" measure $(groups_for "$s") --metric handshake-ecdsa --server "$s" --round "$round" --out "$results" -- \
      "$PY" "$TOOL" handshakes --port "$(tls_port "$s")" --n "$HANDSHAKES" --conc "$HS_CONC" --cipher "$ECDSA_CIPHER" >&2 \
      || log "WARNING: handshakes against $s had errors"
  done
  if [ "$RSA" = 1 ]; then
    for s in "${SERVERS[@]}"; do
      log "handshakes TLS 1.2 RSA: $s"
      # shellcheck disable=SC2046
      "$PY" "$TOOL" measure $(groups_for "$s") --metric handshake-rsa --server "$s" --round "$round" --out "$results" -- \
        "$PY" "$TOOL" handshakes --port "$(tls_port "$s")" --n "$HANDSHAKES" --conc "$HS_CONC" --cipher "$RSA_CIPHER" >&2 \
        || log "WARNING: RSA handshakes against $s had errors"
    done
  fi
  for s in "${SERVERS[@]}"; do
    log "handshake + GET TLS 1.2: $s"
    # shellcheck disable=SC2046
    "$PY" "$TOOL" measure $(groups_for "$s") --metric handshake-req --server "$s" --round "$round" --out "$results" -- \
      "$PY" "$TOOL" handshakes --port "$(tls_port "$s")" --n "$HANDSHAKES" --conc "$HS_CONC" --cipher "$ECDSA_CIPHER" --request / >&2 \
      || log "WARNING: handshake+GET against $s had errors"
  done
  if [ "$TLS13" = 1 ]; then
    for metric in handshake13 handshake13-req; do
      req=()
      [ "$metric" = handshake13-req ] && req=(--request /)
      for s in "${SERVERS[@]}"; do
        log "$metric (TLS 1.3, X25519, ECDSA): $s"
        skip13 "$s" && continue
        # shellcheck disable=SC2046
        "$PY" "$TOOL" measure $(groups_for "$s") --metric "$metric" --server "$s" --round "$round" --out "$results" -- \
          env "OPENSSL_CONF=$CNF13" "$PY" "$TOOL" handshakes --tls-version 1.3 --port "$(tls_port "$s")" --n "$HANDSHAKES" --conc "$HS_CONC" "${req[@]}" >&2 \
          || log "WARNING: $metric against $s had errors"
      done
    done
  fi

  # b/c. keep-alive requests: HTTPS 1 KiB, HTTPS 100 KiB (TLS 1.2 and 1.3), HTTP/2 over TLS 1.3 1 KiB and 100 KiB
  # (h2load, 10 streams at a time on each connection; nginx with http2, HAProxy with alpn h2), plain HTTP 1 KiB; then the
  # 10 MiB download (throughput and CPU per MiB), TLS 1.2 and 1.3
  for test in "https-ka 1.2 / $WRK_THREADS $WRK_CONNS" "https13-ka 1.3 / $WRK_THREADS $WRK_CONNS" \
              "https-ka-100k 1.2 /100k.txt $WRK_THREADS $WRK_CONNS" "https13-ka-100k 1.3 /100k.txt $WRK_THREADS $WRK_CONNS" \
              "h2-ka 1.3 / $WRK_THREADS $WRK_CONNS" "h2-ka-100k 1.3 /100k.txt $WRK_THREADS $WRK_CONNS" \
              "http-ka http / $WRK_THREADS $WRK_CONNS" "http-close http / $WRK_THREADS $WRK_CONNS" \
              "dl-tls12 1.2 /10m.bin $DL_THREADS $DL_CONNS" "dl-tls13 1.3 /10m.bin $DL_THREADS $DL_CONNS"; do
    read -r metric v path threads conns <<<"$test"
    [ "$v" = 1.3 ] && [ "$TLS13" != 1 ] && continue
    for s in "${SERVERS[@]}"; do
      log "$metric: $s"
      if [ "$v" = http ]; then
        url="http://a.localhost:$(http_port "$s")$path"
        # http-close: one request per connection (wrk opens the next connection when the server closes).
        close=()
        [ "$metric" != http-close ] || close=(-H "Connection: close")
        WRK=("$run/client.sh" wrk -t "$threads" -c "$conns" -d "$DURATION" "${close[@]}" -s "$run/wrk-summary.lua" "$url")
        client wrk -t "$threads" -c "$conns" -d 2s "${close[@]}" "$url" >/dev/null
      else
        [ "$v" = 1.3 ] && skip13 "$s" && continue
        url="https://a.localhost:$(tls_port "$s")$path"
        case $metric in
          # HTTP/2, what browsers speak: h2load, 10 streams at a time on each connection.
          h2-*) WRK=(env "OPENSSL_CONF=$(cnf_for "$v")" "$run/client.sh" h2load -t "$threads" -c "$conns" -m 10 -D 2s "$url") ;;
          *) wrk_cmd "$v" "$threads" "$conns" 2s "$url" ;;
        esac
        "${WRK[@]}" >/dev/null
        case $metric in
          h2-*) WRK=(env "OPENSSL_CONF=$(cnf_for "$v")" "$run/client.sh" h2load -t "$threads" -c "$conns" -m 10 -D "$DURATION" "$url") ;;
          *) wrk_cmd "$v" "$threads" "$conns" "$DURATION" "$url" ;;
        esac
      fi
      # shellcheck disable=SC2046
      "$PY" "$TOOL" measure $(groups_for "$s") --metric "$metric" --server "$s" --round "$round" --out "$results" -- \
        "${WRK[@]}" >&2 \
        || log "WARNING: wrk against $s failed"
    done
  done

  # e. cold start of a pool's worker with the dispatcher warm: pool b over HTTP, pool c over HTTPS
  log "cold start: pools b (HTTP) and c (HTTPS)"
  out=$("$PY" "$TOOL" fetch --port "$P_D_HTTP" --host b.localhost --count 1) && add_cold "$round" "new worker, dispatcher warm (HTTP, pool b)" "$out" || log "WARNING: cold b: $out"
  out=$("$PY" "$TOOL" fetch --port "$P_D_HTTP" --host b.localhost --count 20) && add_cold "$round" "warm worker (HTTP, new connection each, pool b)" "$out" || true
  out=$("$PY" "$TOOL" fetch --port "$P_D_TLS" --tls --host c.localhost --count 1) && add_cold "$round" "new worker, dispatcher warm (HTTPS incl. full handshake, pool c)" "$out" || log "WARNING: cold c: $out"
  out=$("$PY" "$TOOL" fetch --port "$P_D_TLS" --tls --host c.localhost --count 20) && add_cold "$round" "warm worker (HTTPS incl. full handshake, new connection each, pool c)" "$out" || true

  log "Dispatch tree at the end of round $round: $("$PY" "$TOOL" tree "$D_PID" | awk '{printf "%s:%s ", $1, $2}')"
  stop_all
  sleep 1
done

# ------------------------------------------------------------------------------------------------
# 6. Report
nginx_v=$(nginx -v 2>&1 | sed 's/^nginx version: //')
haproxy_v=$(haproxy -v | sed -n 1p)
"$PY" - "$run/meta.json" <<PY
import json, os, platform, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
meta = {
  "date": "$(date -u +%Y-%m-%dT%H:%MZ)",
  "commit": "$commit",
  "dispatch_engine": "${DISPATCH_ENGINE:-default}",
  "rounds": $ROUNDS,
  "machine": {
    "nproc": os.cpu_count(), "CPU": cpu, "memory": mem, "kernel": platform.release(),
    "OS": open("/etc/debian_version").read().strip().join(["Debian ", ""]),
    ".NET runtime": "$dotnet_version", "nginx": "$nginx_v", "HAProxy": "$haproxy_v",
    "OpenSSL": "$(openssl version)", "wrk": "$(wrk -v 2>&1 | awk 'NR == 1 {print $2}')",
    "Python client": platform.python_version() + " (" + __import__("ssl").OPENSSL_VERSION + ")",
    "load average at start / end": "$loadavg_start / " + open("/proc/loadavg").read().strip(),
  },
  "setup": [
    "Dispatch: $app_note; config $run/dispatch.json: one tls listener, one http listener; vhost a.localhost tls terminate with ECDSA P-256 + RSA-2048 certDirs, TLS engine: ${DISPATCH_ENGINE:-the default (no engine key)}, pool a uid $TENANT_UID maxWorkers 1 nofile $NOFILE, dispatcher uid $DISPATCHER_UID nofile $NOFILE, log.level Warning; pools b and c exist only for the cold-start test (no worker until then). Measured: Master + TlsDispatcher + Worker(s) (every process in the master's tree).",
    "nginx $nginx_v: worker_processes $NGINX_WORKERS (= $(nproc) here when auto), worker_connections $CONN_LIMIT, worker_rlimit_nofile $NOFILE, one TLS server and one plain HTTP server on the same files, access_log off, sendfile on, keepalive_requests unlimited, ssl_protocols TLSv1.2 TLSv1.3, TLS 1.2 ciphers $ECDSA_CIPHER:$RSA_CIPHER, TLS 1.3 suites OpenSSL's default, ssl_ecdh_curve X25519:prime256v1. Measured: master + workers.",
    "HAProxy $haproxy_v: nbthread $HAPROXY_THREADS, maxconn $HAPROXY_MAXCONN, TLS 1.2 and 1.3 (ssl-min-ver TLSv1.2), same TLS 1.2 ciphers, default TLS 1.3 suites, curves X25519:P-256, ECDSA+RSA crt, TLS and plain frontends forwarding to a backend: a separate nginx (worker_processes 1, plain HTTP, same files, http-reuse always). Not http-request return. The HAProxy column includes the backend's CPU/memory; 'HAProxy process only' rows do not.",
    "Client TLS pins: every server accepts TLS 1.2 and 1.3 on one port; each row's client pins the version. TLS 1.2 rows: $ECDSA_CIPHER (RSA row: $RSA_CIPHER), group P-256. TLS 1.3 rows: TLS 1.3 only, group X25519, signature algorithms ECDSA only (HAProxy would otherwise present its RSA certificate), OpenSSL's default suites (the server picks; see 'What each client pin negotiated'). wrk has no TLS options, so the pin is an OpenSSL config given through OPENSSL_CONF ($CNF12, $CNF13: MinProtocol/MaxProtocol/Groups/CipherString in system_default), read by wrk, Python and openssl s_client alike. A server that fails the TLS 1.3 probe handshake gets 'handshake failed: <reason>' in every TLS 1.3 row.",
    "Handshake client: bench/tool.py handshakes (Python ssl, $HS_CONC threads), OP_NO_TICKET, a fresh SSLContext session per connection (no resumption; the report's 'reused' count must be 0). 'handshake' = connect, full handshake, close; 'handshake + GET' also sends GET / (Connection: close) and reads the 1 KiB response. $WARMUP_HANDSHAKES warm-up handshakes+GETs per server and TLS version before any measurement.",
    "Keep-alive: wrk -t $WRK_THREADS -c $WRK_CONNS -d $DURATION (after a 2 s warm-up run), SNI and Host a.localhost (wrk runs in a private mount namespace whose /etc/hosts maps a.localhost to 127.0.0.1). CPU per request = server CPU delta over the wrk run / requests wrk completed (exact counts from a done() hook, $run/wrk-summary.lua).",
    "Download: wrk -t $DL_THREADS -c $DL_CONNS -d $DURATION on /10m.bin (10 MiB of random bytes), keep-alive, after a 2 s warm-up; MiB/s = bytes wrk read / its duration; CPU per MiB = server CPU delta / MiB wrk read.",
    "CPU: utime+stime (+cutime+cstime of reaped children) summed over every process in each server's tree, from /proc/PID/stat before and after the client command (resolution 1/$(getconf CLK_TCK) s).",
    "Memory: $IDLE_CONNS TLS connections per server and TLS version opened by a Python asyncio client ($IDLE_CONC handshakes in flight), held idle; RSS and PSS (smaps_rollup) of the server's process tree and of each process in it 2 s after the last handshake completed, minus the same just before the client started; then each of the same connections sends one keep-alive GET / (1 KiB response) and idles again, and the tree is measured once more ('after one GET', against the same baseline). The servers are restarted between the TLS 1.3 and the TLS 1.2 test, so the second does not reuse memory the first left behind. File descriptors: ulimit -n $NOFILE for the client and every server.",
    "Cold start: Python client, one fresh connection per request, time from connect to the complete response. 'First request after start' is sent 1 s after the dispatcher first answered a plain request for an unknown host (404, no worker involved) (earlier requests can crash the master: see caveats); it includes spawning, jailing and proving the pool's worker.",
    "Servers are restarted fresh for every round; order within a round: probes, warm-up, idle memory TLS 1.3, restart + warm-up, idle memory TLS 1.2, handshakes (TLS 1.2 ECDSA, RSA, + GET; TLS 1.3, + GET), keep-alive HTTPS 1 KiB (1.2, 1.3), 100 KiB (1.2, 1.3), plain HTTP, 10 MiB download (1.2, 1.3), Dispatch cold start.",
  ],
  "caveats": [
    "Client and servers share the same $(nproc) cores (the client takes a large share of them under wrk and the handshake loop): requests/s are bounded by the machine, not by the server alone. CPU per operation is the fairer number.",
    "The machine is a shared VM, and other work (builds, test runs) may run on it at the same time: absolute numbers are noise; only ratios from the same run mean anything. The load average and each measurement's 'machine busy' share are in the report.",
    "The TLS 1.2 rows pin every server to TLS 1.2, P-256 and one suite (what Dispatch's TLS 1.2 engine offers); the TLS 1.3 rows measure what clients use by default today (TLS 1.3, X25519). A Dispatch build whose default engine has no TLS 1.3 shows 'handshake failed' there.",
    "nginx with worker_processes $NGINX_WORKERS and HAProxy with nbthread $HAPROXY_THREADS can use both cores; Dispatch is one dispatcher + one worker (multi-threaded .NET processes).",
    "nginx and HAProxy run with access logs off. Dispatch has no such switch: its worker logs every request at Information whatever log.level says (src/Worker/Program.cs creates its logger at Information), writes the line to its stderr socket, and the master parses it and drops it below Warning. That cost is in Dispatch's numbers (it is what Dispatch does today); the Master column of the CPU split is mostly this.",
    "Dispatch's first request after start is delayed until the dispatcher has answered a probe plus 1 s: a connection that makes the dispatcher ask for a worker before the master has read its Ready crashes the master ('expected Ready, got NeedWorker'; seen while writing this benchmark), and the master binds the ports before the dispatcher is up.",
  ],
}
meta["servers"] = [
  "$app/Master --config $run/dispatch.json",
  "nginx -c $run/nginx/nginx.conf -p $run/nginx",
  "nginx -c $run/backend/nginx.conf -p $run/backend    # HAProxy's backend",
  "haproxy -db -f $run/haproxy.cfg",
]
meta["configs"] = {p: open(p).read() for p in ("$run/dispatch.json", "$run/nginx/nginx.conf",
                                               "$run/backend/nginx.conf", "$run/haproxy.cfg")}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY
"$PY" "$TOOL" report "$results" "$run/meta.json" >"$report"
cp "$results" "${report%.md}.jsonl"
[ "${COLDSTART:-1}" = 0 ] || DISPATCH_APP="$app" "$bench/coldstart.sh" >>"$report" || log "bench/coldstart.sh failed"  # first response from a pool with no worker (docs/coldstart.md)
[ "${DENSITY:-1}" = 0 ] || DISPATCH_APP="$app" "$bench/density.sh" ${DENSITY_COUNTS:-1 100 1000} >>"$report" || log "bench/density.sh failed"  # idle pools per host
[ "${IDENTITY:-1}" = 0 ] || { printf '\n## Identity vhosts: verified logins, bcrypt cost 10 (bench/identity.sh)\n\n'; DISPATCH_APP="$app" LOGINS=${IDENTITY_LOGINS:-200} "$bench/identity.sh"; } >>"$report" || log "bench/identity.sh failed"
[ "${PHP:-1}" = 0 ] || { printf '\n## PHP through FastCGI (bench/php.sh)\n\n'; DISPATCH_APP="$app" SKIP_INSTALL=1 "$bench/php.sh"; } >>"$report" || log "bench/php.sh failed"
[ "${AOT:-1}" = 0 ] || { printf '\n## NativeAOT vs JIT, steady-state CPU (bench/aot.sh)\n\n'; DISPATCH_PUBLISHED="$repo/artifacts/bin" SKIP_INSTALL=1 ROUNDS=${AOT_ROUNDS:-1} RESULTS_DIR="$run/aot" "$bench/aot.sh" | sed 1d; } >>"$report" || log "bench/aot.sh failed"
[ "${FLOODS:-0}" = 0 ] || { printf '\n## Floods (bench/flood.sh, docs/floods.md)\n\n'; DISPATCH_APP="$app" "$bench/flood.sh"; } >>"$report" || log "bench/flood.sh failed"  # off by default (~20 min)
cat "$report"
log "report: $report (raw data: ${report%.md}.jsonl)"
