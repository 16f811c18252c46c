#!/usr/bin/env bash
# The worker's data path, A/B: several Dispatch installs side by side and nginx as the yardstick, in one
# run (docs/aot.md, "The worker's data path"). Each install is a directory holding Master, TlsDispatcher,
# Worker and dispatch-openssl.cnf (scripts/publish.sh's output, or a copy with one executable swapped);
# all get the same config on their own ports. Per round every server is started fresh and warmed up, then,
# one server after the other, the rows:
#   https13-ka       keep-alive HTTPS GET 1 KiB, TLS 1.3 (wrk -t WRK_THREADS -c WRK_CONNS)
#   https13-ka-100k  keep-alive HTTPS GET 100 KiB, TLS 1.3
#   h2-ka            HTTP/2 over TLS 1.3, GET 1 KiB, 10 streams at a time on each connection (h2load -t WRK_THREADS
#                    -c WRK_CONNS -m 10): what browsers speak
#   h2-ka-100k       the same, GET 100 KiB
#   http-ka          keep-alive plain HTTP GET 1 KiB
#   http-close       plain HTTP GET 1 KiB, one request per connection (wrk with Connection: close): CPU per connection
#   dl-tls13         10 MiB download, TLS 1.3 (wrk -t 1 -c 2): CPU per MiB
#   dl-http          10 MiB download, plain HTTP (wrk -t 1 -c 2): CPU per MiB
#   handshake13      full TLS 1.3 handshakes (bench/tool.py handshakes, no resumption): CPU per handshake
#   handshake13-req  full TLS 1.3 handshake + one GET / + close (as bench/run.sh's row): CPU per connection
#   handshake12      full TLS 1.2 handshakes, ECDHE-ECDSA-AES128-GCM-SHA256 over P-256 (as bench/run.sh pins them)
#   idle-tls13       IDLE_CONNS TLS 1.3 connections held idle (bench/tool.py idle-measure): KiB RSS per connection
#                    of the whole tree and of the Worker alone, after the handshake and after one GET each
# CPU is the whole server tree's (bench/tool.py measure: /proc utime+stime) around each wrk run, divided
# by the requests (MiB) wrk completed. Only the ratios to nginx in the same run mean anything here.
#
#   sudo INSTALLS="before=/dir/a after=/dir/b" bench/datapath.sh    report in bench/results/datapath-<date>-<commit>.md
# Environment: INSTALLS (required, NAME=DIR ...), ROUNDS=2, DURATION=15s, WRK_THREADS=2, WRK_CONNS=10,
#   ROWS="https13-ka https13-ka-100k http-ka dl-tls13" (also: h2-ka h2-ka-100k http-close dl-http handshake13 handshake13-req handshake12 idle-tls13), HANDSHAKES=1500,
#   IDLE_CONNS=2000, RESULTS_DIR, TITLE (a line for the report).
set -euo pipefail
# client ROW THREADS CONNS DURATION URL: the load of a keep-alive or download row (TLS 1.3 through OPENSSL_CONF):
# wrk, or h2load for the HTTP/2 rows. "$0 --client RUN ROW ..." runs it alone (under bench/tool.py measure).
client() {
  local row=$1 threads=$2 conns=$3 duration=$4 url=$5
  case $row in
    h2-*) "$run/client.sh" h2load -t "$threads" -c "$conns" -m 10 -D "$duration" "$url" ;;
    http-close) "$run/client.sh" wrk -t "$threads" -c "$conns" -d "$duration" -H "Connection: close" -s "$run/wrk-summary.lua" "$url" ;;
    *) "$run/client.sh" wrk -t "$threads" -c "$conns" -d "$duration" -s "$run/wrk-summary.lua" "$url" ;;
  esac
}
self=$(readlink -f "$0")
if [ "${1:-}" = --client ]; then
  run=$2
  shift 2
  client "$@"
  exit
