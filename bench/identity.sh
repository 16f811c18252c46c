#!/usr/bin/env bash
# Identity vhosts (docs/identity.md): logins per second and CPU per verified login, Dispatch vs nginx
# (auth_basic with the same htpasswd file), bcrypt cost 10. Every request is a new TLS 1.3 connection
# carrying Basic credentials (no session tickets), so every one is a full handshake plus one bcrypt.
#
#   sudo bench/identity.sh            # prints a Markdown table; RESULTS=FILE also writes it there
#
# Environment (all optional):
#   LOGINS=400        verified logins per server per round (after WARMUP logins, not counted)
#   WARMUP=40
#   CONC=4            concurrent clients (Python threads; OpenSSL and the socket waits release the GIL)
#   USERS=4           logins in the htpasswd file (a pool per login, from a userTemplate uid range)
#   COST=10           bcrypt cost (htpasswd -B -C)
#   ROUNDS=1          rounds; medians are reported
#   DISPATCH_APP=DIR  an already staged Dispatch (scripts/stage.sh) instead of staging a fresh Release build
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init identity "Dispatch's master starts workers as the logins' uids"
LOGINS=${LOGINS:-400}
WARMUP=${WARMUP:-40}
CONC=${CONC:-4}
USERS=${USERS:-4}
COST=${COST:-10}
ROUNDS=${ROUNDS:-1}
base=$(bench_path /var/lib/dispatch-bench-identity)
certs=$(bench_path /etc/dispatch-bench-identity)
run="$base/run"
DISPATCHER_UID=10000
UID_FROM=10041

bench_need nginx:nginx htpasswd:apache2-utils openssl:openssl curl:curl
bench_traps
BENCH_LOGS=$run
stage_dispatch "$(bench_path /usr/local/lib/dispatch-bench-identity)"

# Content, certificates (root-owned, certbot layout), credentials
rm -rf "$run"
mkdir -p "$run/www/cgi"
chmod 755 "$base" "$run" "$run/www"
printf 'hello\n' >"$run/www/index.html"
copy_certs "$certs"
live="$certs/live/a.localhost"
creds="$certs/users.htpasswd"
: >"$creds"
for i in $(seq 1 "$USERS"); do
  htpasswd -bB -C "$COST" "$creds" "user$i" "password-$i" 2>/dev/null
done
chmod 644 "$creds"
log "$USERS logins, bcrypt cost $COST: $(head -c 7 <<<"$(cut -d: -f2 "$creds" | head -1)")..."

read -r dport nport <<<"$(free_ports 2)"
cat >"$run/dispatch.json" <<JSON
{
  "listen": [ { "endpoint": "127.0.0.1:$dport", "protocol": "tls" } ],
  "dispatcher": { "user": "$DISPATCHER_UID" },
  "control": { "socket": "$run/control.sock" },
  "vhosts": {
    "a.localhost": {
      "identity": "authenticated", "credentials": "$creds",
      "userTemplate": { "pool": "u-{login}", "user": "$UID_FROM-$((UID_FROM + 99))", "minSpare": 1 },
      "loginLimits": { "perAddress": 1000000, "perLogin": 1000000 },
      "root": "$run/www", "tls": "terminate", "certDirs": [ "$live" ]
    }
  }
}
JSON
mkdir -p "$run/nginx"
cat >"$run/nginx.conf" <<NGINX
worker_processes auto;
pid $run/nginx/nginx.pid;
error_log $run/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  ssl_protocols TLSv1.3;
  ssl_session_tickets off;
  ssl_session_cache off;
  server {
    listen 127.0.0.1:$nport ssl;
    server_name a.localhost;
    ssl_certificate $live/fullchain.pem;
    ssl_certificate_key $live/privkey.pem;
    root $run/www;
    auth_basic "bench";
    auth_basic_user_file $creds;
  }
}
NGINX

