#!/usr/bin/env bash
# Where one Dispatch install spends its CPU and system calls under one load (docs/operations.md, "Performance"):
# starts the install (the same config as bench/datapath.sh), warms it up, then runs the load for DURATION while
#   perf record -g   on the role (PERF=1; report in OUT/perf-ROLE-LOAD.txt, symbols resolved from SYMBOLS/ROLE.dbg)
#   strace -c -f     on the role (STRACE=1; OUT/strace-ROLE-LOAD.txt), with the requests (handshakes) counted
# and prints CPU per request (or per handshake) of the whole tree with nothing attached (a plain measurement first).
#   sudo INSTALL=artifacts/bin LOAD=ka bench/profile.sh
# PERF_CALLGRAPH="--call-graph dwarf,16384" unwinds through libraries built without frame pointers (libcrypto).
# Environment: INSTALL (a directory with Master, TlsDispatcher, Worker), LOAD=ka (keep-alive TLS 1.3 GET 1 KiB,
#   wrk -t2 -c10) | ka-100k (the same, 100 KiB) | h2, h2-100k (HTTP/2 over TLS 1.3, h2load -t2 -c10 -m10) | ka-http (plain HTTP) | handshake (full TLS 1.3 handshakes, no request) | handshake-req (the
#   same, each with one GET / and its close, as bench/run.sh's handshake13-req) | handshake12 (TLS 1.2,
#   ECDHE-ECDSA-AES128-GCM-SHA256, P-256, as bench/run.sh pins it) | close-http (plain HTTP, one GET / per
#   connection: wrk -c10 with Connection: close), ROLE (Worker for ka, ka-http and close-http, TlsDispatcher for
#   the handshakes), DURATION=10s, HANDSHAKES=3000, PERF=1, STRACE=1 (trace: every
#   system call of every thread with its time, one connection at a time, in OUT/trace-ROLE-LOAD.txt), SYMBOLS=artifacts/symbols, OUT.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init profile "Dispatch's master starts workers as tenant uids"
INSTALL=$(cd "${INSTALL:?INSTALL=DIR is required}" && pwd)
LOAD=${LOAD:-ka}
case $LOAD in ka|ka-100k|h2|h2-100k|ka-http|close-http) ROLE=${ROLE:-Worker} ;; handshake|handshake-req|handshake12) ROLE=${ROLE:-TlsDispatcher} ;; *) die "LOAD=$LOAD?" ;; esac
DURATION=${DURATION:-10s}
HANDSHAKES=${HANDSHAKES:-3000}
SYMBOLS=${SYMBOLS:-$repo/artifacts/symbols}
OUT=${OUT:-/tmp/dispatch-profile}
base=$(bench_path /var/lib/dispatch-bench-profile)
run=$base/run
certs=$(bench_path /etc/dispatch-bench-profile/certs)
BENCH_LOGS=$run
bench_traps
bench_need wrk:wrk unshare:util-linux
[ "${PERF:-1}" = 0 ] || bench_need perf:linux-perf
[ "${STRACE:-1}" = 0 ] || bench_need strace:strace
mkdir -p "$base" "$run" "$OUT"
chmod 755 "$base" "$run"
site_a_www "$base"
copy_certs "$certs"
tls13_clients "$run"
tls_cnf_write "$run/tls12.cnf" "MinProtocol = TLSv1.2" "MaxProtocol = TLSv1.2" "Groups = P-256" "CipherString = ECDHE-ECDSA-AES128-GCM-SHA256"
# shellcheck disable=SC2046
set -- $(free_ports 2)
tls_port=$1 http_port=$2
NOFILE=$(ulimit -Hn)
ulimit -n "$NOFILE"
dispatch_site_a_json "$tls_port" "$http_port" "$run/control.sock" "$base" "$certs" "$NOFILE" >"$run/dispatch.json"
start_bg dispatch "$run/master.log" "$INSTALL/Master" --config "$run/dispatch.json"
master=$LAST_PID
"$PY" "$TOOL" wait-ready --port "$http_port" --host probe.invalid --any-status --timeout 60 || die "never answered"
"$PY" "$TOOL" wait-ready --port "$tls_port" --tls --timeout 60 || die "no TLS"
url=https://a.localhost:$tls_port/
case $LOAD in
  ka-http|close-http) url=http://a.localhost:$http_port/ ;;
  ka-100k|h2-100k)   # 100 KiB of text, as bench/run.sh's and bench/datapath.sh's 100 KiB rows
    "$PY" -c 'import base64, os, sys; open(sys.argv[1], "wb").write(base64.encodebytes(os.urandom(76800))[:102400])' "$base/www/a.localhost/100k.txt"
    chown 10001:10001 "$base/www/a.localhost/100k.txt"
    url=https://a.localhost:$tls_port/100k.txt ;;
