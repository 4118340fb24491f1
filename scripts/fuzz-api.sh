#!/usr/bin/env bash
# Fuzz the account and admin APIs from their contract: schemathesis generates requests from
# the served OpenAPI document (openapi/openapi.json) and checks every answer against it.
#
# Self-contained: builds the gateway, starts it on the embedded backends (SQLite, in-process
# sessions, file outbox) with a fresh data directory on free ports, installs schemathesis
# into a throw-away virtualenv, runs it, stops the gateway and removes everything.
# Needs cargo and python3 (with venv and network access to PyPI). Exit status 0 only when
# schemathesis reports no failure, at least FUZZ_MIN_CASES cases ran and the gateway
# logged no panic.
#
# Knobs (environment): FUZZ_MAX_EXAMPLES (cases per operation and phase, default 100),
# FUZZ_ADMIN_MAX_EXAMPLES (the same for the admin API's operations, default half of it),
# FUZZ_MIN_CASES (default 1000), FUZZ_SEED (default random, printed), FUZZ_TIMEOUT (seconds
# for the schemathesis run, default 420), SCHEMATHESIS_VERSION (default pinned below).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
MIN_CASES="${FUZZ_MIN_CASES:-1000}"
SEED="${FUZZ_SEED:-$RANDOM$RANDOM}"
RUN_TIMEOUT="${FUZZ_TIMEOUT:-420}"

work="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-fuzz.XXXXXX")"
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -TERM "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building the gateway"
cargo build --quiet --bin portcullis
binary="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/portcullis"

echo "== installing schemathesis $SCHEMATHESIS_VERSION into a throw-away virtualenv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
admin_port="$(free_port)"
while [ "$admin_port" = "$port" ]; do admin_port="$(free_port)"; done
base="http://127.0.0.1:$port"
# The public URL names localhost so that passkeys are on (a WebAuthn relying-party id
# cannot be an IP address) and their endpoints are fuzzed behind their real checks.
public_url="http://localhost:$port"

# Rate limits are off: with them on, the fuzzer would spend all but the first hundred
# cases on 429 answers and never reach the handlers. 429 stays in the document, and the
# limiter's own answers are covered by its tests.
cat >"$work/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin_port"
public_url = "$public_url"
threads = 2
shutdown_grace = "1s"

[logging]
format = "json"
level = "warn"
dir = "$work/logs"

[storage]
url = "sqlite://$work/data/portcullis.db"

[sessions]
url = "memory://"
# The hooks log in afresh for every case, and cases may be generated ahead of running:
# with the usual 5 the later logins would evict the sessions of cases not yet run.
max_per_user = 100000

[tokens]
signing_key_file = "$work/data/signing-key.pem"

[passwords]
bcrypt_cost = 4

[lockout]
# Short, so the hooks can wait out a lockout of the fuzz account (see fuzz-api-hooks.py).
duration = "2s"

[mail]
url = "file://$work/outbox"

[two_factor]
encryption_key_file = "$work/data/totp.key"

[admin]
# The hooks prove the administrator's second factor once, at the start (a TOTP code works
# once per 30 s step, so not per case): the proof must outlast the run.
max_auth_age = "24h"

[rate_limits]
global = ""
register = ""
login = ""
password_reset = ""

[[routes]]
name = "app"
path_prefix = "/"
upstream = "http://127.0.0.1:9"
policy = "authenticated"
EOF

echo "== starting the gateway on $base (admin :$admin_port)"
(cd "$work" && exec "$binary" --config "$work/portcullis.toml" serve) >"$work/gateway.out" 2>&1 &
gateway_pid=$!
python3 - "$base/health" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit("the gateway did not become healthy within 30 s")
        time.sleep(0.2)
EOF

# The administrator the admin API is fuzzed as: made the way an operator makes one, with a
# random password; fuzz-api-hooks.py turns TOTP on and proves it.
admin_email="admin-$SEED@example.com"
admin_password="Ad-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')9a"
printf '%s\n' "$admin_password" \
  | (cd "$work" && "$binary" --config "$work/portcullis.toml" user create "$admin_email" --role admin --password-stdin) \
  >/dev/null

# The admin API's operations get fewer generated cases than the rest (their coverage phase,
# every boundary value the document names, runs in full), so the run stays within a few
# minutes with nineteen more operations.
ADMIN_MAX_EXAMPLES="${FUZZ_ADMIN_MAX_EXAMPLES:-$(( (MAX_EXAMPLES + 1) / 2 ))}"
cat >"$work/schemathesis.toml" <<EOF
[[operations]]
include-path-regex = "^/api/admin/"
generation.max-examples = $ADMIN_MAX_EXAMPLES
EOF

echo "== schemathesis (seed $SEED, up to $MAX_EXAMPLES examples per operation, $ADMIN_MAX_EXAMPLES for the admin API)"
status=0
hooks="$(pwd)/scripts/fuzz-api-hooks.py"
# One worker: with two, schemathesis's example generation (Hypothesis) is not thread-safe and
# now and then reports a "flaky" runtime error of its own on an operation it did reach.
# Run from the work directory, so schemathesis's caches go away with it; no bytecode
# beside the hooks file either.
(cd "$work" && PYTHONDONTWRITEBYTECODE=1 \
PORTCULLIS_FUZZ_BASE="$base" \
PORTCULLIS_FUZZ_EMAIL="fuzz-$SEED@example.com" \
PORTCULLIS_FUZZ_PASSWORD="Fz-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')9a" \
PORTCULLIS_FUZZ_OUTBOX="$work/outbox" \
PORTCULLIS_FUZZ_ADMIN_EMAIL="$admin_email" \
PORTCULLIS_FUZZ_ADMIN_PASSWORD="$admin_password" \
SCHEMATHESIS_HOOKS="$hooks" \
  exec timeout "$RUN_TIMEOUT" "$work/venv/bin/schemathesis" --config-file "$work/schemathesis.toml" \
    run "$base/api/auth/openapi.json" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --request-timeout 10 \
    --no-color \
    --report json --report-json-path "$work/report.json") \
  | tee "$work/schemathesis.out" || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed (exit $status); reproduce with FUZZ_SEED=$SEED" >&2
  echo "-- gateway output (last 50 lines):" >&2
  tail -n 50 "$work/gateway.out" >&2
  exit 1
fi

cases="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["test_cases"]["generated"])' "$work/report.json")"
if [ "$cases" -lt "$MIN_CASES" ]; then
  echo "only $cases cases were generated, fewer than $MIN_CASES" >&2
  exit 1
fi
if grep -q "panicked" "$work/gateway.out" "$work/logs/"*.log 2>/dev/null; then
  echo "the gateway panicked during the run:" >&2
  grep -h "panicked" "$work/gateway.out" "$work/logs/"*.log >&2
  exit 1
fi
echo "== fuzzing passed: $cases cases, no failures (seed $SEED)"
