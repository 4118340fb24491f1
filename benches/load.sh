#!/usr/bin/env bash
# Load benchmark, all on loopback, in one run:
#   1. the upstream hit directly (nginx returning a small body, one worker),
#   2. the peers forwarding to it with no authentication, one worker each: nginx
#      (keep-alive upstream pool), Caddy reverse_proxy (one Go thread, GOMAXPROCS=1) and bare
#      Pingora (examples/bare_proxy.rs: the same server settings, nothing but forwarding),
#   3. what people run for the same job: nginx auth_request and Caddy forward_auth asking
#      Portcullis's /api/auth/verify on every request, then forwarding to the upstream,
#   4. Portcullis (threads = 1) forwarding authenticated requests: Bearer token, full
#      JWT + live-session check, identity headers and signed assertion; sessions in memory,
#      and in Redis (random key prefix) when Redis answers at REDIS_URL; first one token
#      over and over (every check a cache hit), then USERS users (default 50,000) whose
#      tokens wrk rotates over (benches/rotate_tokens.lua), so each token comes back less
#      often than the live-session cache keeps it and most requests miss that cache,
#   5. every core: nginx worker_processes 2, bare Pingora and Portcullis with threads = 2,
#   6. instructions per proxied request, counted by callgrind (valgrind) for nginx, bare
#      Pingora and Portcullis: INSTR_REQUESTS requests on one keep-alive connection after a
#      warm-up; unlike requests per second, noise does not move it,
# then login throughput at bcrypt cost 12 against the machine's bcrypt limit
# (cores / time of one login at concurrency 1), proxied p99 while a login storm runs, and
# memory: idle RSS, RSS with USERS live sessions in memory and with the caches full.
# SOAK=300 adds a soak of that many seconds with RSS sampled. Last, IDLE_CONNECTIONS (5,000)
# keep-alive connections each get one proxied answer and sit idle until server.keepalive_timeout
# closes them (benches/idle_connections.py), with RSS before, while open and after.
#
# Prints requests/s and p50/p99 for each, and the ratios. Needs wrk, nginx, caddy, valgrind,
# curl and python3 (Debian: apt-get install wrk nginx caddy valgrind curl python3). Debian's
# caddy package may start a service on :80; this script runs its own Caddy on BASE_PORT+….
#
#   benches/load.sh               # DURATION=10s CONNECTIONS=32 USERS=50000 INSTR_REQUESTS=2000
#   REDIS_URL= benches/load.sh    # without the Redis rows
#   INSTR_REQUESTS=0 benches/load.sh  # without callgrind
#   SOAK=300 benches/load.sh      # plus a 5-minute soak
#   IDLE_CONNECTIONS=0 benches/load.sh  # without the idle-connections row
#
# Callgrind's output stays in target/load-callgrind/ (under CARGO_TARGET_DIR when set) for
# callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REDIS_URL=${REDIS_URL-redis://127.0.0.1:6379/0}
USERS=${USERS:-50000}
INSTR_REQUESTS=${INSTR_REQUESTS:-2000}
SOAK=${SOAK:-0}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
BARE_PORT=$((BASE_PORT + 2))
PC_PORT=$((BASE_PORT + 3))     # sessions in memory; its admin port is the next one
PCR_PORT=$((BASE_PORT + 5))    # sessions in Redis; likewise
CADDY_PORT=$((BASE_PORT + 7))
NGINX_AUTH_PORT=$((BASE_PORT + 8))
CADDY_AUTH_PORT=$((BASE_PORT + 9))
MANY_PORT=$((BASE_PORT + 10))  # many users, sessions in memory (+ admin)
MANYR_PORT=$((BASE_PORT + 12)) # many users, sessions in Redis (+ admin)
NGINX2_PORT=$((BASE_PORT + 14))
BARE2_PORT=$((BASE_PORT + 15))
PC2_PORT=$((BASE_PORT + 16))   # threads = 2 (+ admin)
CG_PORT=$((BASE_PORT + 18))    # under callgrind, one at a time (+ admin)

