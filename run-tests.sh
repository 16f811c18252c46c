#!/usr/bin/env bash
# Installs what the tests need, then runs every test: the command of the README (and of CI: .ci/run
# calls it). Works on a fresh Debian/Ubuntu machine with only the .NET 10 SDK installed, as root (no
# sudo needed) or as a user with sudo.
#   ./run-tests.sh [dotnet test arguments...]     e.g. ./run-tests.sh --filter 'FullyQualifiedName~Cli'
# The tests must run as root: they start the real master, which drops to real uids, jails its
# children (Landlock, chroot, namespaces) and binds ports; the end-to-end tests skip loudly otherwise.
# As a user, the script re-runs itself through sudo (the build output under bin/ and obj/ is then
# root-owned; `sudo git clean -fdX` removes it).
# Exit status: that of `dotnet test` (0 when every test passed); 77 when not root and no sudo; 1 when
# a package cannot be installed.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    echo "run-tests.sh runs as root (the tests start the real master, which changes uids and jails its children); asking sudo" >&2
    # sudo resets PATH (secure_path): keep the dotnet this user runs.
    dotnet=$(command -v dotnet) || { echo "run-tests.sh: dotnet not found: install the .NET 10 SDK" >&2; exit 1; }
    dotnet_dir=$(dirname "$(readlink -f "$dotnet")")
    exec sudo -- env "PATH=$dotnet_dir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$0" "$@"
  fi
  echo "run-tests.sh must run as root (the tests start the real master, which changes uids and jails its children), and there is no sudo here: run it as root" >&2
  exit 77
fi
command -v dotnet >/dev/null 2>&1 || { echo "run-tests.sh: dotnet not found: install the .NET 10 SDK" >&2; exit 1; }

# What the tests run besides .NET, as command:Debian-package. Add a tool here when a test needs it.
export DEBIAN_FRONTEND=noninteractive
need=()
for tool in curl:curl openssl:openssl gnutls-cli:gnutls-bin setpriv:util-linux strace:strace useradd:passwd testssl:testssl.sh sslscan:sslscan gcc:gcc nc:netcat-openbsd htpasswd:apache2-utils php-fpm8.2:php8.2-fpm php:php8.2-cli nghttp:nghttp2-client prlimit:util-linux ss:iproute2; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool##*:}")
done
# Tests signal processes with kill(1) (procps): `command -v kill` finds the shell's builtin, so ask for the file.
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || need+=(procps)
# The Python test worker (WorkerProgramTests) runs the TLS record layer with python3-cryptography.
/usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
# ConfigSchemaTests validate samples/dispatch.json against docs/dispatch.schema.json with python3-jsonschema.
/usr/bin/python3 -c 'import jsonschema' >/dev/null 2>&1 || need+=(python3-jsonschema)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { echo "run-tests.sh: the tests need ${need[*]} (Debian package names), and there is no apt-get here: install them, then run this again" >&2; exit 1; }
  echo "run-tests.sh: installing ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# What is tested is what ships: the end-to-end tests run the NativeAOT executables scripts/publish.sh
# puts in artifacts/bin (docs/aot.md). The publish (minutes: the AOT compiler) runs beside the build of
# the test projects; both restore first, one after the other (they share obj/ files).
dotnet restore Dispatch.sln --nologo -v quiet
rid=$(scripts/publish.sh --rid)
for p in Master TlsDispatcher Worker; do
  dotnet restore "src/$p/$p.csproj" -r "$rid" --nologo -v quiet
done
publish_log=$(mktemp)
scripts/publish.sh --no-restore >"$publish_log" 2>&1 &
publish_pid=$!
build_status=0
dotnet build Dispatch.sln --no-restore --nologo -v quiet -clp:ErrorsOnly || build_status=$?
publish_status=0
wait "$publish_pid" || publish_status=$?
if [ "$publish_status" -ne 0 ]; then
  cat "$publish_log" >&2
  echo "run-tests.sh: scripts/publish.sh failed (exit $publish_status): the end-to-end tests need the published executables" >&2
fi
rm -f "$publish_log"
[ "$build_status" -eq 0 ] || { echo "run-tests.sh: the build failed (exit $build_status)" >&2; exit "$build_status"; }
[ "$publish_status" -eq 0 ] || exit "$publish_status"
# The engine's measurements (Category=Benchmark: they print numbers and assert no speed) are not tests: they run
# with bench/engine.sh. A --filter given here replaces this one.
filter=(--filter "Category!=Benchmark")
for arg in "$@"; do
  case "$arg" in --filter|--filter=*) filter=() ;; esac
done
exec dotnet test Dispatch.sln --no-build "${filter[@]}" "$@"
