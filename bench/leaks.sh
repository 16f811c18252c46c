#!/usr/bin/env bash
# Leaks: CONNECTIONS mixed connections (bench/leaks.py: plain HTTP, TLS 1.3 and 1.2 handed to the worker, TLS pumped
# by the dispatcher, h2, passthrough, and bad ones: malformed ClientHellos, garbage and truncated request heads,
# resets mid-handshake and mid-head) against one fresh Dispatch with three tenants; every process's descriptors and
# RSS before (after a warm-up), right after, and after SETTLE seconds. Prints a Markdown table per run.
# RUNS=N repeats the mix N times against the same running instance (one table per run, each against the same
# "before"), which tells memory that levels off from memory that grows run after run.
#
#   sudo bench/leaks.sh                    # 100,000 connections; report also in bench/results/leaks-<date>-<hash>.md
#
# Environment (all optional):
#   CONNECTIONS=100000  CONCURRENCY=32  SETTLE=30  RUNS=1
#   LOG_LEVEL=Information   Debug shows each quiet trim: GC heap and anonymous RSS before, after the collection, after malloc_trim
#   LEAKS_BASE=/var/lib/dispatch-leaks   where the instance runs (its config, logs, snapshots)
#   DISPATCH_APP=DIR    an already staged Dispatch (scripts/stage.sh); default: stage Release into $base/app
# No nginx column: the question is whether Dispatch's own processes give back what the connections took, which
# nginx's numbers do not answer (the CI-sized version is tests/Dispatch.Tests/EndToEnd/LeakTests.cs).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init leaks "workers run as tenant uids"
base=${LEAKS_BASE:-$(bench_path /var/lib/dispatch-leaks)}
CONNECTIONS=${CONNECTIONS:-100000}
CONCURRENCY=${CONCURRENCY:-32}
SETTLE=${SETTLE:-30}
RUNS=${RUNS:-1}
mkdir -p "$base"
chmod 755 "$base"
stage_dispatch "$base/app"

dir="$base/run"
rm -rf "$dir"
mkdir -p "$dir/www"
chmod 755 "$dir" "$dir/www"
copy_certs "$dir/certs"
# Tenant c's own copy (passthrough: only its worker reads the key).
cp -a "$dir/certs" "$dir/c-certs"
chown -R 10003:10003 "$dir/c-certs"
chmod 700 "$dir/c-certs"
read -r http tls <<<"$(free_ports 2)"
"$PY" - "$dir" "$http" "$tls" <<'EOF'
import json, os, sys
d, http, tls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pools, vhosts = {}, {}
for name, uid in (("a", 10001), ("b", 10002), ("c", 10003)):
    root = f"{d}/www/{name}"
    os.makedirs(root, exist_ok=True)
    with open(f"{root}/index.html", "w") as f:
        f.write(name.upper())
    for p in (root, f"{root}/index.html"):
        os.chown(p, uid, uid)
    os.chmod(root, 0o700)
    pools[name] = {"user": str(uid), "group": str(uid), "idleTimeout": "600m"}
vhosts["a.localhost"] = {"pool": "a", "root": f"{d}/www/a", "tls": "terminate", "engine": "openssl", "certDir": f"{d}/certs/live/a.localhost"}
vhosts["b.localhost"] = {"pool": "b", "root": f"{d}/www/b", "tls": "terminate", "certDir": f"{d}/certs/live/b.localhost"}
vhosts["c.localhost"] = {"pool": "c", "root": f"{d}/www/c", "tls": "passthrough", "certDir": f"{d}/c-certs/live/c.localhost"}
config = {
    "listen": [{"endpoint": f"127.0.0.1:{http}", "protocol": "http"}, {"endpoint": f"127.0.0.1:{tls}", "protocol": "tls"}],
    "dispatcher": {"user": "10000"},
    "pools": pools, "vhosts": vhosts,
    "control": {"socket": f"{d}/control.sock"},
    "log": {"level": os.environ.get("LOG_LEVEL", "Information")},
}
with open(f"{d}/dispatch.json", "w") as f:
    json.dump(config, f)
EOF
BENCH_LOGS=$dir
bench_traps
start_bg dispatch "$dir/master.log" "$app/Master" --config "$dir/dispatch.json"
master=$LAST_PID
wait_dispatch_ready "$dir/master.log" "$master"

mix() {  # mix COUNT: bench/leaks.py against this Dispatch; prints its JSON summary
  "$PY" "$bench/leaks.py" --http "$http" --tls "$tls" --ca "$repo/certs-sample/ca.pem" \
    --count "$1" --concurrency "$CONCURRENCY" --plain-host b.localhost --handed-host b.localhost \
    --pumped-host a.localhost --passthrough-host c.localhost
}
tree() {  # the master and every process under it
  local pids=("$master") frontier=("$master") next p
  while [ ${#frontier[@]} -gt 0 ]; do
    next=()
    for p in "${frontier[@]}"; do
      for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do pids+=("$c"); next+=("$c"); done
    done
    frontier=("${next[@]}")
  done
  printf '%s\n' "${pids[@]}" | sort -n
}
snapshot() {  # snapshot LABEL: "pid name fds rss_kb anon_kb" per process (anon: RssAnon, the heaps; the rest is mapped files)
  for p in $(tree); do
    [ -e "/proc/$p" ] || continue
    printf '%s %s %s %s %s\n' "$p" "$(cat /proc/"$p"/comm)" "$(ls /proc/"$p"/fd | wc -l)" \
      "$(awk '/^VmRSS:/ { print $2 }' /proc/"$p"/status)" "$(awk '/^RssAnon:/ { print $2 }' /proc/"$p"/status)"
    cat /proc/"$p"/smaps_rollup >"$dir/$1-$p.smaps" 2>/dev/null || true
  done >"$dir/$1.txt"
}

mix 110 >/dev/null      # warm-up: every kind ten times, every worker started
sleep 2
snapshot before

report="$repo/bench/results/leaks-$(date +%F)-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo local).md"
for run in $(seq 1 "$RUNS"); do
  started=$(date +%s)
  status=0
  summary=$(mix "$CONNECTIONS") || status=$?
  elapsed=$(( $(date +%s) - started ))
  sleep 2
  snapshot "after-$run"
  sleep "$SETTLE"
  snapshot "settled-$run"
  {
    echo
    echo "## Leaks: $CONNECTIONS mixed connections (bench/leaks.sh, run $run of $RUNS against one instance, $CONCURRENCY at a time, ${elapsed} s; settle $SETTLE s)"
    echo
    echo "Mix: $summary"
    echo
    echo "| process | fds before | fds after | fds settled | RSS MB before | RSS MB after | RSS MB settled | anon MB before | anon MB settled |"
    echo "|---|---|---|---|---|---|---|---|---|"
    join <(sort "$dir/before.txt") <(sort "$dir/after-$run.txt") | join - <(sort "$dir/settled-$run.txt") |
      awk '{ printf "| %s %s | %d | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", $2, $1, $3, $7, $11, $4/1024, $8/1024, $12/1024, $5/1024, $13/1024 }'
    for p in $(cut -d' ' -f1 "$dir/before.txt"); do
      grep -q "^$p " "$dir/settled-$run.txt" || echo "| process $p ($(grep "^$p " "$dir/before.txt" | cut -d' ' -f2)) | gone after the run | | | | | | | |"
    done
  } | tee -a "$report"
  [ "$status" -eq 0 ] || { echo "leaks.py: some good connections failed (see the mix above)" >&2; exit 1; }
done