TOOLS="wrk nginx caddy curl python3"
if [ "$INSTR_REQUESTS" -gt 0 ]; then TOOLS="$TOOLS valgrind callgrind_control"; fi
for tool in $TOOLS; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "load.sh needs $tool (apt-get install wrk nginx caddy valgrind curl python3)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "building release binaries…" >&2
cargo build --release --quiet --bin portcullis --example bare_proxy
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/portcullis
BARE=$TARGET_DIR/release/examples/bare_proxy

WORK=$(mktemp -d)
PIDS=()
REDIS_PREFIXES=()
cleanup() {
  # SIGINT: a fast shutdown for Pingora (SIGTERM would wait out its grace period), nginx and Caddy.
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for prefix in "${REDIS_PREFIXES[@]}"; do redis_forget "$REDIS_URL" "$prefix" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# nginx_conf NAME WORKERS SERVER_BLOCK: one nginx in the foreground, no master process.
nginx_conf() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<EOF
worker_processes $2;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body; proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fcgi; uwsgi_temp_path $WORK/$1/uwsgi; scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  upstream portcullis { server 127.0.0.1:$PC_PORT; keepalive 64; }
  server { $3 }
}
EOF
}

start_nginx() { # NAME WORKERS SERVER_BLOCK
  nginx_conf "$@"
  local master=off
  [ "$2" -gt 1 ] && master=on
  "$NGINX" -p "$WORK/$1" -c "$WORK/$1/nginx.conf" -g "daemon off; master_process $master;" &
  PIDS+=($!)
}

# start_caddy NAME SITE_BODY: Caddy on one Go thread, no admin endpoint, no automatic HTTPS,
# its state under $WORK.
start_caddy() {
  mkdir -p "$WORK/$1/home"
  cat > "$WORK/$1/Caddyfile" <<EOF
{
  admin off
  auto_https off
  storage file_system $WORK/$1/home/data
  log {
    level ERROR
  }
}
$2
EOF
  HOME="$WORK/$1/home" XDG_CONFIG_HOME="$WORK/$1/home" XDG_DATA_HOME="$WORK/$1/home" GOMAXPROCS=1 \
    caddy run --adapter caddyfile --config "$WORK/$1/Caddyfile" > "$WORK/$1/caddy.log" 2>&1 &
  PIDS+=($!)
}

wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; exit 1
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# portcullis_conf NAME PORT SESSIONS_URL THREADS BCRYPT_COST: one instance's config in
# $WORK/NAME/portcullis.toml. Short refresh lifetimes keep whatever a run leaves in Redis
# short-lived (the run also deletes its keys at exit).
portcullis_conf() {
  local name=$1 port=$2 sessions=$3 threads=$4 cost=$5
  local prefix="portcullis_load_$RANDOM$RANDOM$RANDOM:"
  case "$sessions" in redis*) REDIS_PREFIXES+=("$prefix") ;; esac
  mkdir -p "$WORK/$name"
  cat > "$WORK/$name/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
threads = $threads
[logging]
level = "warn"
dir = ""
[storage]
url = "sqlite://$WORK/$name/data/portcullis.db"
[sessions]
url = "$sessions"
key_prefix = "$prefix"
[tokens]
signing_key_file = "$WORK/$name/data/signing-key.pem"
access_ttl = "15m"
refresh_ttl = "20m"
remember_me_ttl = "20m"
[two_factor]
encryption_key_file = "$WORK/$name/data/totp.key"
[passwords]
bcrypt_cost = $cost
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
# The load accounts never open their verification mail.
require_verified_email = false
EOF
}

# start_portcullis NAME PORT SESSIONS_URL [THREADS [BCRYPT_COST]]: its pid in $WORK/NAME.pid
start_portcullis() {
  local name=$1 port=$2 sessions=$3 threads=${4:-1} cost=${5:-12}
  portcullis_conf "$name" "$port" "$sessions" "$threads" "$cost"
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

# redis_call URL PYTHON_BODY: a few lines of RESP over a socket, so no Redis client is needed.
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

redis_forget() { # URL PREFIX: deletes this run's keys (SCAN + UNLINK; never FLUSH*)
  python3 - "$1" "$2" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
prefix = sys.argv[2]
s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=5)
f = s.makefile("rb")
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    return read()
def read():
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [read() for _ in range(int(rest))]
    if kind == b"-":
        raise SystemExit(rest.decode())
    return rest
db = (u.path or "/0").strip("/") or "0"
cmd("SELECT", db)
cursor = b"0"
while True:
    cursor, keys = cmd("SCAN", cursor, "MATCH", prefix.replace("*", "\\*") + "*", "COUNT", "1000")
    if keys:
        cmd("UNLINK", *keys)
    if cursor == b"0":
        break
PY
}

