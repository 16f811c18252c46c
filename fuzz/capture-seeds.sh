#!/usr/bin/env bash
# Re-captures the seeds that come from real clients (docs/fuzzing.md): a listener on 127.0.0.1 records the first
# bytes each client sends (until it has been quiet for a moment) and closes; nothing here answers TLS or HTTP.
#   fuzz/capture-seeds.sh            writes fuzz/corpus/{clienthello,requesthead,proxyprotocol}/capture-*
# Needs python3, openssl, gnutls-cli and curl; the other seeds come from `Dispatch.Fuzz seeds fuzz/corpus`.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p "$corpus/clienthello" "$corpus/requesthead" "$corpus/proxyprotocol"

# capture FILE CLIENT-COMMAND...   ({port} in the command is replaced by the listener's port)
capture() {
  local file=$1; shift
  local portfile; portfile=$(mktemp)
  python3 - "$file" "$portfile" <<'PY' &
import socket, sys
out, portfile = sys.argv[1], sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1)
open(portfile, "w").write(str(s.getsockname()[1]))
s.settimeout(15)
c, _ = s.accept(); c.settimeout(1.0)
data = b""
try:
    while len(data) < 65536:
        b = c.recv(65536)
        if not b: break
        data += b
except socket.timeout:
    pass
open(out, "wb").write(data)
c.close(); s.close()
PY
  local listener=$!
  while [ ! -s "$portfile" ]; do sleep 0.05; done
  local port; port=$(cat "$portfile")
  local args=()
  for a in "$@"; do args+=("${a//\{port\}/$port}"); done
  timeout 10 "${args[@]}" </dev/null >/dev/null 2>&1 || true
  wait "$listener"
  rm -f "$portfile"
  echo "$file: $(stat -c %s "$file") bytes"
}

h=$corpus/clienthello
capture "$h/capture-openssl" openssl s_client -connect 127.0.0.1:{port} -servername a.localhost -alpn h2,http/1.1
capture "$h/capture-openssl-tls12" openssl s_client -connect 127.0.0.1:{port} -servername a.localhost -tls1_2
capture "$h/capture-openssl-tls13-nosni" openssl s_client -connect 127.0.0.1:{port} -noservername -tls1_3
capture "$h/capture-gnutls" gnutls-cli --insecure --port {port} --sni-hostname b.localhost --alpn h2 --alpn http/1.1 127.0.0.1
capture "$h/capture-gnutls-tls12" gnutls-cli --insecure --port {port} --sni-hostname x.c.localhost --priority NORMAL:-VERS-TLS1.3 127.0.0.1
capture "$h/capture-curl" curl -sk --resolve a.localhost:{port}:127.0.0.1 https://a.localhost:{port}/
capture "$h/capture-curl-tls12" curl -sk --tlsv1.2 --tls-max 1.2 --http1.1 --resolve www.b.localhost:{port}:127.0.0.1 https://www.b.localhost:{port}/

r=$corpus/requesthead
capture "$r/capture-curl-get" curl -s http://a.localhost:{port}/index.html --resolve a.localhost:{port}:127.0.0.1
capture "$r/capture-curl-post" curl -s -d 'a=1&b=2' -H 'X-Test: yes' http://127.0.0.1:{port}/cgi-bin/form?x=1 -H 'Host: b.localhost:8080'
capture "$r/capture-curl-http10" curl -s -0 http://127.0.0.1:{port}/ -H 'Host: www.a.localhost.'
capture "$r/capture-curl-proxy-absolute" curl -s -x http://127.0.0.1:{port} http://c.localhost/path?q=1
capture "$r/capture-curl-ipv6-host" curl -s http://127.0.0.1:{port}/ -H 'Host: [::1]:8080'
capture "$r/capture-curl-upgrade" curl -s --http2 http://127.0.0.1:{port}/ -H 'Host: a.localhost'

p=$corpus/proxyprotocol
capture "$p/capture-curl-v1" curl -s --haproxy-protocol http://127.0.0.1:{port}/ -H 'Host: a.localhost'

# PROXY v1 and v2 headers as HAProxy sends them to a backend (TCP4, TCP6, v2 with TLVs).
if command -v haproxy >/dev/null; then
  haproxy_capture() { # FILE SERVER-OPTIONS CLIENT-ADDRESS
    local file=$1 options=$2 client=$3 cfg front
    cfg=$(mktemp --suffix .cfg)
    front=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    capture "$file" bash -c "cat >'$cfg' <<CFG
defaults
  mode tcp
  timeout connect 2s
  timeout client 3s
  timeout server 3s
frontend f
  bind 127.0.0.1:$front
  bind [::1]:$front
  bind unix@$cfg.sock
  default_backend b
backend b
  server s 127.0.0.1:{port} $options
CFG
haproxy -f '$cfg' -db >/dev/null 2>&1 & pid=\$!
via=(-g http://$client:$front/); [ $client = unix ] && via=(--unix-socket $cfg.sock http://a.localhost/)
for i in \$(seq 50); do curl -s -o /dev/null --max-time 1 \${via[@]} -H 'Host: a.localhost' && break; sleep 0.1; done
kill \$pid"
    rm -f "$cfg" "$cfg.sock"
  }
  haproxy_capture "$p/capture-haproxy-v1" send-proxy 127.0.0.1
  haproxy_capture "$p/capture-haproxy-v2" send-proxy-v2 127.0.0.1
  haproxy_capture "$p/capture-haproxy-v2-ipv6" send-proxy-v2 '[::1]'
  haproxy_capture "$p/capture-haproxy-v1-unix" send-proxy unix
  haproxy_capture "$p/capture-haproxy-v2-unix" send-proxy-v2 unix
  haproxy_capture "$p/capture-haproxy-v2-tlv" 'send-proxy-v2 proxy-v2-options authority,unique-id,crc32c' 127.0.0.1
fi
