# Shared setup of the bench scripts (sourced, not run): root check, logging, the processes a script starts and
# their clean-up, tools, staging Dispatch, certificates, host names for clients, nginx, waiting for Dispatch, CPU
# ticks and medians. Each function says what it sets or prints; nothing here runs a measurement.
#
#   . "$(dirname "$0")/lib.sh"
#   bench_init NAME [WHY]    # before anything else: root or exit 77; sets repo, bench, PY, TOOL; log, die
#
# shellcheck shell=bash

# bench_init NAME [WHY]: exits 77 unless root; sets repo, bench, PY, TOOL and the log prefix.
bench_init() {
  BENCH_NAME=$1
  if [ "$(id -u)" -ne 0 ]; then
    local why=${2:-the master starts workers as tenant uids}
    echo "bench/$BENCH_NAME.sh must run as root ($why)." >&2
    exit 77
  fi
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  bench="$repo/bench"
  PY=/usr/bin/python3
  TOOL="$bench/tool.py"   # a script may point TOOL elsewhere (flood.py); lib.sh itself uses BENCH_TOOL
  BENCH_TOOL="$bench/tool.py"
  [ -x "$PY" ] || { echo "$PY not found" >&2; exit 1; }
}

# bench_path PATH: PATH under BENCH_PREFIX (default: none, PATH itself), so that a second run on the same machine (from
# another checkout, at the same time) keeps to directories of its own: its document roots, certificates and staged
# Dispatch. Every fixed path of the scripts goes through it.
bench_path() { printf '%s%s' "${BENCH_PREFIX:-}" "$1"; }

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ------------------------------------------------------------------------------------------------
# Processes: every server a script starts is recorded and ended by pid (its tree too) on exit.
declare -a STARTED=()
declare -A STARTED_NAME=()
LAST_PID=''
BENCH_LOGS=''   # where the logs are, said on failure

# start_bg NAME LOGFILE CMD...: starts CMD in the background (stdin /dev/null), records it; its pid in LAST_PID.
start_bg() {
  local name=$1 logf=$2
  shift 2
  "$@" >"$logf" 2>&1 </dev/null &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
  STARTED_NAME[$LAST_PID]=$name
}

# track_pid PID [NAME]: records a process started otherwise, so that stop_all ends it.
track_pid() {
  STARTED+=("$1")
  STARTED_NAME[$1]=${2:-$1}
}

# stop_pid PID: SIGTERM, up to 10 s, then SIGKILL; then SIGKILL what is left of the tree it had (by pid).
stop_pid() {
  local pid=$1 tree i p
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  tree=$("$PY" "$BENCH_TOOL" tree "$pid" 2>/dev/null | awk '{print $1}' || true)
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid (${STARTED_NAME[$pid]:-?}) ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  sleep 0.3
  for p in $tree; do
    if [ "$p" != "$pid" ] && kill -0 "$p" 2>/dev/null; then
      log "pid $p from ${STARTED_NAME[$pid]:-?}'s tree still alive: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  wait "$pid" 2>/dev/null || true
}

# stop_all: stops every recorded process, newest first.
stop_all() {
  local i
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    [ -n "${STARTED[$i]}" ] && stop_pid "${STARTED[$i]}"
  done
  STARTED=()
}

# bench_traps [HOOK]: on exit stop_all, then HOOK (a function name; e.g. to undo an /etc/hosts edit); a failure
# says where the logs are (BENCH_LOGS).
bench_traps() {
  BENCH_EXIT_HOOK=${1:-}
  trap bench_on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
bench_on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  [ -n "${BENCH_EXIT_HOOK:-}" ] && "$BENCH_EXIT_HOOK"
  [ "$rc" -ne 0 ] && log "failed (exit $rc)${BENCH_LOGS:+; logs in $BENCH_LOGS}"
  exit "$rc"
}

# ------------------------------------------------------------------------------------------------
# Tools