fi
. "$(dirname "$0")/lib.sh"
bench_init datapath "Dispatch's master starts workers as tenant uids; nginx binds as root"
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-15s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-10}
ROWS=${ROWS:-https13-ka https13-ka-100k http-ka dl-tls13}
HANDSHAKES=${HANDSHAKES:-1500}
IDLE_CONNS=${IDLE_CONNS:-2000}
INSTALLS=${INSTALLS:?INSTALLS=\"NAME=DIR ...\" is required}
base=$(bench_path /var/lib/dispatch-bench-datapath)
run=$base/run
certs=$(bench_path /etc/dispatch-bench-datapath/certs)
results_dir=${RESULTS_DIR:-$repo/bench/results}
BENCH_LOGS=$run
bench_traps
bench_need nginx:nginx wrk:wrk unshare:util-linux

NOFILE=$(ulimit -Hn)
ulimit -n "$NOFILE"
declare -a NAMES=()
declare -A DIR_OF=()
for spec in $INSTALLS; do
  name=${spec%%=*}
  dir=${spec#*=}
  [ "$name" != nginx ] || die "an install cannot be called nginx"
  for f in Master TlsDispatcher Worker; do [ -e "$dir/$f" ] || die "$dir/$f missing"; done
  NAMES+=("$name")
  DIR_OF[$name]=$dir
done

# Content, certificates (root-owned, as certbot leaves them), host names for the clients.
mkdir -p "$base" "$run"
chmod 755 "$base" "$run"
rm -rf "$base/www"
mkdir -p "$base/www/a.localhost"
write_index "$base/www/a.localhost/index.html" a
"$PY" - "$base/www/a.localhost" <<'PY'
import base64, os, sys
open(sys.argv[1] + "/100k.txt", "wb").write(base64.encodebytes(os.urandom(76800))[:102400])
open(sys.argv[1] + "/10m.bin", "wb").write(os.urandom(10 * 1048576))
PY
chown -R 10001:10001 "$base/www/a.localhost"
chmod -R u=rwX,go=rX "$base/www"
copy_certs "$certs"
tls13_clients "$run"
tls_cnf_write "$run/tls12.cnf" "MinProtocol = TLSv1.2" "MaxProtocol = TLSv1.2" "Groups = P-256" "CipherString = ECDHE-ECDSA-AES128-GCM-SHA256"

# Configs: one per install, the same but for ports and control socket; nginx as bench/run.sh runs it.
declare -A TLS_PORT=() HTTP_PORT=()
# shellcheck disable=SC2046
set -- $(free_ports $((2 * ${#NAMES[@]} + 2)))
for name in "${NAMES[@]}" nginx; do
  TLS_PORT[$name]=$1
  HTTP_PORT[$name]=$2
  shift 2
done
for name in "${NAMES[@]}"; do
  dispatch_site_a_json "${TLS_PORT[$name]}" "${HTTP_PORT[$name]}" "$run/$name-control.sock" "$base" "$certs" "$NOFILE" >"$run/$name.json"
  "${DIR_OF[$name]}/Master" check --config "$run/$name.json" >&2 || die "$name's master refuses the config"
done
mkdir -p "$run/nginx"
cat >"$run/nginx/nginx.conf" <<NGINX
$(nginx_main "$run/nginx" 8192 "$NOFILE")
http {
$(nginx_http_common static "$run/nginx/tmp")
  server {
    listen 127.0.0.1:${TLS_PORT[nginx]} ssl http2;
    listen 127.0.0.1:${HTTP_PORT[nginx]};
$(nginx_site_a "$certs" "$base/www/a.localhost")
  }
}
NGINX
nginx -t -q -c "$run/nginx/nginx.conf" -p "$run/nginx" || die "nginx config"

row_args() {   # row_args ROW: scheme path threads conns
  case $1 in
    https13-ka) echo "https / $WRK_THREADS $WRK_CONNS" ;;
    https13-ka-100k) echo "https /100k.txt $WRK_THREADS $WRK_CONNS" ;;
    h2-ka) echo "https / $WRK_THREADS $WRK_CONNS" ;;
    h2-ka-100k) echo "https /100k.txt $WRK_THREADS $WRK_CONNS" ;;
    http-ka|http-close) echo "http / $WRK_THREADS $WRK_CONNS" ;;
    dl-tls13) echo "https /10m.bin 1 2" ;;
    dl-http) echo "http /10m.bin 1 2" ;;
    handshake13|handshake13-req|handshake12|idle-tls13) echo "https / 0 0" ;;
    *) die "unknown row $1" ;;
  esac
}
url_of() {   # url_of SERVER SCHEME PATH
  if [ "$2" = https ]; then echo "https://a.localhost:${TLS_PORT[$1]}$3"; else echo "http://a.localhost:${HTTP_PORT[$1]}$3"; fi
}

