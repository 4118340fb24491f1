#!/usr/bin/env bash
# Load benchmark, all on loopback, in one run:
#   1. the upstream hit directly (nginx returning a small body, one worker),
#   2. nginx as a plain reverse proxy to it (no auth, one worker, keep-alive upstream pool),
#   3. bare Pingora (examples/bare_proxy.rs: the same server settings, nothing but forwarding),
#      the floor the gateway is built on,
#   4. Portcullis (threads = 1) forwarding authenticated requests to it: Bearer token, full
#      JWT + live-session check, identity headers and signed assertion; sessions in memory,
#   5. the same with sessions in Redis (random key prefix), when Redis answers at REDIS_URL,
# then login throughput at bcrypt cost 12 against the machine's bcrypt limit
# (cores / time of one login at concurrency 1), and proxied p99 while a login storm runs.
# Idle RSS is read after start-up; SOAK=300 adds a soak of that many seconds with RSS sampled.
#
# Prints requests/s and p50/p99 for each, and the ratios. Needs wrk, nginx, curl and python3
# (Debian: apt-get install wrk nginx curl python3).
#
#   benches/load.sh            # DURATION=10s CONNECTIONS=32 REDIS_URL=redis://127.0.0.1:6379/0
#   REDIS_URL= benches/load.sh # without the Redis row
#   SOAK=300 benches/load.sh   # plus a 5-minute soak
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REDIS_URL=${REDIS_URL-redis://127.0.0.1:6379/0}
SOAK=${SOAK:-0}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
BARE_PORT=$((BASE_PORT + 2))
PC_PORT=$((BASE_PORT + 3))  # sessions in memory; its admin port is the next one
PCR_PORT=$((BASE_PORT + 5)) # sessions in Redis; likewise

for tool in wrk nginx curl python3; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "load.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "building release binaries…" >&2
cargo build --release --quiet --bin portcullis --example bare_proxy
BIN=target/release/portcullis
BARE=target/release/examples/bare_proxy

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

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# start_portcullis NAME PORT SESSIONS_URL: one instance, threads = 1; its pid in $WORK/NAME.pid
start_portcullis() {
  local name=$1 port=$2 sessions=$3
  mkdir -p "$WORK/$name"
  cat > "$WORK/$name/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
threads = 1
[logging]
level = "warn"
dir = ""
[storage]
url = "sqlite://$WORK/$name/data/portcullis.db"
[sessions]
url = "$sessions"
key_prefix = "portcullis_load_$RANDOM$RANDOM:"
[tokens]
signing_key_file = "$WORK/$name/data/signing-key.pem"
[two_factor]
encryption_key_file = "$WORK/$name/data/totp.key"
[passwords]
bcrypt_cost = 12
[lockout]
max_failed_attempts = 1000
[mail]
url = "file://$WORK/$name/data/outbox"
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
  "$BIN" --config "$WORK/$name/portcullis.toml" serve > "$WORK/$name/portcullis.log" 2>&1 &
  echo $! > "$WORK/$name.pid"
  PIDS+=($!)
}

register() { # PORT WHO
  curl -sf -X POST "http://127.0.0.1:$1/api/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$2@example.com\",\"password\":\"L0ad-Test-Pass!\",\"first_name\":\"Load\",\"last_name\":\"Test\"}" >/dev/null
}

login() { # PORT WHO → access token
  curl -sf -X POST "http://127.0.0.1:$1/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$2@example.com\",\"password\":\"L0ad-Test-Pass!\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["tokens"]["access_token"])'
}

redis_answers() { # URL
  python3 - "$1" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
try:
    s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=1)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

nginx_conf upstream "listen 127.0.0.1:$UP_PORT; location / { return 200 'ok\n'; }"
nginx_conf proxy "listen 127.0.0.1:$NGINX_PORT; location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; }"
"$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" > "$WORK/bare.log" 2>&1 &
PIDS+=($!)
start_portcullis memory "$PC_PORT" "memory://"
WITH_REDIS=false
if [ -n "$REDIS_URL" ]; then
  if redis_answers "$REDIS_URL"; then
    start_portcullis redis "$PCR_PORT" "$REDIS_URL"
    WITH_REDIS=true
  else
    echo "no Redis at $REDIS_URL: the Redis row is skipped" >&2
  fi
fi
wait_port "$UP_PORT"; wait_port "$NGINX_PORT"; wait_port "$BARE_PORT"; wait_port "$PC_PORT"
if $WITH_REDIS; then wait_port "$PCR_PORT"; fi

sleep 1
IDLE_RSS_KB=$(rss_kb "$(cat "$WORK/memory.pid")")

# The login storm uses its own account: its logins would otherwise evict the session whose
# token the proxied runs present (sessions.max_per_user).
register "$PC_PORT" load
register "$PC_PORT" storm
TOKEN=$(login "$PC_PORT" load)
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/warm-up"
REDIS_TOKEN=""
if $WITH_REDIS; then
  register "$PCR_PORT" load
  REDIS_TOKEN=$(login "$PCR_PORT" load)
  curl -sf -o /dev/null -H "Authorization: Bearer $REDIS_TOKEN" "http://127.0.0.1:$PCR_PORT/warm-up"
fi

cat > "$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"storm@example.com","password":"L0ad-Test-Pass!"}'
EOF

# run NAME ARGS… → "rps p50_ms p99_ms" from wrk's --latency output; any failed answer fails.
run() {
  local name=$1; shift
  wrk --latency "$@" > "$WORK/$name.out"
  python3 - "$WORK/$name.out" "$name" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]", "", v)
    return n * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
failed = re.search(r"Non-2xx or 3xx responses:\s+\d+|Socket errors:.*", text)
if failed:
    sys.exit(f"{sys.argv[2]}: {failed.group(0)}")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
print(f"{rps:.0f} {p50:.3f} {p99:.3f}")
PY
}