# --- the servers under wrk ----------------------------------------------------------------

AUTH_LOCATIONS='
    location = /_portcullis_verify {
      internal;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://portcullis/api/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }
    location / {
      auth_request /_portcullis_verify;
      auth_request_set $portcullis_user_id   $upstream_http_x_user_id;
      auth_request_set $portcullis_email     $upstream_http_x_user_email;
      auth_request_set $portcullis_verified  $upstream_http_x_user_email_verified;
      auth_request_set $portcullis_roles     $upstream_http_x_user_roles;
      auth_request_set $portcullis_session   $upstream_http_x_session_id;
      auth_request_set $portcullis_assertion $upstream_http_x_identity_assertion;
      proxy_set_header X-User-Id             $portcullis_user_id;
      proxy_set_header X-User-Email          $portcullis_email;
      proxy_set_header X-User-Email-Verified $portcullis_verified;
      proxy_set_header X-User-Roles          $portcullis_roles;
      proxy_set_header X-Session-Id          $portcullis_session;
      proxy_set_header X-Identity-Assertion  $portcullis_assertion;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://app;
    }'
PROXY_LOCATION='location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://app; }'

start_nginx upstream 1 "listen 127.0.0.1:$UP_PORT; location / { return 200 'ok\n'; }"
start_nginx proxy 1 "listen 127.0.0.1:$NGINX_PORT; $PROXY_LOCATION"
start_nginx proxy2 2 "listen 127.0.0.1:$NGINX2_PORT; $PROXY_LOCATION"
start_nginx auth 1 "listen 127.0.0.1:$NGINX_AUTH_PORT; $AUTH_LOCATIONS"
start_caddy caddy ":$CADDY_PORT {
  reverse_proxy 127.0.0.1:$UP_PORT
}"
start_caddy caddy-auth ":$CADDY_AUTH_PORT {
  forward_auth 127.0.0.1:$PC_PORT {
    uri /api/auth/verify
    copy_headers X-User-Id X-User-Email X-User-Email-Verified X-User-Roles X-Session-Id X-Identity-Assertion
  }
  reverse_proxy 127.0.0.1:$UP_PORT
}"
"$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" 1 > "$WORK/bare.log" 2>&1 &
PIDS+=($!)
"$BARE" "127.0.0.1:$BARE2_PORT" "127.0.0.1:$UP_PORT" 2 > "$WORK/bare2.log" 2>&1 &
PIDS+=($!)
start_portcullis memory "$PC_PORT" "memory://"
start_portcullis threads2 "$PC2_PORT" "memory://" 2
# The many-users instances hash at bcrypt's lowest cost so that USERS logins take seconds,
# not hours; nothing on the proxied path depends on the cost.
start_portcullis many "$MANY_PORT" "memory://" 1 4
WITH_REDIS=false
if [ -n "$REDIS_URL" ]; then
  if redis_answers "$REDIS_URL"; then
    start_portcullis redis "$PCR_PORT" "$REDIS_URL"
    start_portcullis many-redis "$MANYR_PORT" "$REDIS_URL" 1 4
    WITH_REDIS=true
  else
    echo "no Redis at $REDIS_URL: the Redis rows are skipped" >&2
  fi
fi
for port in "$UP_PORT" "$NGINX_PORT" "$NGINX2_PORT" "$NGINX_AUTH_PORT" "$CADDY_PORT" \
  "$CADDY_AUTH_PORT" "$BARE_PORT" "$BARE2_PORT" "$PC_PORT" "$PC2_PORT" "$MANY_PORT"; do
  wait_port "$port"
done
if $WITH_REDIS; then wait_port "$PCR_PORT"; wait_port "$MANYR_PORT"; fi

sleep 1
IDLE_RSS_KB=$(rss_kb "$(cat "$WORK/memory.pid")")
MANY_IDLE_RSS_KB=$(rss_kb "$(cat "$WORK/many.pid")")

