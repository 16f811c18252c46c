#!/usr/bin/env bash
# NativeAOT against JIT (tiered PGO), steady-state CPU, with nginx as the yardstick, in one run
# (docs/aot.md). Two Dispatch installs side by side, the same config on other ports:
#   aot: the executables scripts/publish.sh ships (NativeAOT);
#   jit: the same sources published framework-dependent (dotnet publish -p:PublishAot=false: the JIT,
#        tiered compilation with dynamic PGO, .NET's default);
# and nginx serving the same file with the same certificate. Per round, every server is started
# fresh, warmed up (handshakes and requests: the JIT's tiers and PGO settle), then measured:
#   - full TLS 1.3 handshakes (X25519, ECDSA, no resumption): CPU of the dispatcher per handshake
#     (Dispatch terminates TLS in the TlsDispatcher and hands the session to the worker);
#   - keep-alive HTTPS requests for a 1 KiB file over TLS 1.3 (wrk): CPU of the worker per request
#     (the worker runs the record layer of handed sessions).
# CPU is read from /proc (user + system of the role's processes) around each client run (bench/tool.py).
#
#   sudo bench/aot.sh            report in bench/results/aot-<date>-<commit>.md
# Environment: ROUNDS=3 HANDSHAKES=2000 WARMUP_HANDSHAKES=500 HS_CONC=4 DURATION=10s WRK_THREADS=2
#   WRK_CONNS=10 SKIP_INSTALL=1 (no apt-get) DISPATCH_PUBLISHED=DIR (AOT executables already published)
#   JIT_PUBLISHED=DIR (the framework-dependent publish already made)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init aot "Dispatch's master starts workers as tenant uids; nginx binds as root"
ROUNDS=${ROUNDS:-3}
HANDSHAKES=${HANDSHAKES:-2000}
WARMUP_HANDSHAKES=${WARMUP_HANDSHAKES:-500}
HS_CONC=${HS_CONC:-4}
DURATION=${DURATION:-10s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-10}
base=$(bench_path /var/lib/dispatch-bench-aot)
run=$base/run
certs=$(bench_path /etc/dispatch-bench-aot/certs)
results_dir=${RESULTS_DIR:-$repo/bench/results}

bench_traps
BENCH_LOGS=$run
bench_need nginx:nginx wrk:wrk unshare:util-linux
command -v dotnet >/dev/null || die "dotnet not found"

# 1. The two Dispatch installs.
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
aot_app=$(bench_path /usr/local/lib/dispatch-bench-aot)
jit_app=$(bench_path /usr/local/lib/dispatch-bench-jit)
log "publishing and staging the NativeAOT executables into $aot_app"
DISPATCH_APP='' stage_dispatch "$aot_app"
log "publishing the JIT (framework-dependent) build into $jit_app"
rm -rf "$jit_app"
mkdir -p "$jit_app"
if [ -n "${JIT_PUBLISHED:-}" ]; then
  cp -a "$JIT_PUBLISHED/." "$jit_app/"
else
  for p in Master TlsDispatcher Worker; do
    dotnet publish "$repo/src/$p/$p.csproj" -c Release -p:PublishAot=false --self-contained false -o "$jit_app" \
      --disable-build-servers --nologo -v quiet -clp:ErrorsOnly >"$base.jit.log" 2>&1 || { tail -20 "$base.jit.log" >&2; die "JIT publish of $p failed"; }
  done
fi
chown -R root:root "$jit_app"
chmod -R go-w "$jit_app"
chmod 755 "$jit_app"
[ -f "$jit_app/Worker.dll" ] && [ ! -f "$aot_app/Worker.dll" ] || die "the two installs are not JIT and AOT"

# 2. Content, certificates (as certbot leaves them), host names for the clients.
mkdir -p "$base" "$run"
chmod 755 "$base" "$run"
site_a_www "$base"
copy_certs "$certs"
tls13_clients "$run"

