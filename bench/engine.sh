#!/usr/bin/env bash
# The TLS engine's own measurements, in process (tests/Dispatch.TlsDispatcher.Tests/Tls/BcTlsBenchmarks.cs,
# Category=Benchmark): server CPU per handshake (engine only, openssl s_time, SslStream client), bulk throughput
# and the record cipher, each kind of key exchange. They print numbers and assert no speed, so run-tests.sh leaves
# them out; nothing here compares with nginx (bench/run.sh does): use them to compare the engine with itself, before
# and after a change, in one sitting.
#   bench/engine.sh        prints the "[bench]" lines (about a minute after the build)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null 2>&1 || { echo "bench/engine.sh: openssl is needed (Debian package openssl)" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "bench/engine.sh: curl is needed (Debian package curl)" >&2; exit 1; }
dotnet build tests/Dispatch.TlsDispatcher.Tests --nologo -v quiet -clp:ErrorsOnly
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
dotnet test tests/Dispatch.TlsDispatcher.Tests --no-build --filter "Category=Benchmark" --logger "console;verbosity=detailed" >"$out" 2>&1 || status=$?
grep -F "[bench]" "$out" || true
if [ "$status" -ne 0 ]; then
  cat "$out" >&2
  echo "bench/engine.sh: a measurement failed (exit $status)" >&2
fi
exit "$status"