# One client: N logins, each on a new TLS 1.3 connection (no tickets), round-robin over the logins.
cat >"$run/client.py" <<'PY'
import base64, socket, ssl, sys, threading, time
port, n, conc, users = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=sys.argv[5])
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.options |= ssl.OP_NO_TICKET
lock = threading.Lock()
state = {"next": 0, "ok": 0, "bad": 0}
def worker():
    while True:
        with lock:
            i = state["next"]
            if i >= n:
                return
            state["next"] += 1
        u = i % users + 1
        token = base64.b64encode(f"user{u}:password-{u}".encode()).decode()
        s = socket.create_connection(("127.0.0.1", port))
        t = ctx.wrap_socket(s, server_hostname="a.localhost")
        t.sendall(f"GET / HTTP/1.1\r\nHost: a.localhost\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = t.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
        t.close()
        with lock:
            state["ok" if data.startswith(b"HTTP/1.1 200") else "bad"] += 1
start = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - start
print(f"{state['ok']} {state['bad']} {elapsed:.3f}")
PY

hz=$(getconf CLK_TCK)

measure() {   # measure NAME PORT "PIDS A" "PIDS B": prints "logins/s cpu-ms-per-login(A) cpu-ms-per-login(B)"
  local name=$1 port=$2 a=$3 b=$4
  "$PY" "$run/client.py" "$port" "$WARMUP" "$CONC" "$USERS" "$repo/certs-sample/ca.pem" >/dev/null
  local before_a before_b after_a after_b out ok bad secs
  # shellcheck disable=SC2086
  before_a=$(ticks $a); before_b=$(ticks $b)
  out=$("$PY" "$run/client.py" "$port" "$LOGINS" "$CONC" "$USERS" "$repo/certs-sample/ca.pem")
  # shellcheck disable=SC2086
  after_a=$(ticks $a); after_b=$(ticks $b)
  read -r ok bad secs <<<"$out"
  [ "$bad" = 0 ] || die "$name: $bad of $LOGINS logins did not get 200"
  "$PY" -c "print(f'{$ok/$secs:.1f} {($after_a-$before_a)*1000/$hz/$ok:.2f} {($after_b-$before_b)*1000/$hz/$ok:.2f}')"
}

declare -a D_RATE=() D_CPU=() D_ALL=() N_RATE=() N_CPU=()
for round in $(seq 1 "$ROUNDS"); do
  log "round $round: Dispatch on $dport"
  start_bg dispatch "$run/dispatch.log" "$app/Master" --config "$run/dispatch.json"
  dpid=$LAST_PID
  wait_dispatch_ready "$run/dispatch.log" "$dpid" 60
  read -r _ disp <<<"$(dispatch_pids "$run/dispatch.log")"
  [ -n "$disp" ] || die "no dispatcher pid in $run/dispatch.log"
  # Warm the login pools' workers first (minSpare starts them; the first login of each waits for none).
  for i in $(seq 1 600); do [ "$(grep -c 'Worker .* ready' "$run/dispatch.log" || true)" -ge "$USERS" ] && break; sleep 0.1; done
  children="$(pgrep -P "$dpid" | tr '\n' ' ')"
  read -r rate cpu all <<<"$(measure dispatch "$dport" "$disp" "$dpid $children")"
  D_RATE+=("$rate"); D_CPU+=("$cpu"); D_ALL+=("$all")
  log "Dispatch: $rate logins/s, dispatcher $cpu ms CPU per verified login, $all ms with master and workers"
  stop_pid "$dpid"

  log "round $round: nginx on $nport"
  start_bg nginx "$run/nginx/stdout.log" nginx -c "$run/nginx.conf" -g 'daemon off;'
  npid=$LAST_PID
  for i in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$nport/" && break; sleep 0.1; done
  workers=$(pgrep -P "$npid" | tr '\n' ' ')
  read -r rate cpu _ <<<"$(measure nginx "$nport" "$npid $workers" "$npid $workers")"
  N_RATE+=("$rate"); N_CPU+=("$cpu")
  log "nginx: $rate logins/s, $cpu ms CPU per verified login (master + workers)"
  stop_pid "$npid"
done

dr=$(median "${D_RATE[@]}"); dc=$(median "${D_CPU[@]}"); da=$(median "${D_ALL[@]}"); nr=$(median "${N_RATE[@]}"); nc=$(median "${N_CPU[@]}")
report=$(cat <<MD
### Identity vhosts: logins (bcrypt cost $COST), $(nproc) cores, $ROUNDS round(s) of $LOGINS logins, $CONC clients, $USERS logins

Each login is a new TLS 1.3 connection (no tickets) with Basic credentials, answered 200 by the login's own worker (Dispatch) or by nginx \`auth_basic\` with the same htpasswd file.

| | Dispatch | nginx | Dispatch / nginx |
|---|---|---|---|
| logins per second | $dr | $nr | $("$PY" -c "print(f'{$dr/$nr:.2f}x')") |
| CPU per verified login: Dispatch's dispatcher only; nginx master + workers | $dc ms | $nc ms | $("$PY" -c "print(f'{$dc/$nc:.2f}x')") |
| CPU per verified login: Dispatch master + dispatcher + workers; nginx master + workers | $da ms | $nc ms | $("$PY" -c "print(f'{$da/$nc:.2f}x')") |
MD
)
echo "$report"
[ -n "${RESULTS:-}" ] && echo "$report" >"$RESULTS"
exit 0
