#!/usr/bin/env bash
# Runs the whole test suite (the README's `dotnet test Dispatch.sln`, as root) N times in a row while
# a CPU hog keeps another core busy, and reports what failed: per round the tests run and the
# failures, at the end each failing test with how many rounds it failed in.
#   usage: scripts/flake-hunt.sh N [RESULTS_DIR]
# Environment: HOGS (busy loops, default 1), HOG_MAX_SECONDS (each hog's hard limit, default 1200 per
# round). The hogs die with the script (or at their limit, whichever comes first). Exit status 0 only
# if no round had a failure. Each round's console output and .trx files stay in RESULTS_DIR.
set -euo pipefail
rounds=${1:?usage: scripts/flake-hunt.sh N [RESULTS_DIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$(mktemp -d /tmp/flake-hunt.XXXXXX)}
hogs=${HOGS:-1}
hog_max=${HOG_MAX_SECONDS:-$((rounds * 1200))}
mkdir -p "$out"

hog_pids=()
stop_hogs() {
  for pid in "${hog_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap stop_hogs EXIT
for _ in $(seq 1 "$hogs"); do
  timeout "$hog_max" sh -c 'while :; do :; done' &
  hog_pids+=($!)
done
echo "flake hunt: $rounds round(s) of 'dotnet test Dispatch.sln' with $hogs CPU hog(s) (at most ${hog_max} s); results in $out"

# Prints "RUN FAILED" then one line per failed test: "name<TAB>first line of its message".
summarize() {
  python3 - "$@" <<'EOF'
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
run = failed = 0
lines = []
for path in sys.argv[1:]:
    root = ET.parse(path).getroot()
    c = root.find("t:ResultSummary/t:Counters", ns)
    if c is not None:
        run += int(c.get("executed", "0"))
        failed += int(c.get("failed", "0")) + int(c.get("error", "0")) + int(c.get("timeout", "0")) + int(c.get("aborted", "0"))
    for r in root.iter("{%s}UnitTestResult" % ns["t"]):
        if r.get("outcome") not in ("Passed", "NotExecuted", "Inconclusive"):
            m = r.find("t:Output/t:ErrorInfo/t:Message", ns)
            msg = (m.text or "").strip().splitlines()[0] if m is not None and m.text else ""
            lines.append("%s\t%s" % (r.get("testName"), msg[:200]))
print(run, failed)
for l in lines:
    print(l)
EOF
}

declare -A fail_count=()
total_failed=0
for round in $(seq 1 "$rounds"); do
  dir="$out/round-$round"
  mkdir -p "$dir"
  start=$(date +%s)
  set +e
  (cd "$repo" && dotnet test Dispatch.sln --logger trx --results-directory "$dir") >"$dir/console.log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  mapfile -t trx < <(find "$dir" -name '*.trx')
  if [ ${#trx[@]} -eq 0 ]; then
    echo "round $round: no results (dotnet test exited $rc after ${secs} s); see $dir/console.log"
    total_failed=$((total_failed + 1))
    continue
  fi
  mapfile -t summary < <(summarize "${trx[@]}")
  read -r run failed <<<"${summary[0]}"
  echo "round $round: $run tests run, $failed failed (dotnet test exited $rc, $((secs / 60)) min $((secs % 60)) s)"
  for line in "${summary[@]:1}"; do
    name=${line%%$'\t'*}
    echo "  FAILED $name: ${line#*$'\t'}"
    fail_count[$name]=$(( ${fail_count[$name]:-0} + 1 ))
  done
  if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
    total_failed=$((total_failed + 1))
  fi
done

echo "flake hunt: $total_failed of $rounds round(s) had failures"
for name in "${!fail_count[@]}"; do
  echo "  ${fail_count[$name]} x $name"
done | sort -rn
[ "$total_failed" -eq 0 ]
