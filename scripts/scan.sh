#!/usr/bin/env bash
# Runs testssl.sh (every check) and sslscan against each TLS engine of Dispatch, on a running Dispatch
# started here from the build output: the bouncycastle engine (ECDSA and RSA certificates), the openssl
# engine (ECDSA and RSA), and a passthrough vhost whose worker terminates TLS itself (ECDSA, and RSA).
# Certificates: the sample's (certs-sample, a private CA). Must run as root (the master starts the
# tenants' workers as their uids). CI runs the quicker subset in ScannerTests; this is the full scan whose
# results docs/scanners.md records.
#   usage: [TESTSSL_ARGS="-p -E"] scripts/scan.sh [OUTDIR] [Debug|Release]     (default OUTDIR: bench/results/scan-<date>;
#   TESTSSL_ARGS limits testssl to some checks, default all)
# Exit status: 0 when no scan found anything of severity MEDIUM or above beyond what the private CA causes
# (the ids listed in $allowed below), 1 otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/bench/results/scan-$(date -u +%Y%m%d-%H%M)}
config=${2:-Release}
[ "$(id -u)" -eq 0 ] || { echo "scan.sh must run as root (the master starts each tenant's worker as its uid)" >&2; exit 77; }
for tool in testssl sslscan curl python3; do
  command -v "$tool" >/dev/null || { echo "scan.sh: $tool not found (apt-get install testssl.sh sslscan curl python3)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Under /var/lib, not /tmp: the master refuses certificate directories below a world-writable one.
work=$(mktemp -d /var/lib/dispatch-scan.XXXXXX)
chmod 755 "$work"
master=
cleanup() {
  [ -n "$master" ] && kill "$master" 2>/dev/null && wait "$master" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$repo/scripts/stage.sh" "$work/app" "$config" >/dev/null 2>&1 || "$repo/scripts/stage.sh" "$work/app" "$config" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port) tls=$(free_port)

# Document roots, one per tenant; certificates root-owned as certbot leaves them, and a tenant-owned copy
# for the passthrough vhosts (their worker reads them as the tenant).
for t in a:10001 b:10002 c:10003; do
  mkdir -p "$work/www/${t%%:*}"
  echo "tenant ${t%%:*}" >"$work/www/${t%%:*}/index.html"
  chown -R "${t##*:}:${t##*:}" "$work/www/${t%%:*}"
  chmod 700 "$work/www/${t%%:*}"
done
chmod 755 "$work/www"
cp -a "$repo/certs-sample" "$work/certs"
rm -f "$work/certs/ca-key.pem"
chown -R root:root "$work/certs"
chmod -R go-w "$work/certs"
find "$work/certs/archive" -name 'privkey*.pem' -exec chmod 600 {} +
cp -a "$work/certs" "$work/c-certs"
chown -R 10003:10003 "$work/c-certs"
chmod 700 "$work/c-certs"

cat >"$work/dispatch.json" <<JSON
{
  "listen": [ { "endpoint": "127.0.0.1:$http", "protocol": "http" }, { "endpoint": "127.0.0.1:$tls", "protocol": "tls" } ],
  "dispatcher": { "user": "10000" },
  "control": { "socket": "$work/control.sock" },
  "pools": {
    "a": { "user": "10001", "group": "10001" },
    "b": { "user": "10002", "group": "10002" },
    "c": { "user": "10003", "group": "10003" }
  },
  "vhosts": {
    "a.localhost": { "pool": "a", "root": "$work/www/a", "tls": "terminate", "engine": "bouncycastle",
                     "certDirs": [ "$work/certs/live/a.localhost", "$work/certs/live/a.localhost-rsa" ] },
    "b.localhost": { "pool": "b", "root": "$work/www/b", "tls": "terminate", "engine": "openssl",
                     "certDirs": [ "$work/certs/live/b.localhost", "$work/certs/live/b.localhost-rsa" ] },
    "c.localhost": { "pool": "c", "root": "$work/www/c", "tls": "passthrough",
                     "certDir": "$work/c-certs/live/c.localhost" },
    "rsa.c.localhost": { "pool": "c", "root": "$work/www/c", "tls": "passthrough",
                     "certDir": "$work/c-certs/live/c.localhost-rsa" }
  }
}
JSON
"$work/app/Master" --config "$work/dispatch.json" >"$work/master.log" 2>&1 &
master=$!
for _ in $(seq 1 120); do
  grep -q "Dispatch ready" "$work/master.log" && break
  kill -0 "$master" 2>/dev/null || { cat "$work/master.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "Dispatch ready" "$work/master.log" || { cat "$work/master.log" >&2; echo "scan.sh: Dispatch did not start" >&2; exit 1; }
# One request per vhost first: each pool's first worker starts on demand, and a scanner's first probes would
# otherwise wait for it (sslscan gives up after its timeout and calls the protocol disabled).
for host in a.localhost b.localhost c.localhost rsa.c.localhost; do
  curl -sS -o /dev/null --max-time 60 --cacert "$work/certs/ca.pem" --resolve "$host:$tls:127.0.0.1" "https://$host:$tls/" \
    || { echo "scan.sh: https://$host:$tls/ does not answer" >&2; exit 1; }
done

# Findings the sample's private CA causes, allowed (the rest of docs/scanners.md explains each).
allowed='^(cert_chain_of_trust|cert_revocation|cert_ocspURL|cert_crlDistributionPoints|OCSP_stapling|cert_certificateTransparency|DNS_CAArecord|HSTS)'
targets="bouncycastle:a.localhost openssl:b.localhost passthrough-ecdsa:c.localhost passthrough-rsa:rsa.c.localhost"
start=$(date +%s)
scans=()
for t in $targets; do
  name=${t%%:*} host=${t##*:}
  (
    s=$(date +%s)
    # shellcheck disable=SC2086 # TESTSSL_ARGS: extra testssl options, word-split on purpose (e.g. "-p -E" for a quick look).
    testssl ${TESTSSL_ARGS:-} --quiet --color 0 --warnings off --add-ca "$work/certs/ca.pem" --ip 127.0.0.1 \
      --jsonfile "$out/testssl-$name.json" "https://$host:$tls/" >"$out/testssl-$name.txt" 2>&1 || true
    echo "testssl $name: $(( $(date +%s) - s )) s" >>"$out/timing.txt"
  ) &
  scans+=($!)
  (
    sslscan --no-colour --timeout=20 --show-sigs --sni-name="$host" --xml="$out/sslscan-$name.xml" "127.0.0.1:$tls" >"$out/sslscan-$name.txt" 2>&1 || true
  ) &
  scans+=($!)
done
wait "${scans[@]}"
echo "all scans in parallel: $(( $(date +%s) - start )) s wall" >>"$out/timing.txt"
kill "$master"; wait "$master" 2>/dev/null || true; master=

status=0
{
  echo "# Scan of Dispatch $(git -C "$repo" rev-parse --short HEAD) on $(date -u +%Y-%m-%dT%H:%MZ) ($(testssl --version 2>/dev/null | grep -o 'testssl  *[0-9.]*' | head -1), $(sslscan --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1 | sed 's/^/sslscan /'))"
  for t in $targets; do
    name=${t%%:*}
    echo "## $name"
    python3 - "$out/testssl-$name.json" "$allowed" <<'PY'
import json, re, sys
findings = json.load(open(sys.argv[1]))
allowed = re.compile(sys.argv[2])
order = ["CRITICAL", "HIGH", "MEDIUM"]
for f in findings:
    if f["severity"] in order:
        mark = "allowed (private CA)" if allowed.match(f["id"]) else "FINDING"
        print(f"- testssl {f['severity']} {f['id']}: {f['finding']} [{mark}]")
PY
    grep -o '<protocol type="[a-z]*" version="[0-9.]*" enabled="1"' "$out/sslscan-$name.xml" | sed 's/.*type="\(.*\)" version="\(.*\)".*/- sslscan protocol enabled: \1 \2/' || true
    grep -o '<group sslversion="[^"]*" bits="[0-9]*" name="[^"]*"' "$out/sslscan-$name.xml" | sed 's/.*sslversion="\([^"]*\)".*name="\([^"]*\)"/- sslscan group: \1 \2/' || true
    grep -o '<cipher status="[a-z]*" sslversion="[^"]*" bits="[0-9]*" cipher="[^"]*"' "$out/sslscan-$name.xml" | sed 's/.*sslversion="\([^"]*\)".*cipher="\([^"]*\)"/- sslscan accepted: \1 \2/' || true
  done
  cat "$out/timing.txt"
} >"$out/summary.md"
grep -q 'FINDING\]' "$out/summary.md" && status=1
cat "$out/summary.md"
exit $status