# The login storm uses its own account: its logins would otherwise evict the session whose
# token the proxied runs present (sessions.max_per_user).
register "$PC_PORT" load
register "$PC_PORT" storm
TOKEN=$(login "$PC_PORT" load)
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PC_PORT/warm-up"
register "$PC2_PORT" load
TOKEN2=$(login "$PC2_PORT" load)
REDIS_TOKEN=""
if $WITH_REDIS; then
  register "$PCR_PORT" load
  REDIS_TOKEN=$(login "$PCR_PORT" load)
  curl -sf -o /dev/null -H "Authorization: Bearer $REDIS_TOKEN" "http://127.0.0.1:$PCR_PORT/warm-up"
fi

echo "logging in $USERS users (sessions in memory)…" >&2
python3 benches/many_users.py "$MANY_PORT" "$WORK/many/data/portcullis.db" "$USERS" "$WORK/many.tokens"
MANY_SESSIONS_RSS_KB=$(rss_kb "$(cat "$WORK/many.pid")")
if $WITH_REDIS; then
  echo "logging in $USERS users (sessions in Redis)…" >&2
  python3 benches/many_users.py "$MANYR_PORT" "$WORK/many-redis/data/portcullis.db" "$USERS" "$WORK/many-redis.tokens"
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
W2="-t2 -c$((CONNECTIONS * 2)) -d$DURATION"
AUTH=(-H "Authorization: Bearer $TOKEN")
read -r UP_RPS UP_P50 UP_P99 < <(run upstream $W "http://127.0.0.1:$UP_PORT/")
read -r NG_RPS NG_P50 NG_P99 < <(run nginx $W "http://127.0.0.1:$NGINX_PORT/")
read -r CA_RPS CA_P50 CA_P99 < <(run caddy $W "http://127.0.0.1:$CADDY_PORT/")
read -r BA_RPS BA_P50 BA_P99 < <(run bare $W "http://127.0.0.1:$BARE_PORT/")
read -r NA_RPS NA_P50 NA_P99 < <(run nginx-auth $W "${AUTH[@]}" "http://127.0.0.1:$NGINX_AUTH_PORT/")
read -r CF_RPS CF_P50 CF_P99 < <(run caddy-auth $W "${AUTH[@]}" "http://127.0.0.1:$CADDY_AUTH_PORT/")
read -r PC_RPS PC_P50 PC_P99 < <(run portcullis $W "${AUTH[@]}" "http://127.0.0.1:$PC_PORT/")
# The same one token through the many-users rows' wrk script: wrk pays for calling into Lua
# on every request, on the cores the gateway runs on, so the many-users ratios are taken
# against this row, which differs from them only in how many tokens rotate.
ROTATE=(-s benches/rotate_tokens.lua)
echo "$TOKEN" > "$WORK/one.tokens"
read -r P1_RPS P1_P50 P1_P99 < <(run portcullis-one-rotated $W "${ROTATE[@]}" "http://127.0.0.1:$PC_PORT/" -- "$WORK/one.tokens")
LOADED_RSS_KB=$(rss_kb "$(cat "$WORK/memory.pid")")
# The many-users runs: a first pass over every token fills the verified-token, user and
# assertion caches (their lifetimes are longer than a run), then the measured run. The pass
# lasts long enough to present each token at least once at half the one-token rate.
WARM="-t1 -c$CONNECTIONS -d$(python3 -c "import math; print(math.ceil(2 * $USERS / max($PC_RPS, 1)) + 1)")s"
run many-warm $WARM "${ROTATE[@]}" "http://127.0.0.1:$MANY_PORT/" -- "$WORK/many.tokens" > /dev/null
read -r MA_RPS MA_P50 MA_P99 < <(run many $W "${ROTATE[@]}" "http://127.0.0.1:$MANY_PORT/" -- "$WORK/many.tokens")
MANY_FULL_RSS_KB=$(rss_kb "$(cat "$WORK/many.pid")")
RE_RPS=0 RE_P50=0 RE_P99=0 MR_RPS=0 MR_P50=0 MR_P99=0 R1_RPS=0 R1_P50=0 R1_P99=0
if $WITH_REDIS; then
  read -r RE_RPS RE_P50 RE_P99 < <(run portcullis-redis $W -H "Authorization: Bearer $REDIS_TOKEN" "http://127.0.0.1:$PCR_PORT/")
  echo "$REDIS_TOKEN" > "$WORK/one-redis.tokens"
  read -r R1_RPS R1_P50 R1_P99 < <(run portcullis-redis-one-rotated $W "${ROTATE[@]}" "http://127.0.0.1:$PCR_PORT/" -- "$WORK/one-redis.tokens")
  run many-redis-warm $WARM "${ROTATE[@]}" "http://127.0.0.1:$MANYR_PORT/" -- "$WORK/many-redis.tokens" > /dev/null
  read -r MR_RPS MR_P50 MR_P99 < <(run many-redis $W "${ROTATE[@]}" "http://127.0.0.1:$MANYR_PORT/" -- "$WORK/many-redis.tokens")
