#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that reads untrusted bytes (docs/fuzzing.md).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Builds fuzz/Dispatch.Fuzz (Release) into a fresh directory, instruments the Dispatch assemblies there with
# SharpFuzz (the local dotnet tool of .config/dotnet-tools.json), and runs each target under afl-fuzz for the given
# time (default 60 s), seeded from fuzz/corpus/<target>/ (with fuzz/dict/<target>.dict when there is one), as many at
# once as there are processors (FUZZ_JOBS to choose). Prints the executions of each target. Exits non-zero if any
# target crashed, hung, or could not run; each finding is replayed in process to print its exception, and the inputs
# stay under the work directory it names (FUZZ_WORK to choose it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
seconds=${1:-60}
[ $# -gt 0 ] && shift
case $seconds in '' | *[!0-9]*) echo "fuzz.sh: seconds-per-target must be a number, not '$seconds'" >&2; exit 64 ;; esac
command -v afl-fuzz >/dev/null || { echo "fuzz.sh: afl-fuzz not found (Debian: apt-get install afl++)" >&2; exit 1; }

work=${FUZZ_WORK:-$(mktemp -d /tmp/dispatch-fuzz.XXXXXX)}
mkdir -p "$work"
echo "fuzz.sh: work directory $work"
dotnet tool restore >/dev/null
rm -rf "$work/bin"
dotnet publish fuzz/Dispatch.Fuzz/Dispatch.Fuzz.csproj -c Release -o "$work/bin" -v quiet -nologo >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; echo "fuzz.sh: build failed" >&2; exit 1; }
# Findings are replayed by an uninstrumented copy (instrumented code only runs under afl-fuzz's shared memory).
rm -rf "$work/plain"
cp -a "$work/bin" "$work/plain"
# Only our own assemblies carry coverage: the runtime, BouncyCastle, Serilog and ASP.NET Core do not.
for dll in Dispatch.Wire Dispatch.Platform TlsDispatcher Worker Master; do
  dotnet sharpfuzz "$work/bin/$dll.dll" >"$work/instrument-$dll.log" 2>&1 \
    || { cat "$work/instrument-$dll.log"; echo "fuzz.sh: sharpfuzz could not instrument $dll.dll" >&2; exit 1; }
done
harness=("$work/bin/Dispatch.Fuzz")
replay=("$work/plain/Dispatch.Fuzz" replay)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("$work/plain/Dispatch.Fuzz" list | awk '{print $1}')
fi

# afl-fuzz runs the .NET process as its own fork server (SharpFuzz); it is not a native AFL binary.
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# A .NET process needs more memory than afl's default limit, and its first inputs are slow (JIT).
timeout_ms=${FUZZ_TIMEOUT_MS:-10000}

# One target: its report on stdout, its summary line in $work/summary-<target>; exits 1 on a finding or a failure.
fuzz_target() {
  local t=$1 seeds out dict rc stats execs paths findings f line
  seeds="$repo/fuzz/corpus/$t"
  [ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] || { echo "fuzz.sh: no seeds in fuzz/corpus/$t" >&2; echo "$t: NO SEEDS" >"$work/summary-$t"; return 1; }
  out="$work/out-$t"
  rm -rf "$out"
  echo "fuzz.sh: $t for ${seconds}s"
  dict=()
  [ -f "$repo/fuzz/dict/$t.dict" ] && dict=(-x "$repo/fuzz/dict/$t.dict")
  rc=0
  afl-fuzz -i "$seeds" -o "$out" "${dict[@]}" -V "$seconds" -t "$timeout_ms" -m none -- "${harness[@]}" run "$t" >"$work/afl-$t.log" 2>&1 || rc=$?
  stats="$out/default/fuzzer_stats"
  if [ $rc -ne 0 ] || [ ! -f "$stats" ]; then
    tail -n 30 "$work/afl-$t.log"
    echo "fuzz.sh: afl-fuzz failed on $t (exit $rc); replaying the seeds:" >&2
    "${replay[@]}" "$t" "$seeds" || true
    echo "$t: AFL FAILED (exit $rc)" >"$work/summary-$t"
    return 1
  fi
  execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
  paths=$(awk -F: '/^corpus_count/ {gsub(/ /, "", $2); print $2}' "$stats")
  findings=0
  for f in "$out/default/crashes"/id:*; do
    [ -e "$f" ] || continue
    findings=$((findings + 1))
    echo "fuzz.sh: $t: crashes/$(basename "$f")" >&2
    # The first three are replayed to show their exception (the others are usually the same bug).
    [ $findings -gt 3 ] || "${replay[@]}" "$t" "$f" 2>&1 | head -n 12 >&2 || true
  done
  # An input over afl's timeout is a finding if it also fails or hangs (60 s) when replayed alone: on a busy machine
  # a slow execution is not a hang.
  for f in "$out/default/hangs"/id:*; do
    [ -e "$f" ] || continue
    if "${replay[@]}" "$t" "$f" >"$work/replay-$t.log" 2>&1; then
      echo "fuzz.sh: $t: hangs/$(basename "$f") ran to its end when replayed alone: a slow execution, not counted" >&2
    else
      findings=$((findings + 1))
      echo "fuzz.sh: $t: hangs/$(basename "$f")" >&2
      head -n 12 "$work/replay-$t.log" >&2
    fi
  done
  line="$t: $execs executions, $paths inputs in the queue, $findings finding(s)"
  echo "$line" >"$work/summary-$t"
  echo "fuzz.sh: $line"
  [ "$findings" -eq 0 ]
}

# The targets run FUZZ_JOBS at a time (default: one per processor): each afl-fuzz keeps one busy, so the whole run
# takes about seconds x targets / processors, and each target still gets a processor of its own for its time.
jobs_max=${FUZZ_JOBS:-$(nproc)}
case $jobs_max in '' | *[!0-9]* | 0) echo "fuzz.sh: FUZZ_JOBS must be a positive number, not '$jobs_max'" >&2; exit 64 ;; esac
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
    wait -n || true
  done
  rm -f "$work/summary-$t" "$work/status-$t"
  (if fuzz_target "$t" >"$work/report-$t.log" 2>&1; then echo 0; else echo 1; fi >"$work/status-$t") &
done
wait

failed=0
summary=()
for t in "${targets[@]}"; do
  cat "$work/report-$t.log"
  [ "$(cat "$work/status-$t" 2>/dev/null)" = 0 ] || failed=1
  summary+=("$(cat "$work/summary-$t" 2>/dev/null || echo "$t: NO REPORT")")
done

echo "fuzz.sh: summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
[ $failed -eq 0 ] || { echo "fuzz.sh: FINDINGS (inputs under $work)" >&2; exit 1; }