results=$run/results.jsonl
: >"$results"
loadavg_start=$(cat /proc/loadavg)
SERVERS=("${NAMES[@]}" nginx)
declare -A PID_OF=()
for round in $(seq 1 "$ROUNDS"); do
  log "=== round $round/$ROUNDS"
  for name in "${NAMES[@]}"; do
    start_bg "$name" "$run/$name-r$round.log" "${DIR_OF[$name]}/Master" --config "$run/$name.json"
    PID_OF[$name]=$LAST_PID
  done
  start_bg nginx "$run/nginx/stdout-r$round.log" nginx -c "$run/nginx/nginx.conf" -p "$run/nginx"
  PID_OF[nginx]=$LAST_PID
  # Dispatch: a plain request for an unknown host first (the dispatcher alone), as bench/run.sh does.
  for name in "${NAMES[@]}"; do
    "$PY" "$TOOL" wait-ready --port "${HTTP_PORT[$name]}" --host probe.invalid --any-status --timeout 60 || die "$name never answered"
  done
  sleep 1
  for s in "${SERVERS[@]}"; do
    "$PY" "$TOOL" wait-ready --port "${TLS_PORT[$s]}" --tls --timeout 60 || die "$s does not answer TLS"
    log "warm-up: $s"
    OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" handshakes --tls-version 1.3 --port "${TLS_PORT[$s]}" --n 300 --conc 4 --request / >/dev/null \
      || die "warm-up handshakes against $s failed"
    for row in $ROWS; do
      read -r scheme path threads conns <<<"$(row_args "$row")"
      [ "$threads" -gt 0 ] || continue
      client "$row" "$threads" "$conns" 2s "$(url_of "$s" "$scheme" "$path")" >/dev/null
    done
  done
  sleep 2
  for row in $ROWS; do
    read -r scheme path threads conns <<<"$(row_args "$row")"
    for s in "${SERVERS[@]}"; do
      log "$row: $s"
      if [ "$row" = handshake12 ]; then
        OPENSSL_CONF=$run/tls12.cnf "$PY" "$TOOL" measure --group "$s=${PID_OF[$s]}" --metric "$row" --server "$s" \
          --round "$round" --out "$results" -- \
          "$PY" "$TOOL" handshakes --tls-version 1.2 --cipher ECDHE-ECDSA-AES128-GCM-SHA256 --port "${TLS_PORT[$s]}" --n "$HANDSHAKES" --conc 4 >&2 \
          || log "WARNING: TLS 1.2 handshakes against $s had errors"
        continue
      fi
      if [ "$row" = handshake13 ] || [ "$row" = handshake13-req ]; then
        request=()
        [ "$row" = handshake13 ] || request=(--request /)
        OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" measure --group "$s=${PID_OF[$s]}" --metric "$row" --server "$s" \
          --round "$round" --out "$results" -- \
          "$PY" "$TOOL" handshakes --tls-version 1.3 --port "${TLS_PORT[$s]}" --n "$HANDSHAKES" --conc 4 "${request[@]}" >&2 \
          || log "WARNING: handshakes against $s had errors"
        continue
      fi
      if [ "$row" = idle-tls13 ]; then
        OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" idle-measure --group "$s=${PID_OF[$s]}" --port "${TLS_PORT[$s]}" \
          --tls-version 1.3 --n "$IDLE_CONNS" --conc 50 --metric-stem idle-tls13 --server "$s" --round "$round" --out "$results" >&2 \
          || log "WARNING: idle connections against $s incomplete"
        sleep 2
        continue
      fi
      url=$(url_of "$s" "$scheme" "$path")
      client "$row" "$threads" "$conns" 2s "$url" >/dev/null
      OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" measure --group "$s=${PID_OF[$s]}" --metric "$row" --server "$s" \
        --round "$round" --out "$results" -- \
        env "OPENSSL_CONF=$run/tls13.cnf" "$self" --client "$run" "$row" "$threads" "$conns" "$DURATION" "$url" >&2 \
        || log "WARNING: the client against $s failed"
    done
  done
  stop_all
  sleep 1
