#!/usr/bin/env bash
# Publishes the three executables (Master, TlsDispatcher, Worker) with NativeAOT into one directory:
# what the tests run, what scripts/stage.sh, run-sample.sh and packaging/install.sh stage or install,
# what ships (docs/aot.md). Needs the .NET 10 SDK (and the NativeAOT packages from NuGet); the host
# that runs the output needs no .NET at all.
#   usage: scripts/publish.sh [--no-restore] [OUT]     OUT defaults to artifacts/bin in the repository
#   --no-restore: the projects are restored for the runtime identifier already (run-tests.sh does it
#   first, so that the publish can run beside another build without two restores writing obj/ at once)
# Output: OUT/Master, OUT/TlsDispatcher, OUT/Worker (stripped; their symbols in artifacts/symbols), and
# OUT/dispatch-openssl.cnf, the TLS policy of the OpenSSL-based engines (the openssl engine, passthrough
# workers), which the master's children read through OPENSSL_CONF (docs/scanners.md).
# Trim and AOT warnings are errors (Directory.Build.props): a publish that would change behaviour
# under trimming fails here instead.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
restore=()
if [ "${1:-}" = --no-restore ]; then restore=(--no-restore); shift; fi
out=${1:-$repo/artifacts/bin}
case "$(uname -m)" in
  x86_64) rid=linux-x64 ;;
  aarch64) rid=linux-arm64 ;;
  *) echo "publish.sh: no NativeAOT runtime identifier for $(uname -m)" >&2; exit 1 ;;
esac
# The runtime identifier, for run-tests.sh's restore.
if [ "$out" = --rid ]; then echo "$rid"; exit 0; fi
stage=$repo/artifacts/publish
symbols=$repo/artifacts/symbols
mkdir -p "$out" "$symbols"
for p in Master TlsDispatcher Worker; do
  rm -rf "${stage:?}/$p"
  # No build servers: nothing of the build should outlive a publish run as root (install.sh, CI).
  dotnet publish "$repo/src/$p/$p.csproj" -c Release -r "$rid" -o "$stage/$p" "${restore[@]}" \
    --disable-build-servers --nologo -v quiet -clp:ErrorsOnly >&2 || { echo "publish.sh: dotnet publish of $p failed" >&2; exit 1; }
  [ -x "$stage/$p/$p" ] || { echo "publish.sh: no native $p in $stage/$p" >&2; exit 1; }
  # A NativeAOT publish holds the executable, its symbols and the OpenSSL policy, nothing else: anything
  # more would be a file the executable loads at run time, and the staging scripts copy only these.
  extra=$(find "$stage/$p" -mindepth 1 ! -name "$p" ! -name "$p.dbg" ! -name '*.pdb' ! -name dispatch-openssl.cnf -printf '%P\n')
  [ -z "$extra" ] || { echo "publish.sh: unexpected files beside $p: $extra" >&2; exit 1; }
done
for p in Master TlsDispatcher Worker; do
  # cp, not mv: a fresh mtime (the tests refuse binaries older than the sources).
  cp -f "$stage/$p/$p" "$out/$p.new"
  mv -f "$out/$p.new" "$out/$p"
  find "$stage/$p" -maxdepth 1 \( -name '*.dbg' -o -name '*.pdb' \) -exec cp -f {} "$symbols/" \;
done
[ -f "$stage/Master/dispatch-openssl.cnf" ] || { echo "publish.sh: no dispatch-openssl.cnf in the publish output" >&2; exit 1; }
cp -f "$stage/Master/dispatch-openssl.cnf" "$out/dispatch-openssl.cnf"
echo "$out"
