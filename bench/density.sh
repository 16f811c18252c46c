#!/usr/bin/env bash
# Density: memory of N pools with one idle worker each, as tenants per host. For each N: a fresh master
# with N pools (uids 20001..), one vhost each, one request per pool (so one worker each), then IDLE_WAIT
# seconds of idle; then RSS, PSS and private dirty (smaps_rollup) of every worker, the master and the
# dispatcher. Tenants per HOST_GIB = (HOST_GIB - master - dispatcher) / mean PSS of an idle worker.
#
#   sudo bench/density.sh [N ...]          default: 1 100 1000; prints a Markdown table
#
# Environment (all optional):
#   DISPATCH_APP=DIR   an already staged Dispatch (scripts/stage.sh); default: stage Release into $base/app
#   WORKER_DIR=DIR     a published Worker (e.g. NativeAOT) used instead of the staged one (as in bench/coldstart.sh)
#   IDLE_WAIT=25       seconds idle before measuring (the thread pool retires idle threads after 20 s)
#   HOST_GIB=24        host size for the tenants-per-host figure
#   WORKER_MB=80       memory budgeted per worker: an N that does not fit in MemAvailable is not run (said so);
#                      NativeAOT workers default to 25
# No nginx column: nginx has no per-tenant process to compare with (php-fpm pools would be the peer).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init density "workers run as tenant uids"
base=$(bench_path /var/lib/dispatch-density)
IDLE_WAIT=${IDLE_WAIT:-25}
HOST_GIB=${HOST_GIB:-24}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 100 1000)
bench_traps
mkdir -p "$base"
chmod 755 "$base"
stage_dispatch "$base/app"
with_worker_dir "$base"
if [ -e "$app/Worker.dll" ]; then
  worker_kind="JIT"
else
  worker_kind="NativeAOT"
  WORKER_MB=${WORKER_MB:-25}
fi
WORKER_MB=${WORKER_MB:-80}

# Sum of a smaps_rollup field (kB) over pids.
sum_field() {
  local field=$1; shift
  local total=0 v
  for pid in "$@"; do
    v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

echo
echo "## Density: idle pools per host (bench/density.sh, $worker_kind worker, idle $IDLE_WAIT s, smaps_rollup)"
echo
echo "| pools (1 idle worker each) | workers RSS MB (mean) | workers PSS MB (total / mean) | workers private dirty MB (mean) | master RSS / PSS / private dirty MB | dispatcher RSS / PSS / private dirty MB | total PSS MB | tenants per $HOST_GIB GiB | spawn s |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in "${counts[@]}"; do
  avail_mb=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) / 1024 ))
  if [ $((n * WORKER_MB)) -gt $((avail_mb * 8 / 10)) ]; then
    echo "| $n | not run: needs about $((n * WORKER_MB)) MB, $avail_mb MB available | | | | | | | |"
    continue
  fi
  dir="$base/n$n"
  rm -rf "$dir"
  mkdir -p "$dir/www"
  chmod 755 "$dir" "$dir/www"
  port=$(free_ports 1)
  "$PY" - "$dir" "$n" "$port" <<'EOF'
import json, os, sys
d, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pools, vhosts = {}, {}
for i in range(1, n + 1):
    uid = 20000 + i
    root = f"{d}/www/p{i}"
    os.makedirs(root, exist_ok=True)
    with open(f"{root}/index.html", "w") as f:
        f.write("idle\n")
    for p in (root, f"{root}/index.html"):
        os.chown(p, uid, uid)
    os.chmod(root, 0o700)
    pools[f"p{i}"] = {"user": str(uid), "group": str(uid), "maxWorkers": 1, "idleTimeout": "600m"}
    vhosts[f"p{i}.localhost"] = {"pool": f"p{i}", "root": root}
config = {
    "listen": [{"endpoint": f"127.0.0.1:{port}", "protocol": "http"}],
    "dispatcher": {"user": "10000", "workerWait": "120s"},
    "pools": pools, "vhosts": vhosts,
    "control": {"socket": f"{d}/control.sock"},
    "limits": {"maxWorkers": n + 16},
}
with open(f"{d}/dispatch.json", "w") as f:
    json.dump(config, f)
EOF
  mlog="$dir/master.log"
  BENCH_LOGS=$dir
  start_bg master "$mlog" "$app/Master" --config "$dir/dispatch.json"
  master=$LAST_PID
  wait_dispatch_ready "$mlog" "$master" 120
  spawn_start=$(date +%s%N)
  for i in $(seq 1 "$n"); do
    curl -s -o /dev/null --max-time 120 -H "Host: p$i.localhost" "http://127.0.0.1:$port/" || echo "request to p$i failed" >&2
  done
  spawn_s=$(( ($(date +%s%N) - spawn_start) / 1000000000 ))
  sleep "$IDLE_WAIT"
  mapfile -t workers < <(grep -oE "Worker [0-9]+ for pool p[0-9]+ ready" "$mlog" | awk '{ print $2 }')
  read -r master_pid dispatcher <<<"$(dispatch_pids "$mlog")"
  live=()
  for p in "${workers[@]}"; do [ -e "/proc/$p" ] && live+=("$p"); done
  w=${#live[@]}
  [ "$w" -gt 0 ] || die "no idle worker alive for N=$n; see $mlog"
  rss=$(sum_field Rss "${live[@]}")
  pss=$(sum_field Pss "${live[@]}")
  dirty=$(sum_field Private_Dirty "${live[@]}")
  mpss=$(sum_field Pss "$master_pid")
  dpss=$(sum_field Pss "$dispatcher")
  mrss=$(sum_field Rss "$master_pid")
  drss=$(sum_field Rss "$dispatcher")
  mdirty=$(sum_field Private_Dirty "$master_pid")
  ddirty=$(sum_field Private_Dirty "$dispatcher")
  total=$((pss + mpss + dpss))
  tenants=$(( (HOST_GIB * 1024 * 1024 - mpss - dpss) * w / pss ))
  awk -v n="$n" -v w="$w" -v rss="$rss" -v pss="$pss" -v dirty="$dirty" -v m="$mpss" -v d="$dpss" -v t="$total" -v ten="$tenants" \
      -v mr="$mrss" -v md="$mdirty" -v dr="$drss" -v dd="$ddirty" -v sp="$spawn_s" 'BEGIN {
    printf "| %d (%d workers measured) | %.1f | %.0f / %.1f | %.1f | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %.0f | %d | %.0f |\n", n, w, rss/w/1024, pss/1024, pss/w/1024, dirty/w/1024, mr/1024, m/1024, md/1024, dr/1024, d/1024, dd/1024, t/1024, ten, sp }'
  stop_pid "$master"
done
