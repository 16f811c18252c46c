#!/usr/bin/env bash
# Publishes the three executables (scripts/publish.sh: NativeAOT, into artifacts/bin) and stages them
# together into DEST, a root-owned directory that every uid can traverse and only root can write: a
# child that drops privileges re-executes its own binary from there, and the master refuses to start
# from anywhere weaker.
#   usage: scripts/stage.sh DEST [Release]
#   DISPATCH_PUBLISHED=DIR   stage the executables already published in DIR (no publish)
set -euo pipefail
dest=${1:?usage: scripts/stage.sh DEST [Release]}
case "${2:-Release}" in
  Release) ;;
  *) echo "stage.sh: only Release is published (NativeAOT; docs/aot.md), not '$2'" >&2; exit 64 ;;
esac
repo=$(cd "$(dirname "$0")/.." && pwd)
published=${DISPATCH_PUBLISHED:-}
if [ -z "$published" ]; then
  published=$("$repo/scripts/publish.sh")
fi
mkdir -p "$dest"
# What a framework-dependent stage left there (before NativeAOT): the native executables replace it.
find "$dest" -maxdepth 1 -type f \( -name '*.dll' -o -name '*.pdb' -o -name '*.deps.json' -o -name '*.runtimeconfig.json' \) -delete
for p in Master TlsDispatcher Worker; do
  [ -x "$published/$p" ] || { echo "stage.sh: $published/$p is missing" >&2; exit 1; }
  cp -f "$published/$p" "$dest/$p.new"
  mv -f "$dest/$p.new" "$dest/$p"
done
[ -f "$published/dispatch-openssl.cnf" ] || { echo "stage.sh: $published/dispatch-openssl.cnf is missing" >&2; exit 1; }
cp -f "$published/dispatch-openssl.cnf" "$dest/dispatch-openssl.cnf"
chown -R root:root "$dest"
chmod -R go-w "$dest"
chmod 755 "$dest" "$dest/Master" "$dest/TlsDispatcher" "$dest/Worker"
chmod 644 "$dest/dispatch-openssl.cnf"
echo "$dest"
