#!/usr/bin/env bash
# Builds Dispatch and runs the sample on 127.0.0.1: a.localhost, b.localhost and *.c.localhost over
# http (:8080) and https (:8443, certificates from certs-sample), tenants as numeric uids 10001-10003,
# the dispatcher as uid 10000 (nothing to create).
# Must run as root: the master binds the ports and starts each tenant's worker as the tenant, jailed.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    echo "run-sample.sh runs as root (real privilege separation: the master starts each tenant's worker as its own uid); asking sudo" >&2
    exec sudo -- "$0" "$@"
  fi
  echo "run-sample.sh must run as root (real privilege separation: the master starts each tenant's worker as its own uid), and there is no sudo here: run it as root" >&2
  exit 77
fi
repo=$(cd "$(dirname "$0")" && pwd)
app=${DISPATCH_APP_DIR:-/usr/local/lib/dispatch-sample}
www=/var/lib/dispatch-sample/www
"$repo/scripts/stage.sh" "$app" Release >/dev/null
mkdir -p /var/lib/dispatch-sample "$www"
chmod 755 /var/lib/dispatch-sample "$www"
for t in a:10001 b:10002 c:10003; do
  site=${t%%:*}.localhost uid=${t##*:}
  rm -rf "${www:?}/$site"
  cp -r "$repo/samples/www/$site" "$www/$site"
  chown -R "$uid:$uid" "$www/$site"
  chmod -R u=rwX,go= "$www/$site"
done
# Certificates as certbot leaves them: root-owned, keys 0600, live/ symlinks into archive/.
certs=/etc/dispatch-sample/certs
rm -rf "$certs"
mkdir -p /etc/dispatch-sample
cp -a "$repo/certs-sample" "$certs"
rm -f "$certs/generate.sh" "$certs/README.md" "$certs/ca-key.pem"
chown -R root:root /etc/dispatch-sample
chmod -R go-w /etc/dispatch-sample
find "$certs/archive" -name 'privkey*.pem' -exec chmod 600 {} +
cat >&2 <<MSG
Try:
  curl -H 'Host: a.localhost' http://127.0.0.1:8080/
  curl --cacert $repo/certs-sample/ca.pem --resolve a.localhost:8443:127.0.0.1 https://a.localhost:8443/
(Ctrl-C stops everything)
MSG
exec "$app/Master" --config "$repo/samples/dispatch.json"
