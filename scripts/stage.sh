#!/usr/bin/env bash
# Builds the three executables and stages them together into DEST, a root-owned directory that every
# uid can traverse and only root can write: processes that drop privileges load their assemblies
# from there after the drop, and the master refuses to start from anywhere weaker.
#   usage: scripts/stage.sh DEST [Debug|Release]
set -euo pipefail
dest=${1:?usage: scripts/stage.sh DEST [Debug|Release]}
config=${2:-Release}
repo=$(cd "$(dirname "$0")/.." && pwd)
for p in Master TlsDispatcher Worker; do
  dotnet build "$repo/src/$p/$p.csproj" -c "$config" --nologo -v quiet -clp:ErrorsOnly >&2
done
mkdir -p "$dest"
for p in Master TlsDispatcher Worker; do
  cp -a "$repo/src/$p/bin/$config/net10.0/." "$dest/"
done
chown -R root:root "$dest"
chmod -R go-w "$dest"
chmod 755 "$dest"
echo "$dest"
