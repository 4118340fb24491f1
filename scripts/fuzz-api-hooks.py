"""Schemathesis hooks for scripts/fuzz-api.sh: a real, verified account to fuzz as.

Without credentials every protected endpoint would answer 401 and the fuzzer would never
reach the handlers behind it. So an account is registered and verified through the mailed
link (the gateway writes mail to a file outbox), and every case for a protected endpoint
gets the access token of a fresh login: a fuzzed logout or logout-all would otherwise end
the session the following cases rely on (the script's config lifts `sessions.max_per_user`
so these logins never evict each other). The password is random per run, so the fuzzer
never guesses it and cannot deactivate the account or change its password.
"""

import email
import email.policy
import glob
import json
import os
import re
import time
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["PORTCULLIS_FUZZ_BASE"]
EMAIL = os.environ["PORTCULLIS_FUZZ_EMAIL"]
PASSWORD = os.environ["PORTCULLIS_FUZZ_PASSWORD"]
OUTBOX = os.environ["PORTCULLIS_FUZZ_OUTBOX"]

PROTECTED = (
    r"^/api/auth/(profile|sessions|sessions/\{id\}|change-password|deactivate|logout|logout-all"
    r"|resend-verification|setup-2fa|enable-2fa|disable-2fa|verify"
    r"|passkeys|passkeys/\{id\}|passkeys/register|passkeys/register/options)$"
)


def _post(path, body):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _verification_token():
    """The token of the verification mail to EMAIL, from the file outbox."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in glob.glob(os.path.join(OUTBOX, "**", "*.eml"), recursive=True):
            with open(path, "rb") as f:
                message = email.message_from_binary_file(f, policy=email.policy.default)
            if EMAIL not in str(message["To"]):
                continue
            text = message.get_body(preferencelist=("plain",)).get_content()
            found = re.search(r"token=([A-Za-z0-9_-]{43})", text)
            if found:
                return found.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"no verification mail to {EMAIL} in {OUTBOX}")


def _prepare_account():
    status, body = _post(
        "/api/auth/register",
        {"email": EMAIL, "password": PASSWORD, "first_name": "Fuzz", "last_name": "Account"},
    )
    if status != 201:
        raise RuntimeError(f"registering the fuzz account: {status} {body}")
    status, body = _post("/api/auth/verify-email", {"token": _verification_token()})
    if status != 200:
        raise RuntimeError(f"verifying the fuzz account: {status} {body}")


def login():
    """A fresh access token for the fuzz account.

    The fuzzer reuses strings it saw in responses, the account's email among them, so its
    failed logins lock the account now and then (423). The script's config keeps lockouts
    to a couple of seconds: wait them out rather than turn lockout off for everyone.
    """
    deadline = time.monotonic() + 30
    while True:
        status, body = _post("/api/auth/login", {"email": EMAIL, "password": PASSWORD})
        if status == 200:
            return body["data"]["tokens"]["access_token"]
        if status != 423 or time.monotonic() > deadline:
            raise RuntimeError(f"logging in the fuzz account: {status} {body}")
        time.sleep(0.5)


_prepare_account()


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=PROTECTED)
class FreshSession:
    """A new session per case, so no case depends on what an earlier one ended."""

    def get(self, case, context):
        return login()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