esac
load() {   # load: runs the load once, prints its count (requests or handshakes that succeeded; some fail under strace)
  if [ "$LOAD" = handshake12 ]; then
    { OPENSSL_CONF=$run/tls12.cnf "$PY" "$TOOL" handshakes --tls-version 1.2 --cipher ECDHE-ECDSA-AES128-GCM-SHA256 --port "$tls_port" --n "$HANDSHAKES" --conc 4 || true; } \
      | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["count"])'
  elif [ "$LOAD" = handshake ] || [ "$LOAD" = handshake-req ]; then
    local req=()
    [ "$LOAD" = handshake ] || req=(--request /)
    { OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" handshakes --tls-version 1.3 --port "$tls_port" --n "$HANDSHAKES" --conc 4 "${req[@]}" || true; } \
      | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["count"])'
  elif [ "$LOAD" = h2 ] || [ "$LOAD" = h2-100k ]; then
    OPENSSL_CONF=$run/tls13.cnf "$run/client.sh" h2load -t 2 -c 10 -m 10 -D "$DURATION" "$url" \
      | sed -n 's/^requests: [0-9]* total, [0-9]* started, [0-9]* done, \([0-9]*\) succeeded.*/\1/p' | head -1
  elif [ "$LOAD" = close-http ]; then
    "$run/client.sh" wrk -t 2 -c 10 -d "$DURATION" -H 'Connection: close' -s "$run/wrk-summary.lua" "$url" \
      | sed -n 's/^BENCH requests=\([0-9]*\).*/\1/p' | head -1
  else
    OPENSSL_CONF=$run/tls13.cnf "$run/client.sh" wrk -t 2 -c 10 -d "$DURATION" -s "$run/wrk-summary.lua" "$url" \
      | sed -n 's/^BENCH requests=\([0-9]*\).*/\1/p' | head -1
  fi
}
tree_cpu() {   # tree_cpu: utime+stime ticks of the master's tree
  local p t=0
  for p in $(pstree -pT "$master" | grep -o '([0-9]*)' | tr -d '()'); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
log "warm-up"
HANDSHAKES=300 LOAD=handshake load >/dev/null
DURATION=3s load >/dev/null
role_pid=$(pstree -pT "$master" | grep -o "$ROLE([0-9]*)" | head -1 | grep -o '[0-9]*')
[ -n "$role_pid" ] || die "no $ROLE process under $master"
hz=$(getconf CLK_TCK)
t0=$(tree_cpu); n=$(load); t1=$(tree_cpu)
log "$LOAD: $n in the plain run; tree CPU $(( (t1 - t0) * 1000000 / hz / n )) µs per unit"
if [ "${PERF:-1}" != 0 ]; then
  perf record -F "${PERF_FREQ:-2000}" ${PERF_CALLGRAPH:--g} -p "$role_pid" -o "$OUT/perf-$ROLE-$LOAD.data" -- sleep 600 >/dev/null 2>&1 &
  perf_pid=$!
  track_pid "$perf_pid" perf
  sleep 1
  n=$(load)
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  if [ -f "$SYMBOLS/$ROLE.dbg" ]; then
    perf script -i "$OUT/perf-$ROLE-$LOAD.data" -F comm,tid,ip,sym,dso 2>/dev/null \
      | "$PY" "$bench/perfsym.py" "$ROLE" "$SYMBOLS/$ROLE.dbg" >"$OUT/perf-$ROLE-$LOAD.txt"
  else
    log "no $SYMBOLS/$ROLE.dbg: $OUT/perf-$ROLE-$LOAD.txt not written (the addresses of $ROLE stay unresolved)"
  fi
  log "perf: $n units; $OUT/perf-$ROLE-$LOAD.data, $OUT/perf-$ROLE-$LOAD.txt"
fi
if [ "${STRACE:-1}" = trace ]; then
  # Every system call of every thread, timed, with one connection at a time: a connection's path, step by step.
  strace -f -tt -T -p "$role_pid" -o "$OUT/trace-$ROLE-$LOAD.txt" &
  st_pid=$!
  track_pid "$st_pid" strace
  sleep 1
  case $LOAD in
    close-http) "$run/client.sh" wrk -t 1 -c 1 -d 2s -H 'Connection: close' "$url" >/dev/null ;;
    handshake|handshake-req|handshake12) HANDSHAKES=50 load >/dev/null ;;
    *) OPENSSL_CONF=$run/tls13.cnf "$run/client.sh" wrk -t 1 -c 1 -d 2s "$url" >/dev/null ;;
  esac
  kill -INT "$st_pid"; wait "$st_pid" || true
  log "trace: $OUT/trace-$ROLE-$LOAD.txt"
elif [ "${STRACE:-1}" != 0 ]; then
  strace -c -f -p "$role_pid" -o "$OUT/strace-$ROLE-$LOAD.txt" &
  st_pid=$!
  track_pid "$st_pid" strace
  sleep 1
  n=$(load)
  kill -INT "$st_pid"; wait "$st_pid" || true
  echo "units: $n" >>"$OUT/strace-$ROLE-$LOAD.txt"
  log "strace: $n units; $OUT/strace-$ROLE-$LOAD.txt"
fi
stop_all