# bench_need COMMAND:PACKAGE...: installs (apt-get) the packages of missing commands unless SKIP_INSTALL=1, then
# dies if a command is still missing.
bench_need() {
  local t need=()
  if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    for t in "$@"; do command -v "${t%%:*}" >/dev/null || need+=("${t##*:}"); done
    if [ ${#need[@]} -gt 0 ]; then
      log "installing ${need[*]}"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    fi
  fi
  for t in "$@"; do command -v "${t%%:*}" >/dev/null || die "${t%%:*} not found (apt-get install ${t##*:})"; done
}

# free_ports N: N free loopback TCP ports, on one line.
free_ports() { "$PY" "$BENCH_TOOL" ports "$1"; }

# ------------------------------------------------------------------------------------------------
# Dispatch

# stage_dispatch DIR: sets app to DISPATCH_APP when given, else publishes (scripts/stage.sh, NativeAOT) into DIR;
# dies with the end of the build log when that fails.
stage_dispatch() {
  if [ -n "${DISPATCH_APP:-}" ]; then
    app=$DISPATCH_APP
  else
    app=$1
    log "staging Dispatch (Release) into $app"
    local stage_log
    stage_log=$(mktemp /tmp/dispatch-bench-stage.XXXXXX)
    "$repo/scripts/stage.sh" "$app" Release >"$stage_log" 2>&1 || { tail -20 "$stage_log" >&2; rm -f "$stage_log"; die "scripts/stage.sh failed"; }
    rm -f "$stage_log"
  fi
  [ -x "$app/Master" ] || die "$app/Master missing"
}

# with_worker_dir BASE: when WORKER_DIR names a published Worker, sets app to a copy of app with that Worker in it
# (BASE/app-worker: the master starts "Worker" from its own directory). Then writes app back to disk: a page of a
# binary still dirty in the page cache (just built or copied) counts as private dirty memory of every process that
# maps it (seen: 16 MB instead of 7 MB for a NativeAOT worker copied a moment before).
with_worker_dir() {
  if [ -n "${WORKER_DIR:-}" ]; then
    rm -rf "$1/app-worker"
    cp -a "$app/." "$1/app-worker/"
    rm -f "$1/app-worker/Worker" "$1/app-worker/Worker.dll"
    cp -a "$WORKER_DIR/Worker" "$1/app-worker/Worker"
    chown -R root:root "$1/app-worker"
    chmod -R go-w "$1/app-worker"
    app="$1/app-worker"
  fi
  sync "$app"/*
}

# wait_dispatch_ready LOG PID [SECONDS]: waits for the master's "Dispatch ready" line; dies if the master exits or
# the line does not come (default 120 s).
wait_dispatch_ready() {
  local logf=$1 pid=$2 limit=$((${3:-120} * 10)) i
  for ((i = 0; i < limit; i++)); do
    grep -q "Dispatch ready" "$logf" && return 0
    kill -0 "$pid" 2>/dev/null || die "Dispatch exited: $(tail -5 "$logf")"
    sleep 0.1
  done
  die "Dispatch not ready within $((limit / 10)) s; see $logf"
}

# dispatch_pids LOG: prints "MASTER DISPATCHER" from the master's "Dispatch ready" line.
dispatch_pids() {
  sed -n 's/.*Dispatch ready: master \([0-9]*\); dispatcher \([0-9]*\).*/\1 \2/p' "$1" | head -1
}

# ------------------------------------------------------------------------------------------------
# Content and clients

# copy_certs DEST: the sample certificates as certbot leaves them: root-owned, writable by root only, private keys
# 0600 (Dispatch refuses weaker); no CA key.
copy_certs() {
  local dest=$1
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -a "$repo/certs-sample/." "$dest/"
  rm -f "$dest/generate.sh" "$dest/README.md" "$dest/ca-key.pem"
  chown -R root:root "$dest"
  chmod -R go-w "$dest"
  find "$dest" -name 'privkey*.pem' -exec chmod 600 {} +
}

# write_index FILE TITLE: an HTML page of exactly 1024 bytes.
write_index() {
  "$PY" - "$1" "$2" <<'PY'
import sys
head = f"<!doctype html><html><head><title>{sys.argv[2]}</title></head><body><p>"
tail = "</p></body></html>\n"
body = head + "x" * (1024 - len(head) - len(tail)) + tail
assert len(body.encode()) == 1024
open(sys.argv[1], "w").write(body)
PY
}

# site_a_www BASE: BASE/www/a.localhost with its 1 KiB index.html, owned by the pool's uid 10001, readable by all.
site_a_www() {
  rm -rf "$1/www"
  mkdir -p "$1/www/a.localhost"
  write_index "$1/www/a.localhost/index.html" a
  chown -R 10001:10001 "$1/www/a.localhost"
  chmod -R u=rwX,go=rX "$1/www"
}

# dispatch_site_a_json TLS-PORT HTTP-PORT CONTROL-SOCKET BASE CERTS [NOFILE]: the Dispatch config the benches that race
# nginx share: a TLS and a plain HTTP listener on 127.0.0.1, a.localhost terminated from BASE/www/a.localhost with its
# certificate from CERTS/live, one worker of pool a (uid 10001), long timeouts, warnings only; with NOFILE, the
# dispatcher's and the pool's descriptor limit.
dispatch_site_a_json() {
  local nofile=""
  [ -z "${6:-}" ] || nofile=", \"nofile\": $6"
  cat <<JSON
{
  "listen": [ { "endpoint": "127.0.0.1:$1", "protocol": "tls" }, { "endpoint": "127.0.0.1:$2", "protocol": "http" } ],
  "dispatcher": { "user": "10000", "headerTimeout": "300s", "handshakeTimeout": "30s"$nofile },
  "control": { "socket": "$3" },
  "security": { "minUid": 1000 },
  "pools": { "a": { "user": "10001", "group": "10001", "maxWorkers": 1$nofile } },
  "vhosts": {
    "a.localhost": { "pool": "a", "root": "$4/www/a.localhost", "tls": "terminate", "certDirs": [ "$5/live/a.localhost" ] }
  },
  "log": { "level": "Warning" }
}
JSON
}

# client_wrapper DIR NAMES: writes DIR/client.sh, which runs a client in a private mount namespace whose /etc/hosts
# resolves NAMES to 127.0.0.1 (wrk takes SNI from the URL); prints 0, or 1 when unshare -m is not usable here (then
# DIR/client.sh runs the client as it is, and the caller must make the names resolve another way).
client_wrapper() {
  local dir=$1 names=$2
  printf '127.0.0.1 localhost %s\n::1 localhost\n' "$names" >"$dir/hosts"
  if unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && getent hosts "$1"' "$dir/hosts" "${names%% *}" >/dev/null 2>&1; then
    printf '#!/bin/sh\nexec unshare -m --propagation private sh -c '"'"'mount --bind "$0" /etc/hosts && exec "$@"'"'"' %s "$@"\n' "$dir/hosts" >"$dir/client.sh"
    echo 0
  else
    printf '#!/bin/sh\nexec "$@"\n' >"$dir/client.sh"
    echo 1
  fi
  chmod 755 "$dir/client.sh"
}

# tls_cnf_write FILE SETTINGS...: an OpenSSL config that pins every client reading it (OPENSSL_CONF) to SETTINGS.
tls_cnf_write() {
  local f=$1
  shift
  { printf 'openssl_conf = bench_conf\n[bench_conf]\nssl_conf = bench_ssl\n[bench_ssl]\nsystem_default = bench_tls\n[bench_tls]\n'
    printf '%s\n' "$@"; } >"$f"
  chmod 644 "$f"
}

# wrk_summary_lua FILE: wrk's done() hook printing exact counters (requests, bytes, duration) instead of rounded units.
wrk_summary_lua() {
  cat >"$1" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
LUA
}

# tls13_clients RUN: what the clients of the TLS 1.3 rows need under RUN (aot.sh, datapath.sh): a.localhost resolving to
# 127.0.0.1 for them (client_wrapper; dies where unshare -m does not work), RUN/tls13.cnf (TLS 1.3 only, X25519, ECDSA
# signatures: every client, wrk or Python, reads it through OPENSSL_CONF) and RUN/wrk-summary.lua.
tls13_clients() {
  [ "$(client_wrapper "$1" a.localhost)" = 0 ] || die "unshare -m does not work here (the clients need a.localhost)"
  tls_cnf_write "$1/tls13.cnf" "MinProtocol = TLSv1.3" "MaxProtocol = TLSv1.3" "Groups = X25519" \
    "SignatureAlgorithms = ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512"
  wrk_summary_lua "$1/wrk-summary.lua"
}

# nginx_main PREFIX CONNECTIONS [NOFILE]: the top of a bench's nginx.conf, before http {}: as many workers as cores, in the
# foreground (start_bg ends it), as www-data, its pid and error log under PREFIX, CONNECTIONS a worker, and with NOFILE
# the workers' descriptor limit.
nginx_main() {
  printf 'worker_processes auto;\ndaemon off;\nuser www-data;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$1" "$1"
  [ -z "${3:-}" ] || printf 'worker_rlimit_nofile %s;\n' "$3"
  printf 'events { worker_connections %s; }\n' "$2"
}

# nginx_site_a CERTS ROOT: the lines of an nginx server {} (after its listen lines) that serve a.localhost from ROOT
# with its ECDSA certificate from CERTS/live, as Dispatch does in the benches.
nginx_site_a() {
  printf '    server_name a.localhost;\n'
  printf '    ssl_certificate     %s/live/a.localhost/fullchain.pem;\n    ssl_certificate_key %s/live/a.localhost/privkey.pem;\n' "$1" "$1"
  printf '    root %s;\n    index index.html;\n' "$2"
}

# nginx_http_common [static] TMPDIR: the nginx http-block lines the benches that race nginx share (aot.sh, datapath.sh,
# run.sh): no access log, sendfile, keep-alive connections that last the whole run (300 s, no request limit), TLS 1.2
# and 1.3 on X25519 or P-256, temporary files under TMPDIR (nginx_temp_paths). With "static": MIME types from
# /etc/nginx/mime.types (application/octet-stream otherwise) and tcp_nopush, for the rows that serve files of each type.
nginx_http_common() {
  local static=0
  if [ "$1" = static ]; then static=1; shift; fi
  [ "$static" = 0 ] || printf '  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n'
  printf '  access_log off;\n  sendfile on;\n'
  [ "$static" = 0 ] || printf '  tcp_nopush on;\n'
  printf '  keepalive_timeout 300s;\n  keepalive_requests 100000000;\n'
  printf '  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_ecdh_curve X25519:prime256v1;\n'
  nginx_temp_paths "$1"
}

# nginx_temp_paths DIR: the nginx http-block lines that keep its temporary files under DIR (created here).
nginx_temp_paths() {
  mkdir -p "$1"
  local k
  for k in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s;\n' "$k" "$1"; done
}

# ------------------------------------------------------------------------------------------------
# Measuring

# ticks PID...: utime + stime of the processes (all their threads), in clock ticks (getconf CLK_TCK a second).
ticks() {
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")))
  done
  echo "$total"
}

# median NUMBER...: the median.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# tree_ticks PID: utime + stime, in clock ticks, of the process and all its descendants.
tree_ticks() {
  "$PY" - "$1" <<'PY'
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