fi
read -r N2_RPS N2_P50 N2_P99 < <(run nginx2 $W2 "http://127.0.0.1:$NGINX2_PORT/")
read -r B2_RPS B2_P50 B2_P99 < <(run bare2 $W2 "http://127.0.0.1:$BARE2_PORT/")
read -r P2_RPS P2_P50 P2_P99 < <(run portcullis2 $W2 -H "Authorization: Bearer $TOKEN2" "http://127.0.0.1:$PC2_PORT/")

CORES=$(nproc)
# Logins at cost 12 on a busy machine can take longer than wrk's 2 s default timeout.
read -r _ ONE_LOGIN_MS _ < <(run login-single --timeout 30s -t1 -c1 -d5s -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login")
read -r LOGIN_RPS _ _ < <(run login-storm --timeout 30s -t1 -c$((CORES * 4)) -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login")

# Proxied latency while a login storm runs (the storm's own answers are not measured here),
# then the same load without the storm.
wrk --timeout 30s -t1 -c$((CORES * 4)) -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PC_PORT/api/auth/login" > /dev/null &
STORM=$!
sleep 1
read -r _ _ ST_P99 < <(run portcullis-storm -t1 -c8 -d5s "${AUTH[@]}" "http://127.0.0.1:$PC_PORT/")
wait "$STORM" || true
read -r _ _ IDLE_P99 < <(run portcullis-idle -t1 -c8 -d5s "${AUTH[@]}" "http://127.0.0.1:$PC_PORT/")

SOAK_SAMPLES=""
if [ "$SOAK" -gt 0 ]; then
  echo "soaking for ${SOAK}s…" >&2
  STEP=$(( SOAK / 10 > 0 ? SOAK / 10 : 1 ))
  wrk -t1 -c"$CONNECTIONS" -d"$(( STEP * 10 + 2 ))s" "${AUTH[@]}" "http://127.0.0.1:$PC_PORT/" > "$WORK/soak.out" &
  SOAKER=$!
  for _ in $(seq 1 10); do
    sleep "$STEP"
    SOAK_SAMPLES="$SOAK_SAMPLES $(rss_kb "$(cat "$WORK/memory.pid")")"
  done
  wait "$SOAKER" || true
  grep -q "Non-2xx\|Socket errors" "$WORK/soak.out" && { echo "soak: failed answers" >&2; cat "$WORK/soak.out" >&2; exit 1; }
fi

# --- instructions per request under callgrind ---------------------------------------------

# drive PORT COUNT [TOKEN | @FILE]: COUNT GETs on one keep-alive connection, with TOKEN, or
# with the tokens of FILE (one a line) in turn; any other answer than 200 fails.
drive() {
  python3 - "$@" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
arg = sys.argv[3] if len(sys.argv) > 3 else ""
tokens = open(arg[1:]).read().split() if arg.startswith("@") else [arg] if arg else []
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for i in range(count):
    headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"} if tokens else {}
    c.request("GET", "/", headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"answer {r.status} from port {port}")
PY
}

CG_DIR=$TARGET_DIR/load-callgrind
IDLE_SECONDS=5
# callgrind NAME PORT TOKEN CMD…: starts CMD under callgrind with instrumentation off,
# warms it up with CG_WARMUP (default 200) requests, then counts every thread of the process over
# INSTR_REQUESTS requests (dump .1), and over IDLE_SECONDS with no requests (dump .2), the
# background work a timer does whatever the traffic. Prints the instructions per request
# as counted, and with the idle rate times the window's length taken off.
callgrind() {
  local name=$1 port=$2 token=$3; shift 3
  rm -f "$CG_DIR/$name".out*
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$CG_DIR/$name.out" \
    "$@" > "$WORK/cg-$name.log" 2>&1 &
  local pid=$!
  # This runs in a command substitution, outside the script's EXIT trap.
  trap "kill -9 $pid 2>/dev/null || true" EXIT
  wait_port "$port"
  if [ "$token" = login ]; then
    register "$port" load
    token=$(login "$port" load)
  fi
  drive "$port" "${CG_WARMUP:-200}" $token
  callgrind_control -i on "$pid" > /dev/null
  local started ended
  started=$(date +%s.%N)
  drive "$port" "$INSTR_REQUESTS" $token
  ended=$(date +%s.%N)
  callgrind_control -d "$pid" > /dev/null
  sleep "$IDLE_SECONDS"
  callgrind_control -d "$pid" > /dev/null
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  python3 - "$CG_DIR/$name.out.1" "$CG_DIR/$name.out.2" "$INSTR_REQUESTS" "$started" "$ended" "$IDLE_SECONDS" <<'PY'
import re, sys
def total(path):
    return int(re.search(r"^(?:summary|totals): (\d+)", open(path).read(), re.M).group(1))
window, idle = total(sys.argv[1]), total(sys.argv[2])
n, seconds, idle_seconds = int(sys.argv[3]), float(sys.argv[5]) - float(sys.argv[4]), float(sys.argv[6])
background = idle / idle_seconds * seconds
print(f"{window / n:.0f} {(window - background) / n:.0f}")
PY
}

CG_NGINX="0 0" CG_BARE="0 0" CG_BARE_MODULES="0 0" CG_PC="0 0" CG_MANY="0 0"
# Many users under callgrind: the Redis many-users instance's accounts and sessions, served
# by a second instance with its config, so each of the first CG_USERS tokens (more than the
# measured requests) comes back only after the whole warm-up pass: every measured request
# misses the live-session cache (900 ms) and reads Redis, while verified tokens and users
# stay cached, as they do when real users come back within a minute.
CG_USERS=$(( INSTR_REQUESTS * 3 / 2 ))
if [ "$INSTR_REQUESTS" -gt 0 ]; then
  echo "counting instructions per request under callgrind…" >&2
  mkdir -p "$CG_DIR"
  nginx_conf cg-nginx 1 "listen 127.0.0.1:$CG_PORT; $PROXY_LOCATION"
  CG_NGINX=$(callgrind nginx "$CG_PORT" "" "$NGINX" -p "$WORK/cg-nginx" -c "$WORK/cg-nginx/nginx.conf" -g 'daemon off; master_process off;')
  CG_BARE=$(callgrind bare-pingora "$CG_PORT" "" "$BARE" "127.0.0.1:$CG_PORT" "127.0.0.1:$UP_PORT" 1)
  CG_BARE_MODULES=$(PINGORA_DEFAULT_MODULES=1 callgrind bare-pingora-default-modules "$CG_PORT" "" "$BARE" "127.0.0.1:$CG_PORT" "127.0.0.1:$UP_PORT" 1)
  portcullis_conf cg-portcullis "$CG_PORT" "memory://" 1 4
  CG_PC=$(callgrind portcullis "$CG_PORT" login "$BIN" --config "$WORK/cg-portcullis/portcullis.toml" serve)
  if $WITH_REDIS && [ "$USERS" -ge "$CG_USERS" ]; then
    head -n "$CG_USERS" "$WORK/many-redis.tokens" > "$WORK/cg-many.tokens"
    sed -e "s/127.0.0.1:$MANYR_PORT/127.0.0.1:$CG_PORT/" \
      -e "s/127.0.0.1:$((MANYR_PORT + 1))/127.0.0.1:$((CG_PORT + 1))/" \
      "$WORK/many-redis/portcullis.toml" > "$WORK/cg-many.toml"
    CG_MANY=$(CG_WARMUP=$CG_USERS callgrind portcullis-many-redis "$CG_PORT" "@$WORK/cg-many.tokens" "$BIN" --config "$WORK/cg-many.toml" serve)
  fi
fi
read -r CG_NGINX_ALL CG_NGINX_NET <<< "$CG_NGINX"
read -r CG_BARE_ALL CG_BARE_NET <<< "$CG_BARE"
read -r CG_BAREM_ALL CG_BAREM_NET <<< "$CG_BARE_MODULES"
read -r CG_PC_ALL CG_PC_NET <<< "$CG_PC"
read -r CG_MANY_ALL CG_MANY_NET <<< "$CG_MANY"

python3 - <<PY
import os
cores = $CORES
limit = cores / ($ONE_LOGIN_MS / 1000)
with_redis = "$WITH_REDIS" == "true"
users = $USERS
rows = [
    ("upstream direct", $UP_RPS, $UP_P50, $UP_P99),
    ("nginx plain proxy (no auth)", $NG_RPS, $NG_P50, $NG_P99),
    ("Caddy reverse_proxy (no auth)", $CA_RPS, $CA_P50, $CA_P99),
    ("bare Pingora proxy (no auth)", $BA_RPS, $BA_P50, $BA_P99),
    ("nginx auth_request -> portcullis verify", $NA_RPS, $NA_P50, $NA_P99),
    ("Caddy forward_auth -> portcullis verify", $CF_RPS, $CF_P50, $CF_P99),
    ("portcullis, memory, one token", $PC_RPS, $PC_P50, $PC_P99),
    ("portcullis, memory, one token, rotation script", $P1_RPS, $P1_P50, $P1_P99),
    (f"portcullis, memory, {users} users", $MA_RPS, $MA_P50, $MA_P99),
]
if with_redis:
    rows.append(("portcullis, Redis, one token", $RE_RPS, $RE_P50, $RE_P99))
    rows.append(("portcullis, Redis, one token, rotation script", $R1_RPS, $R1_P50, $R1_P99))
    rows.append((f"portcullis, Redis, {users} users", $MR_RPS, $MR_P50, $MR_P99))
print(f"{cores} cores, {os.uname().sysname} {os.uname().release}; one worker each; "
      f"wrk -t1 -c$CONNECTIONS -d$DURATION")
print(f"{'':46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
def table(rows):
    for name, rps, p50, p99 in rows:
        print(f"{name:46} {rps:>9.0f} {p50:>8.3f} {p99:>8.3f}")
table(rows)
print()
def ratio(label, a, b, pa, pb):
    print(f"{label:44} throughput {a / b:.2f}x  p99 {pa / pb:.2f}x")
ratio("portcullis (memory) / nginx", $PC_RPS, $NG_RPS, $PC_P99, $NG_P99)
ratio("portcullis (memory) / Caddy", $PC_RPS, $CA_RPS, $PC_P99, $CA_P99)
ratio("portcullis (memory) / nginx auth_request", $PC_RPS, $NA_RPS, $PC_P99, $NA_P99)
ratio("portcullis (memory) / Caddy forward_auth", $PC_RPS, $CF_RPS, $PC_P99, $CF_P99)
ratio("bare Pingora / nginx", $BA_RPS, $NG_RPS, $BA_P99, $NG_P99)
ratio("portcullis (memory) / bare Pingora", $PC_RPS, $BA_RPS, $PC_P99, $BA_P99)
ratio(f"{users} users / one token (memory)", $MA_RPS, $PC_RPS, $MA_P99, $PC_P99)
ratio(f"{users} users / one token, same script (memory)", $MA_RPS, $P1_RPS, $MA_P99, $P1_P99)
if with_redis:
    ratio("portcullis (Redis) / nginx", $RE_RPS, $NG_RPS, $RE_P99, $NG_P99)
    ratio(f"{users} users / one token (Redis)", $MR_RPS, $RE_RPS, $MR_P99, $RE_P99)
    ratio(f"{users} users / one token, same script (Redis)", $MR_RPS, $R1_RPS, $MR_P99, $R1_P99)
print()
print(f"every core: wrk -t2 -c$((CONNECTIONS * 2)) -d$DURATION, two workers each")
table([
    ("nginx plain proxy, worker_processes 2", $N2_RPS, $N2_P50, $N2_P99),
    ("bare Pingora, threads = 2", $B2_RPS, $B2_P50, $B2_P99),
    ("portcullis, memory, one token, threads = 2", $P2_RPS, $P2_P50, $P2_P99),
])
ratio("two workers / one: nginx", $N2_RPS, $NG_RPS, $N2_P99, $NG_P99)
ratio("two workers / one: bare Pingora", $B2_RPS, $BA_RPS, $B2_P99, $BA_P99)
ratio("two workers / one: portcullis", $P2_RPS, $PC_RPS, $P2_P99, $PC_P99)
ratio("portcullis / nginx, two workers each", $P2_RPS, $N2_RPS, $P2_P99, $N2_P99)
if $CG_PC_ALL > 0:
    print()
    print(f"instructions per proxied request (callgrind, $INSTR_REQUESTS requests on one "
          f"keep-alive connection after 200, every thread)")
    print(f"{'':46} {'counted':>9} {'net':>9}   (net: less the idle background rate)")
    for name, total, net in (
        ("nginx plain proxy", $CG_NGINX_ALL, $CG_NGINX_NET),
        ("bare Pingora", $CG_BARE_ALL, $CG_BARE_NET),
        ("bare Pingora, Pingora's default modules", $CG_BAREM_ALL, $CG_BAREM_NET),
        ("portcullis, memory, one token", $CG_PC_ALL, $CG_PC_NET),
    ) + ((("portcullis, Redis, each check a session miss", $CG_MANY_ALL, $CG_MANY_NET),)
         if $CG_MANY_ALL > 0 else ()):
        print(f"{name:46} {total:>9} {net:>9}")
    print(f"portcullis / bare Pingora: {$CG_PC_NET / $CG_BARE_NET:.2f}x (net), "
          f"{$CG_PC_ALL / $CG_BARE_ALL:.2f}x (counted); "
          f"bare Pingora / nginx: {$CG_BARE_NET / $CG_NGINX_NET:.2f}x; "
          f"portcullis / nginx: {$CG_PC_NET / $CG_NGINX_NET:.2f}x")
print()
print(f"login: one at a time {$ONE_LOGIN_MS:.1f} ms -> bcrypt limit {limit:.1f}/s on {cores} cores;"
      f" storm {$LOGIN_RPS:.1f}/s = {$LOGIN_RPS / limit:.2f}x the limit")
print(f"proxied p99 idle {$IDLE_P99:.3f} ms, during login storm {$ST_P99:.3f} ms = {$ST_P99 / $IDLE_P99:.2f}x")
print(f"RSS (sessions in memory): idle {$IDLE_RSS_KB / 1024:.1f} MiB, "
      f"after the proxied runs {$LOADED_RSS_KB / 1024:.1f} MiB")
per_session = ($MANY_SESSIONS_RSS_KB - $MANY_IDLE_RSS_KB) * 1024 / users
per_full = ($MANY_FULL_RSS_KB - $MANY_IDLE_RSS_KB) * 1024 / users
print(f"RSS with {users} live sessions in memory: {$MANY_SESSIONS_RSS_KB / 1024:.1f} MiB "
      f"({per_session:.0f} bytes a session over idle {$MANY_IDLE_RSS_KB / 1024:.1f} MiB); "
      f"with the caches full: {$MANY_FULL_RSS_KB / 1024:.1f} MiB ({per_full:.0f} bytes a session)")
samples = [int(x) for x in "$SOAK_SAMPLES".split()]
if samples:
    step = max($SOAK // 10, 1)
    print(f"soak: RSS MiB every {step}s: " + " ".join(f"{s / 1024:.1f}" for s in samples)
          + f" (last - first: {(samples[-1] - samples[0]) / 1024:+.1f} MiB)")
PY

# --- idle connections: closed after the idle time, memory back ------------------------------
if [ "$IDLE_CONNECTIONS" -gt 0 ]; then
  echo
  CONNECTIONS=$IDLE_CONNECTIONS python3 benches/idle_connections.py --binary "$BIN"
fi
