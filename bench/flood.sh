#!/usr/bin/env bash
# Floods (docs/floods.md): stalled readers, partial ClientHellos, a handshake flood and slowloris (plain
# and TLS), each from one address and from many, against Dispatch and nginx (as deployed: their default
# timeouts and limits), while a good client keeps making requests. Reports the good client's p50/p99
# idle, during and after, and the descriptors and RSS of every server process before, during, after.
#
#   sudo bench/flood.sh                 # Markdown report to stdout and bench/results/<date>-<commit>-floods.md
#
# Environment (all optional):
#   N=10000             hostile connections held per flood (stalled readers, hellos, slowloris)
#   DURATION=20         seconds each flood runs (reopening what the server ends)
#   IDLE=$DURATION      seconds of good client measured idle, just before the flood: as long as the flood, so that the idle
#                       p99 is taken from as many requests as the p99 during it (5 s gave about 100 per site: the
#                       idle p99 was their slowest or second slowest)
#   WARMUP=30           seconds of good client before the idle phase and the "before" descriptors and RSS: long
#                       enough for each process to fill its gen 0 budget once (with 2 s, a flood of 20 connections
#                       "left" +5.7 % RSS: the good client's own allocations; docs/floods.md)
#   AFTER=10            seconds the good client goes on after the descriptors came back; RSS "after" is taken then
#   MANY=100            "many addresses": 127.0.0.3 ... 127.0.0.(2+MANY); "one address": 127.0.0.2
#   HS_CONC=8           handshake flood client threads
#   SCENARIOS="..."     a subset of: stalled-http stalled-tls hello handshake slowloris-http slowloris-tls
#   ADDRS="one many"    which address modes
#   SERVERS="dispatch nginx"
#   DISPATCH_APP=DIR    an already staged Dispatch (scripts/stage.sh) instead of staging a fresh Release build
#   REPORT=FILE         where the Markdown report goes (its .jsonl beside it) instead of bench/results/<date>-<commit>-floods.md,
#                       so that an experiment's run does not overwrite the commit's record
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init flood
TOOL="$bench/flood.py"
N=${N:-10000}
DURATION=${DURATION:-20}
AFTER=${AFTER:-10}
WARMUP=${WARMUP:-30}
IDLE=${IDLE:-$DURATION}
MANY=${MANY:-100}
HS_CONC=${HS_CONC:-8}
SCENARIOS=${SCENARIOS:-stalled-http stalled-tls hello handshake slowloris-http slowloris-tls}
ADDRS=${ADDRS:-one many}
SERVERS=${SERVERS:-dispatch nginx}
base=$(bench_path /var/lib/dispatch-bench-flood)
certs=$(bench_path /etc/dispatch-bench-flood)
run="$base/run"
DISPATCHER_UID=10000
BENCH_LOGS=$run
bench_traps
bench_need nginx:nginx openssl:openssl curl:curl

# Descriptors: the flood tool holds N, the servers N or 2N; raise the soft limit to the hard one (raising the hard
# limit needs CAP_SYS_RESOURCE, which this VM may withhold). Dispatch's master gives its dispatcher and workers the
# configured "nofile" (below); nginx gets worker_rlimit_nofile.
NOFILE=$(ulimit -Hn)
ulimit -n "$NOFILE"
[ "$NOFILE" -ge $((N + 1000)) ] || log "WARNING: the descriptor limit $NOFILE is low for N=$N"

stage_dispatch "$(bench_path /usr/local/lib/dispatch-bench-flood)"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)

# Content (a: 1 KiB index and a 20 MiB file; b: 1 KiB index), certificates (root-owned, certbot layout)
rm -rf "$run" "$certs"
mkdir -p "$run/www/a" "$run/www/b" "$run/nginx"
chmod 755 "$base" "$run" "$run/www"
for site in a b; do head -c 1024 /dev/zero | tr '\0' x >"$run/www/$site/index.html"; done
head -c $((20 * 1048576)) /dev/urandom >"$run/www/a/10m.bin"
chown -R 10001:10001 "$run/www/a"
chown -R 10002:10002 "$run/www/b"
chmod -R u=rwX,go=rX "$run/www"
copy_certs "$certs"

read -r D_TLS D_HTTP N_TLS N_HTTP <<<"$(free_ports 4)"
cat >"$run/dispatch.json" <<JSON
{
  "listen": [ { "endpoint": "127.0.0.1:$D_TLS", "protocol": "tls" },
              { "endpoint": "127.0.0.1:$D_HTTP", "protocol": "http" } ],
  "dispatcher": { "user": "$DISPATCHER_UID", "nofile": $NOFILE },
  "control": { "socket": "$run/control.sock" },
  "pools": {
    "a": { "user": "10001", "group": "10001", "maxWorkers": 1, "nofile": $NOFILE },
    "b": { "user": "10002", "group": "10002", "maxWorkers": 1, "nofile": $NOFILE }
  },
  "vhosts": {
    "a.localhost": { "pool": "a", "root": "$run/www/a", "tls": "terminate", "certDirs": [ "$certs/live/a.localhost" ] },
    "b.localhost": { "pool": "b", "root": "$run/www/b", "tls": "terminate", "certDirs": [ "$certs/live/b.localhost" ] }
  },
  "log": { "level": "Warning" }
}
JSON
"$app/Master" check --config "$run/dispatch.json" >&2 || die "Dispatch refuses the generated config"