W="-t1 -c$CONNECTIONS -d$DURATION"
read -r UP_RPS UP_P50 UP_P99 < <(run upstream $W "http://127.0.0.1:$UP_PORT/")
read -r NG_RPS NG_P50 NG_P99 < <(run nginx $W "http://127.0.0.1:$NGINX_PORT/")
read -r BA_RPS BA_P50 BA_P99 < <(run bare $W "http://127.0.0.1:$BARE_PORT/")
read -r PC_RPS PC_P50 PC_P99 < <(run portcullis $W -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/")
RE_RPS=0 RE_P50=0 RE_P99=0
if $WITH_REDIS; then
  read -r RE_RPS RE_P50 RE_P99 < <(run portcullis-redis $W -H "Authorization: Bearer $REDIS_TOKEN" "http://127.0.0.1:$PCR_PORT/")
fi
LOADED_RSS_KB=$(rss_kb "$(cat "$WORK/memory.pid")")

CORES=$(nproc)
read -r _ ONE_LOGIN_MS _ < <(run login-single -t1 -c1 -d5s -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login")
read -r LOGIN_RPS _ _ < <(run login-storm -t1 -c$((CORES * 4)) -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login")

# Proxied latency while a login storm runs (the storm's own answers are not measured here),
# then the same load without the storm.
wrk -t1 -c$((CORES * 4)) -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login" > /dev/null &
STORM=$!
sleep 1
read -r _ _ ST_P99 < <(run portcullis-storm -t1 -c8 -d5s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/")
wait "$STORM" || true
read -r _ _ IDLE_P99 < <(run portcullis-idle -t1 -c8 -d5s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/")

SOAK_SAMPLES=""
if [ "$SOAK" -gt 0 ]; then
  echo "soaking for ${SOAK}s…" >&2
  STEP=$(( SOAK / 10 > 0 ? SOAK / 10 : 1 ))
  wrk -t1 -c"$CONNECTIONS" -d"$(( STEP * 10 + 2 ))s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/" > "$WORK/soak.out" &
  SOAKER=$!
  for _ in $(seq 1 10); do
    sleep "$STEP"
    SOAK_SAMPLES="$SOAK_SAMPLES $(rss_kb "$(cat "$WORK/memory.pid")")"
  done
  wait "$SOAKER" || true
  grep -q "Non-2xx\|Socket errors" "$WORK/soak.out" && { echo "soak: failed answers" >&2; cat "$WORK/soak.out" >&2; exit 1; }
fi

python3 - <<PY
import os
cores = $CORES
limit = cores / ($ONE_LOGIN_MS / 1000)
with_redis = "$WITH_REDIS" == "true"
rows = [
    ("upstream direct", $UP_RPS, $UP_P50, $UP_P99),
    ("nginx plain proxy (no auth)", $NG_RPS, $NG_P50, $NG_P99),
    ("bare Pingora proxy (no auth)", $BA_RPS, $BA_P50, $BA_P99),
    ("portcullis, sessions in memory", $PC_RPS, $PC_P50, $PC_P99),
]
if with_redis:
    rows.append(("portcullis, sessions in Redis", $RE_RPS, $RE_P50, $RE_P99))
print(f"{cores} cores, {os.uname().sysname} {os.uname().release}; one worker each; "
      f"wrk -t1 -c$CONNECTIONS -d$DURATION")
print(f"{'':40} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
for name, rps, p50, p99 in rows:
    print(f"{name:40} {rps:>10.0f} {p50:>9.3f} {p99:>9.3f}")
print()
print(f"portcullis (memory) / nginx:        throughput {$PC_RPS / $NG_RPS:.2f}x  p99 {$PC_P99 / $NG_P99:.2f}x")
if with_redis:
    print(f"portcullis (Redis)  / nginx:        throughput {$RE_RPS / $NG_RPS:.2f}x  p99 {$RE_P99 / $NG_P99:.2f}x")
print(f"bare Pingora        / nginx:        throughput {$BA_RPS / $NG_RPS:.2f}x  p99 {$BA_P99 / $NG_P99:.2f}x")
print(f"portcullis (memory) / bare Pingora: throughput {$PC_RPS / $BA_RPS:.2f}x  p99 {$PC_P99 / $BA_P99:.2f}x")
print(f"login: one at a time {$ONE_LOGIN_MS:.1f} ms -> bcrypt limit {limit:.1f}/s on {cores} cores;"
      f" storm {$LOGIN_RPS:.1f}/s = {$LOGIN_RPS / limit:.2f}x the limit")
print(f"proxied p99 idle {$IDLE_P99:.3f} ms, during login storm {$ST_P99:.3f} ms = {$ST_P99 / $IDLE_P99:.2f}x")
print(f"RSS (sessions in memory): idle {$IDLE_RSS_KB / 1024:.1f} MiB, "
      f"after the proxied runs {$LOADED_RSS_KB / 1024:.1f} MiB")
samples = [int(x) for x in "$SOAK_SAMPLES".split()]
if samples:
    step = max($SOAK // 10, 1)
    print(f"soak: RSS MiB every {step}s: " + " ".join(f"{s / 1024:.1f}" for s in samples)
          + f" (last - first: {(samples[-1] - samples[0]) / 1024:+.1f} MiB)")
PY