done
loadavg_end=$(cat /proc/loadavg)

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$results_dir"
report="$results_dir/datapath-$(date -u +%Y-%m-%d)-$commit.md"
n=2
while [ -e "$report" ]; do report="$results_dir/datapath-$(date -u +%Y-%m-%d)-$commit-$n.md"; n=$((n + 1)); done
installs_desc=$(for name in "${NAMES[@]}"; do printf '%s=%s ' "$name" "${DIR_OF[$name]}"; done)
"$PY" - "$results" "$ROUNDS" "$commit" "$loadavg_start" "$loadavg_end" "$DURATION" "$installs_desc" "${TITLE:-}" "${NAMES[@]}" >"$report" <<'PY'
import json, statistics, sys
path, rounds, commit, la0, la1, duration, installs, title = sys.argv[1:9]
names = sys.argv[9:]
recs = [json.loads(l) for l in open(path)]
rows = [("https13-ka", "keep-alive TLS 1.3 GET 1 KiB: CPU µs / request", "count", 1e6),
        ("https13-ka-100k", "keep-alive TLS 1.3 GET 100 KiB: CPU µs / request", "count", 1e6),
        ("h2-ka", "HTTP/2 over TLS 1.3, GET 1 KiB, 10 streams a connection: CPU µs / request", "count", 1e6),
        ("h2-ka-100k", "HTTP/2 over TLS 1.3, GET 100 KiB, 10 streams a connection: CPU µs / request", "count", 1e6),
        ("http-ka", "keep-alive plain HTTP GET 1 KiB: CPU µs / request", "count", 1e6),
        ("http-close", "plain HTTP GET 1 KiB, one request per connection: CPU µs / connection", "count", 1e6),
        ("dl-tls13", "10 MiB download, TLS 1.3: CPU ms / MiB", "mib", 1e3),
        ("dl-http", "10 MiB download, plain HTTP: CPU ms / MiB", "mib", 1e3),
        ("handshake13", "full TLS 1.3 handshake (X25519, ECDSA, no resumption): CPU ms / handshake", "count", 1e3),
        ("handshake13-req", "full TLS 1.3 handshake + one GET / (1 KiB) + close: CPU ms / connection", "count", 1e3),
        ("handshake12", "full TLS 1.2 handshake (ECDHE-ECDSA-AES128-GCM-SHA256, P-256): CPU ms / handshake", "count", 1e3)]
def values(metric, server, unit, scale):
    out = []
    for r in recs:
        if r["metric"] != metric or r["server"] != server or r.get("rc") != 0:
            continue
        c = r["client"]
        n = c.get("bytes", 0) / 2**20 if unit == "mib" else c.get("count", 0)
        if n > 0:
            out.append((r["cpu"][server]["cpu_s"] / n * scale, c.get("rate"), r["cpu"][server].get("sys_roles", {}), r["cpu"][server].get("roles", {})))
    return out
def med(xs):
    return statistics.median(xs) if xs else None
def fmt(x, d=1):
    return "n/a" if x is None else f"{x:.{d}f}"
print(f"# The worker's data path, A/B against nginx — {commit}\n")
if title:
    print(title + "\n")