cat >"$run/nginx/nginx.conf" <<NGINX
$(nginx_main "$run/nginx" "$NOFILE" "$NOFILE")
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  ssl_protocols TLSv1.2 TLSv1.3;
$(nginx_temp_paths "$run/nginx/tmp")
  server { listen 127.0.0.1:$N_TLS ssl; listen 127.0.0.1:$N_HTTP; server_name a.localhost; root $run/www/a;
           ssl_certificate $certs/live/a.localhost/fullchain.pem; ssl_certificate_key $certs/live/a.localhost/privkey.pem; }
  server { listen 127.0.0.1:$N_TLS ssl; listen 127.0.0.1:$N_HTTP; server_name b.localhost; root $run/www/b;
           ssl_certificate $certs/live/b.localhost/fullchain.pem; ssl_certificate_key $certs/live/b.localhost/privkey.pem; }
}
NGINX
nginx -t -q -c "$run/nginx/nginx.conf" -p "$run/nginx" || die "nginx config"

declare -A ROOT=()
for s in $SERVERS; do
  case $s in
    dispatch) start_bg dispatch "$run/dispatch.log" "$app/Master" run --config "$run/dispatch.json" ;;
    nginx) start_bg nginx "$run/nginx/stdout.log" nginx -c "$run/nginx/nginx.conf" -p "$run/nginx" ;;
    *) die "unknown server $s" ;;
  esac
  ROOT[$s]=$LAST_PID
done
wait_up() {   # wait_up PORT: until a plain GET for a.localhost answers
  local i
  for i in $(seq 1 150); do
    curl -s -o /dev/null -m 2 -H 'Host: a.localhost' "http://127.0.0.1:$1/index.html" && return 0
    sleep 0.2
  done
  return 1
}
for s in $SERVERS; do
  case $s in dispatch) p=$D_HTTP ;; nginx) p=$N_HTTP ;; esac
  wait_up "$p" || die "$s does not answer on :$p"
done
log "servers up: ${SERVERS}; dispatch tls $D_TLS http $D_HTTP, nginx tls $N_TLS http $N_HTTP; N=$N, $DURATION s per flood"

results="$run/floods.jsonl"
: >"$results"
last=$((2 + MANY))
for scen in $SCENARIOS; do
  case $scen in
    stalled-http) kind=stalled tls= ;;
    stalled-tls) kind=stalled tls=--tls ;;
    hello) kind=hello tls=--tls ;;
    handshake) kind=handshake tls=--tls ;;
    slowloris-http) kind=slowloris tls= ;;
    slowloris-tls) kind=slowloris tls=--tls ;;
    *) die "unknown scenario $scen" ;;
  esac
  for mode in $ADDRS; do
    case $mode in one) src=127.0.0.2 ;; many) src="127.0.0.3-$last" ;; esac
    for s in $SERVERS; do
      case $s in dispatch) tp=$D_TLS hp=$D_HTTP ;; nginx) tp=$N_TLS hp=$N_HTTP ;; esac
      if [ -n "$tls" ]; then port=$tp; else port=$hp; fi
      log "$scen from $mode address(es): $s"
      "$PY" "$TOOL" scenario --server "$s" --name "$scen/$mode" --root "${ROOT[$s]}" --kind "$kind" $tls \
        --port "$port" --good-port "$port" --source "$src" --n "$N" --duration "$DURATION" --hs-conc "$HS_CONC" \
        --warmup "$WARMUP" --idle "$IDLE" --after "$AFTER" --out "$results" >/dev/null || log "WARNING: $scen/$mode against $s failed"
      kill -0 "${ROOT[$s]}" 2>/dev/null || die "$s died during $scen/$mode"
    done
  done
done

scen_list=()
for scen in $SCENARIOS; do for mode in $ADDRS; do scen_list+=("\"$scen/$mode\""); done; done
srv_list=()
for s in $SERVERS; do srv_list+=("\"$s\""); done
cat >"$run/meta.json" <<META
{ "date": "$(date -u +%Y-%m-%dT%H:%MZ)", "commit": "$commit",
  "hosts": ["a.localhost", "b.localhost"],
  "scenarios": [$(IFS=,; echo "${scen_list[*]}")], "servers": [$(IFS=,; echo "${srv_list[*]}")],
  "machine": { "nproc": $(nproc), "load average at the end": "$(cut -d' ' -f1-3 /proc/loadavg)",
               "nginx": "$(nginx -v 2>&1 | sed 's/^nginx version: //')", "descriptor limit": $NOFILE,
               "flood": "N=$N per flood, $DURATION s, after $WARMUP s of warm-up and $IDLE s measured idle, one address 127.0.0.2 or $MANY addresses 127.0.0.3-$last; good client from 127.0.0.1, a fresh connection per request (TLS 1.3 full handshake on TLS scenarios), a.localhost (the flooded vhost) and b.localhost (another tenant) alternating every 20 ms",
               "Dispatch": "$app, defaults for every timeout and limit, dispatcher and pools nofile $NOFILE",
               "nginx config": "worker_processes auto, worker_connections $NOFILE, default timeouts" } }
META
report="${REPORT:-$repo/bench/results/$(date -u +%Y-%m-%d)-$commit-floods.md}"
"$PY" "$TOOL" report "$results" "$run/meta.json" >"$report"
cp "$results" "${report%.md}.jsonl"
cat "$report"
log "report: $report"