# 3. Configs.
read -r P_AOT P_JIT P_NGINX P_AOT_HTTP P_JIT_HTTP <<<"$(free_ports 5)"
dispatch_site_a_json "$P_AOT" "$P_AOT_HTTP" "$run/aot-control.sock" "$base" "$certs" >"$run/aot.json"
dispatch_site_a_json "$P_JIT" "$P_JIT_HTTP" "$run/jit-control.sock" "$base" "$certs" >"$run/jit.json"
"$aot_app/Master" check --config "$run/aot.json" >&2 || die "the AOT master refuses the config"
"$jit_app/Master" check --config "$run/jit.json" >&2 || die "the JIT master refuses the config"
mkdir -p "$run/nginx/tmp"
cat >"$run/nginx/nginx.conf" <<NGINX
$(nginx_main "$run/nginx" 4096)
http {
$(nginx_http_common "$run/nginx/tmp")
  server {
    listen 127.0.0.1:$P_NGINX ssl;
$(nginx_site_a "$certs" "$base/www/a.localhost")
  }
}
NGINX
nginx -t -q -c "$run/nginx/nginx.conf" -p "$run/nginx" || die "nginx config"

# 4. Rounds.
results=$run/results.jsonl
: >"$results"
loadavg_start=$(cat /proc/loadavg)
SERVERS=(aot jit nginx)
port_of() { case $1 in aot) echo "$P_AOT" ;; jit) echo "$P_JIT" ;; nginx) echo "$P_NGINX" ;; esac; }
declare -A PID_OF=()
for round in $(seq 1 "$ROUNDS"); do
  log "=== round $round/$ROUNDS"
  start_bg aot "$run/aot-r$round.log" "$aot_app/Master" --config "$run/aot.json"
  PID_OF[aot]=$LAST_PID
  start_bg jit "$run/jit-r$round.log" "$jit_app/Master" --config "$run/jit.json"
  PID_OF[jit]=$LAST_PID
  start_bg nginx "$run/nginx/stdout-r$round.log" nginx -c "$run/nginx/nginx.conf" -p "$run/nginx"
  PID_OF[nginx]=$LAST_PID
  # Dispatch first answers a plain request for an unknown host (the dispatcher alone, as bench/run.sh
  # does before its first real request), then TLS.
  "$PY" "$TOOL" wait-ready --port "$P_AOT_HTTP" --host probe.invalid --any-status --timeout 60 || die "aot never answered"
  "$PY" "$TOOL" wait-ready --port "$P_JIT_HTTP" --host probe.invalid --any-status --timeout 60 || die "jit never answered"
  sleep 1
  for s in "${SERVERS[@]}"; do
    "$PY" "$TOOL" wait-ready --port "$(port_of "$s")" --tls --timeout 60 || die "$s does not answer TLS"
  done
  for s in "${SERVERS[@]}"; do
    log "warm-up: $s"
    OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" handshakes --tls-version 1.3 --port "$(port_of "$s")" \
      --n "$WARMUP_HANDSHAKES" --conc "$HS_CONC" --request / >/dev/null || die "warm-up handshakes against $s failed"
    OPENSSL_CONF=$run/tls13.cnf "$run/client.sh" wrk -t "$WRK_THREADS" -c "$WRK_CONNS" -d 5s "https://a.localhost:$(port_of "$s")/" >/dev/null
  done
  sleep 2
  for s in "${SERVERS[@]}"; do
    log "TLS 1.3 handshakes: $s"
    OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" measure --group "$s=${PID_OF[$s]}" --metric handshake13 --server "$s" \
      --round "$round" --out "$results" -- \
      "$PY" "$TOOL" handshakes --tls-version 1.3 --port "$(port_of "$s")" --n "$HANDSHAKES" --conc "$HS_CONC" >&2 \
      || log "WARNING: handshakes against $s had errors"
  done
  for s in "${SERVERS[@]}"; do
    log "keep-alive HTTPS (TLS 1.3, 1 KiB): $s"
    OPENSSL_CONF=$run/tls13.cnf "$PY" "$TOOL" measure --group "$s=${PID_OF[$s]}" --metric https13-ka --server "$s" \
      --round "$round" --out "$results" -- \
      "$run/client.sh" wrk -t "$WRK_THREADS" -c "$WRK_CONNS" -d "$DURATION" -s "$run/wrk-summary.lua" "https://a.localhost:$(port_of "$s")/" >&2 \
      || log "WARNING: wrk against $s failed"
  done
  "$PY" "$TOOL" mem --group "aot=${PID_OF[aot]}" --group "jit=${PID_OF[jit]}" --group "nginx=${PID_OF[nginx]}" >"$run/mem-r$round.json" || true
  stop_all
  sleep 1