print(f"bench/datapath.sh, {rounds} round(s) (medians; range in parentheses), {duration} of wrk per server, row and round "
      f"(after 2 s of warm-up); load average {la0.split()[0]} at start, {la1.split()[0]} at end (2 cores, shared). "
      f"Installs: {installs.strip()}. CPU is the whole server tree's; the ratio is install ÷ nginx in the same run.\n")
print("| row | " + " | ".join(names) + " | nginx | " + " | ".join(f"{n} ÷ nginx" for n in names) + " |")
print("|---|" + "---|" * (2 * len(names) + 1))
for metric, label, unit, scale in rows:
    vals = {s: values(metric, s, unit, scale) for s in names + ["nginx"]}
    if not any(vals.values()):
        continue
    def cell(s):
        xs = [v[0] for v in vals[s]]
        if not xs:
            return "n/a"
        d = 3 if scale == 1e3 else 1
        return fmt(med(xs), d) + (f" ({fmt(min(xs), d)}–{fmt(max(xs), d)})" if len(xs) > 1 else "")
    n = med([v[0] for v in vals["nginx"]])
    ratios = []
    for s in names:
        xs = [v[0] for v in vals[s]]
        ratios.append("n/a" if not xs or not n else f"{med(xs) / n:.2f}×")
    print(f"| {label} | " + " | ".join(cell(s) for s in names + ["nginx"]) + " | " + " | ".join(ratios) + " |")
    rates = {s: med([v[1] for v in vals[s] if v[1]]) for s in names + ["nginx"]}
    rn = rates["nginx"]
    print(f"|   requests/s (higher is better) | " + " | ".join(fmt(rates[s], 0) for s in names + ["nginx"]) + " | "
          + " | ".join("n/a" if not rates[s] or not rn else f"{rates[s] / rn:.2f}×" for s in names) + " |")
idle_rows = [("idle-tls13", "idle TLS 1.3 connection, handshake only"), ("idle-tls13-req", "idle TLS 1.3 connection, after one GET")]
def idle_values(metric, server, role):
    out = []
    for r in recs:
        if r["metric"] != metric or r["server"] != server:
            continue
        n = r["client"].get("open") or 0
        if n <= 0:
            continue
        a, b = r["after"].get(server, {}), r["before"].get(server, {})
        if role is None:
            out.append((a.get("rss_kib", 0) - b.get("rss_kib", 0)) / n)
        else:
            ar, br = a.get("roles", {}).get(role, {}), b.get("roles", {}).get(role, {})
            out.append((ar.get("rss_kib", 0) - br.get("rss_kib", 0)) / n)
    return out
for metric, label in idle_rows:
    for role, what in ((None, "whole tree"), ("Worker", "Worker only")):
        if role is not None and not any(idle_values(metric, s, role) for s in names):
            continue
        vals = {s: idle_values(metric, s, role) if s != "nginx" or role is None else [] for s in names + ["nginx"]}
        if not any(vals.values()):
            continue
        n = med(vals["nginx"])
        print(f"| {label}: KiB RSS / connection ({what}) | " + " | ".join(fmt(med(vals[s])) if vals[s] else "n/a" for s in names + ["nginx"]) + " | "
              + " | ".join("n/a" if not vals[s] or not n or role is not None else f"{med(vals[s]) / n:.2f}×" for s in names) + " |")
print("\nKernel share of each server's CPU (system ÷ total, summed over rounds):\n")
for metric, label, unit, scale in rows:
    parts = []
    for s in names + ["nginx"]:
        rs = [r for r in recs if r["metric"] == metric and r["server"] == s and r.get("rc") == 0]
        tot = sum(r["cpu"][s]["cpu_s"] for r in rs)
        sy = sum(sum(r["cpu"][s].get("sys_roles", {}).values()) for r in rs)
        if tot > 0:
            parts.append(f"{s} {sy / tot:.0%}")
    if parts:
        print(f"- {metric}: " + ", ".join(parts))
PY
cp "$results" "${report%.md}.jsonl"
cat "$report"
log "report: $report (raw records: ${report%.md}.jsonl)"
