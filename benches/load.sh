#!/usr/bin/env bash
# Load benchmark, all on loopback, in one run:
#   1. the upstream hit directly (nginx returning a small body, one worker),
#   2. nginx as a plain reverse proxy to it (no auth, one worker, keep-alive upstream pool),
#   3. Portcullis (threads = 1) forwarding authenticated requests to it: Bearer token, full
#      JWT + live-session check, identity headers and signed assertion,
# then login throughput at bcrypt cost 12 against the machine's bcrypt limit
# (cores / time of one login at concurrency 1), and proxied p99 while a login storm runs.
#
# Prints requests/s and p50/p99 for each, and the ratios. Needs wrk, nginx and curl
# (Debian: apt-get install wrk nginx curl). Sessions in memory by default;
# SESSIONS=redis://127.0.0.1:6379/0 measures with Redis sessions (random key prefix).
#
#   benches/load.sh                      # DURATION=10s CONNECTIONS=32 by default
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
SESSIONS=${SESSIONS:-memory://}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
PC_PORT=$((BASE_PORT + 2))
PC_ADMIN=$((BASE_PORT + 3))

for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "load.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "building release binary…" >&2
cargo build --release --quiet
BIN=target/release/portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_conf() { # name, body of the server block
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body; proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fcgi; uwsgi_temp_path $WORK/$1/uwsgi; scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server { $2 }
}
EOF
  "$NGINX" -p "$WORK/$1" -c "$WORK/$1/nginx.conf" -g 'daemon off; master_process off;' &
  PIDS+=($!)
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; exit 1
}

nginx_conf upstream "listen 127.0.0.1:$UP_PORT; location / { return 200 'ok\n'; }"
nginx_conf proxy "listen 127.0.0.1:$NGINX_PORT; location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; }"

PREFIX="portcullis_load_$RANDOM$RANDOM:"
cat > "$WORK/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$PC_PORT"
admin_listen = "127.0.0.1:$PC_ADMIN"
threads = 1
[logging]
level = "warn"
dir = ""
[storage]
url = "sqlite://$WORK/data/portcullis.db"
[sessions]
url = "$SESSIONS"
key_prefix = "$PREFIX"
[tokens]
signing_key_file = "$WORK/data/signing-key.pem"
[two_factor]
encryption_key_file = "$WORK/data/totp.key"
[passwords]
bcrypt_cost = 12
[lockout]
max_failed_attempts = 1000
[mail]
url = "file://$WORK/data/outbox"
login_notifications = false
[rate_limits]
global = ""
register = ""
login = ""
password_reset = ""
[[routes]]
name = "app"
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
policy = "authenticated"
EOF
"$BIN" --config "$WORK/portcullis.toml" serve > "$WORK/portcullis.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT"; wait_port "$NGINX_PORT"; wait_port "$PC_PORT"

CREDS='{"email":"load@example.com","password":"L0ad-Test-Pass!"}'
# The login storm uses its own account: its logins would otherwise evict the session whose
# token the proxied runs present (sessions.max_per_user).
STORM_CREDS='{"email":"storm@example.com","password":"L0ad-Test-Pass!"}'
for who in load storm; do
  curl -sf -X POST "http://127.0.0.1:$PC_PORT/api/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$who@example.com\",\"password\":\"L0ad-Test-Pass!\",\"first_name\":\"Load\",\"last_name\":\"Test\"}" >/dev/null
done
TOKEN=$(curl -sf -X POST "http://127.0.0.1:$PC_PORT/api/auth/login" -H 'content-type: application/json' -d "$CREDS" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["tokens"]["access_token"])')
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/warm-up"

cat > "$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$STORM_CREDS'
EOF

# run NAME ARGS… → "rps p50_ms p99_ms" from wrk's --latency output
run() {
  local name=$1; shift
  wrk --latency "$@" > "$WORK/$name.out"
  python3 - "$WORK/$name.out" "$name" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]", "", v)
    return n * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
if non2xx:
    print(f"warning: {sys.argv[2]}: {non2xx.group(1)} non-2xx answers", file=sys.stderr)
print(f"{rps:.0f} {p50:.3f} {p99:.3f}")
PY
}

W="-t1 -c$CONNECTIONS -d$DURATION"
read -r UP_RPS UP_P50 UP_P99 < <(run upstream $W "http://127.0.0.1:$UP_PORT/")
read -r NG_RPS NG_P50 NG_P99 < <(run nginx $W "http://127.0.0.1:$NGINX_PORT/")
read -r PC_RPS PC_P50 PC_P99 < <(run portcullis $W -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/")

CORES=$(nproc)
read -r _ ONE_LOGIN_MS _ < <(run login-single -t1 -c1 -d5s -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login")
read -r LOGIN_RPS _ _ < <(run login-storm -t1 -c$((CORES * 4)) -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login")

# Proxied latency while a login storm runs (the storm's own answers are not measured here).
wrk -t1 -c$((CORES * 4)) -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login" > /dev/null &
STORM=$!
sleep 1
read -r ST_RPS ST_P50 ST_P99 < <(run portcullis-storm -t1 -c8 -d5s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/")
wait "$STORM" || true
read -r IDLE_RPS IDLE_P50 IDLE_P99 < <(run portcullis-idle -t1 -c8 -d5s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/")

python3 - <<PY
cores = $CORES
limit = cores / ($ONE_LOGIN_MS / 1000)
rows = [
    ("upstream direct", $UP_RPS, $UP_P50, $UP_P99),
    ("nginx plain proxy", $NG_RPS, $NG_P50, $NG_P99),
    ("portcullis (JWT + session, sessions=$SESSIONS)", $PC_RPS, $PC_P50, $PC_P99),
]
print(f"{'':50} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
for name, rps, p50, p99 in rows:
    print(f"{name:50} {rps:>10.0f} {p50:>9.3f} {p99:>9.3f}")
print()
print(f"portcullis / nginx throughput: {$PC_RPS / $NG_RPS:.2f}x   p99: {$PC_P99 / $NG_P99:.2f}x")
print(f"login: one at a time {$ONE_LOGIN_MS:.1f} ms -> bcrypt limit {limit:.1f}/s on {cores} cores;"
      f" storm {$LOGIN_RPS:.1f}/s = {$LOGIN_RPS / limit:.2f}x the limit")
print(f"proxied p99 idle {$IDLE_P99:.3f} ms, during login storm {$ST_P99:.3f} ms = {$ST_P99 / $IDLE_P99:.2f}x")
PY