done
loadavg_end=$(cat /proc/loadavg)

# 5. Report: medians over rounds, CPU per unit of the role that does the work, ratios.
mkdir -p "$results_dir"
report="$results_dir/aot-$(date -u +%Y-%m-%d)-$commit.md"
n=2
while [ -e "$report" ]; do report="$results_dir/aot-$(date -u +%Y-%m-%d)-$commit-$n.md"; n=$((n + 1)); done
"$PY" - "$results" "$run" "$ROUNDS" "$commit" "$loadavg_start" "$loadavg_end" "$HANDSHAKES" "$DURATION" >"$report" <<'PY'
import glob, json, statistics, sys
path, run, rounds, commit, la0, la1, hs, duration = sys.argv[1:9]
recs = [json.loads(l) for l in open(path)]
def per_unit(metric, server, roles):
    """Median over rounds of CPU microseconds per unit (handshake / request) of the given roles, and of the whole server."""
    mine, total = [], []
    for r in recs:
        if r["metric"] != metric or r["server"] != server or r.get("rc") != 0:
            continue
        n = r["client"].get("count") or 0
        if n <= 0:
            continue
        cpu = r["cpu"][server]
        mine.append(sum(v for k, v in cpu["roles"].items() if k in roles) / n * 1e6)
        total.append(cpu["cpu_s"] / n * 1e6)
    return (statistics.median(mine) if mine else None, statistics.median(total) if total else None, len(mine))
rows = [
    ("TLS 1.3 full handshake: dispatcher CPU per handshake", "handshake13", {"aot": ["TlsDispatcher"], "jit": ["TlsDispatcher"], "nginx": ["nginx-worker"]}),
    ("TLS 1.3 full handshake: whole server CPU per handshake", "handshake13", None),
    ("keep-alive HTTPS 1 KiB (TLS 1.3): worker CPU per request", "https13-ka", {"aot": ["Worker"], "jit": ["Worker"], "nginx": ["nginx-worker"]}),
    ("keep-alive HTTPS 1 KiB (TLS 1.3): whole server CPU per request", "https13-ka", None),
]
def fmt(x):
    return "n/a" if x is None else f"{x:.1f}"
def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"
print(f"# NativeAOT vs JIT (tiered PGO), steady-state CPU — {commit}\n")
print(f"bench/aot.sh, {rounds} round(s) (medians), {hs} handshakes and {duration} of wrk per server and round; "
      f"load average {la0.split()[0]} at start, {la1.split()[0]} at end (2 cores, shared).\n")
print("| row | AOT µs | JIT µs | nginx µs | AOT / JIT | AOT / nginx | JIT / nginx |")
print("|---|---|---|---|---|---|---|")
for label, metric, roles in rows:
    vals = {}
    for s in ("aot", "jit", "nginx"):
        mine, total, n = per_unit(metric, s, roles[s] if roles else [])
        vals[s] = mine if roles else total
    print(f"| {label} | {fmt(vals['aot'])} | {fmt(vals['jit'])} | {fmt(vals['nginx'])} | {ratio(vals['aot'], vals['jit'])} | {ratio(vals['aot'], vals['nginx'])} | {ratio(vals['jit'], vals['nginx'])} |")
rates = {}
for s in ("aot", "jit", "nginx"):
    xs = [r["client"].get("rate") for r in recs if r["metric"] == "https13-ka" and r["server"] == s and r["client"].get("rate")]
    rates[s] = statistics.median(xs) if xs else None
print(f"\nkeep-alive requests/s (median): AOT {fmt(rates['aot'])}, JIT {fmt(rates['jit'])}, nginx {fmt(rates['nginx'])}.\n")
mems = sorted(glob.glob(f"{run}/mem-r*.json"))
if mems:
    m = json.load(open(mems[-1]))
    print("Memory after the last round (RSS / PSS KiB per role):\n")
    for s in ("aot", "jit"):
        roles = m.get(s, {}).get("roles", {})
        print(f"- {s}: " + ", ".join(f"{k} {v['rss_kib']} / {v['pss_kib']}" for k, v in sorted(roles.items())))
PY
cat "$report"
log "report: $report"
