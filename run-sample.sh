#!/usr/bin/env bash
# Builds Dispatch and runs the sample: http://a.localhost:8080/ and http://b.localhost:8080/ on 127.0.0.1,
# tenants as numeric uids 10001 and 10002, the dispatcher as uid 10000 (nothing to create).
# Must run as root: the master binds the ports and starts each tenant's worker as the tenant, jailed.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "run-sample.sh must run as root (real privilege separation: the master starts each tenant's worker as its own uid). Try: sudo $0" >&2
  exit 77
fi
repo=$(cd "$(dirname "$0")" && pwd)
app=${DISPATCH_APP_DIR:-/usr/local/lib/dispatch-sample}
www=/var/lib/dispatch-sample/www
"$repo/scripts/stage.sh" "$app" Release >/dev/null
mkdir -p /var/lib/dispatch-sample "$www"
chmod 755 /var/lib/dispatch-sample "$www"
for t in a:10001 b:10002; do
  site=${t%%:*}.localhost uid=${t##*:}
  rm -rf "${www:?}/$site"
  cp -r "$repo/samples/www/$site" "$www/$site"
  chown -R "$uid:$uid" "$www/$site"
  chmod -R u=rwX,go= "$www/$site"
done
echo "Try: curl -H 'Host: a.localhost' http://127.0.0.1:8080/   (Ctrl-C stops everything)" >&2
exec "$app/Master" --config "$repo/samples/dispatch.json"
