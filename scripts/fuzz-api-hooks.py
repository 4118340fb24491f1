"""Schemathesis hooks for scripts/fuzz-api.sh: a real, verified account to fuzz as, and a
real administrator for the admin API.

Without credentials every protected endpoint would answer 401 and the fuzzer would never
reach the handlers behind it. So an account is registered and verified through the mailed
link (the gateway writes mail to a file outbox), and every case for a protected endpoint
gets the access token of a fresh login: a fuzzed logout or logout-all would otherwise end
the session the following cases rely on (the script's config lifts `sessions.max_per_user`
so these logins never evict each other). The password is random per run, so the fuzzer
never guesses it and cannot deactivate the account or change its password.

The admin API needs an account with the role `admin` whose session proved a second factor
within `admin.max_auth_age`. The script creates that account with `portcullis user create
--role admin --password-stdin`; here it signs in, turns TOTP on through the API (codes are
computed as an authenticator app would, RFC 6238) and steps up with a code, and every
admin case gets that session's token (a fresh login would need a fresh code every time).
Should a case end the session, the next one signs in again with a recovery code. Accounts
to act on are made through the admin API itself (each signed in once, so it has a session),
and every other admin case is pointed at one of them or at one of their sessions instead of
a random id, so the handlers behind the 404 are reached too; the fuzz account and the
administrator are never among them.
"""

import base64
import email
import email.policy
import glob
import hashlib
import hmac
import itertools
import json
import os
import re
import struct
import time
import uuid
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["PORTCULLIS_FUZZ_BASE"]
EMAIL = os.environ["PORTCULLIS_FUZZ_EMAIL"]
PASSWORD = os.environ["PORTCULLIS_FUZZ_PASSWORD"]
OUTBOX = os.environ["PORTCULLIS_FUZZ_OUTBOX"]
ADMIN_EMAIL = os.environ["PORTCULLIS_FUZZ_ADMIN_EMAIL"]
ADMIN_PASSWORD = os.environ["PORTCULLIS_FUZZ_ADMIN_PASSWORD"]

ADMIN = r"^/api/admin/"
# How many accounts the admin cases act on.
TARGETS = 8

PROTECTED = (
    r"^/api/auth/(profile|sessions|sessions/\{id\}|change-password|deactivate|logout|logout-all"
    r"|resend-verification|setup-2fa|enable-2fa|disable-2fa|verify"
    r"|passkeys|passkeys/\{id\}|passkeys/register|passkeys/register/options)$"
)


def _call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        BASE + path,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _post(path, body, token=None):
    return _call("POST", path, body, token)


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


def _login_as(address, password, **second):
    """An access token of a fresh session of `address` (`second`: its second factor).

    The fuzzer reuses strings it saw in responses, the account's email among them, so its
    failed logins lock the account now and then (423); its wrong step-ups lock the
    administrator likewise. The script's config keeps lockouts to a couple of seconds: wait
    them out rather than turn lockout off for everyone.
    """
    deadline = time.monotonic() + 30
    while True:
        status, body = _post("/api/auth/login", {"email": address, "password": password, **second})
        if status == 200:
            return body["data"]["tokens"]["access_token"]
        if status != 423 or time.monotonic() > deadline:
            raise RuntimeError(f"logging in {address}: {status} {body}")
        time.sleep(0.5)


def login():
    """A fresh access token for the fuzz account."""
    return _login_as(EMAIL, PASSWORD)


def _totp(secret, step):
    """RFC 6238 (SHA-1, six digits, 30 s steps) for the time step `step`."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


class Administrator:
    """The fuzz run's administrator: a session whose second factor is proven."""

    def __init__(self):
        token = _login_as(ADMIN_EMAIL, ADMIN_PASSWORD)
        status, body = _post("/api/auth/setup-2fa", {}, token)
        if status != 200:
            raise RuntimeError(f"setting up TOTP for the administrator: {status} {body}")
        self.secret = body["data"]["secret"]
        self.used_steps = set()
        enable = {"secret": self.secret, "token": self._code(), "password": ADMIN_PASSWORD}
        status, body = _post("/api/auth/enable-2fa", enable, token)
        if status != 200:
            raise RuntimeError(f"turning TOTP on for the administrator: {status} {body}")
        self.recovery_codes = body["data"]["recovery_codes"]
        status, body = _post("/api/admin/step-up", {"code": self._code()}, token)
        if status != 200:
            raise RuntimeError(f"the administrator's step-up: {status} {body}")
        self.sessions = set()
        self._use(token)

    def _code(self):
        """A TOTP code of a step not used yet: a code works once (the server takes one step
        either side of now), so after two codes in one step this waits for the next."""
        while True:
            now = int(time.time()) // 30
            for step in (now, now + 1):
                if step not in self.used_steps:
                    self.used_steps.add(step)
                    return _totp(self.secret, step)
            time.sleep(1)

    def _use(self, token):
        """Makes `token` the one admin cases carry, noting its session's id."""
        status, body = _call("GET", "/api/auth/sessions", token=token)
        if status != 200:
            raise RuntimeError(f"listing the administrator's sessions: {status} {body}")
        self.sessions.update(s["id"] for s in body["data"]["sessions"] if s["current"])
        self.token = token

    def sign_in_again(self):
        """A new session, its second factor a recovery code (a TOTP code once they are used)."""
        code = self.recovery_codes.pop() if self.recovery_codes else self._code()
        self._use(_login_as(ADMIN_EMAIL, ADMIN_PASSWORD, two_factor_code=code))


def _user_id(token):
    status, body = _call("GET", "/api/auth/profile", token=token)
    if status != 200:
        raise RuntimeError(f"reading a profile: {status} {body}")
    return uuid.UUID(body["data"]["user"]["id"])


def _make_targets(admin):
    """Accounts for the admin cases to act on, each with a live session."""
    users, sessions = [], []
    for n in range(TARGETS):
        address = f"target{n}-{EMAIL}"
        body = {"email": address, "password": PASSWORD, "roles": ["fuzz"]}
        status, answer = _post("/api/admin/users", body, admin.token)
        if status != 201:
            raise RuntimeError(f"creating a target account: {status} {answer}")
        user = answer["data"]["user"]["id"]
        _login_as(address, PASSWORD)
        status, answer = _call("GET", f"/api/admin/users/{user}/sessions", token=admin.token)
        if status != 200:
            raise RuntimeError(f"listing a target's sessions: {status} {answer}")
        users.append(user)
        sessions.extend(s["id"] for s in answer["data"]["sessions"])
    return users, sessions


_prepare_account()
_ADMIN = Administrator()
_TARGET_USERS, _TARGET_SESSIONS = _make_targets(_ADMIN)
# The accounts the admin cases must leave alone: the stateful phase follows ids from one
# answer into the next request (GET /api/admin/users lists every account), and would
# otherwise deactivate or delete the fuzz account and end the administrator's session.
_PROTECTED_USERS = {_user_id(login()), _user_id(_ADMIN.token)}
_TURN = itertools.count()


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=PROTECTED)
class FreshSession:
    """A new session per case, so no case depends on what an earlier one ended."""

    def get(self, case, context):
        return login()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=ADMIN)
class AdminSession:
    """The administrator's session, proven once; signed in again only if a case ended it."""

    def get(self, case, context):
        return _ADMIN.token

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _protected(path, value):
    """Whether the `{id}` `value` of an admin `path` names the fuzz account, the
    administrator or one of the administrator's sessions."""
    if path.startswith("/api/admin/sessions/"):
        return str(value) in _ADMIN.sessions
    try:
        return uuid.UUID(str(value).strip()) in _PROTECTED_USERS
    except ValueError:
        return False


@schemathesis.hook
def before_call(context, case, kwargs):
    """Every other admin case with an `{id}` acts on a target account (or its session), and
    none acts on the fuzz account or the administrator."""
    path = case.operation.path
    params = case.path_parameters or {}
    if not path.startswith("/api/admin/") or "id" not in params:
        return
    turn = next(_TURN)
    if turn % 2 and not _protected(path, params["id"]):
        return
    pool = _TARGET_SESSIONS if path.startswith("/api/admin/sessions/") else _TARGET_USERS
    params["id"] = pool[(turn // 2) % len(pool)]


@schemathesis.hook
def after_call(context, case, response):
    """A case that ended the administrator's session (or outlived its proof): the next one
    signs in again. Only when the case carried that session's token and the session is
    really gone: the fuzzer also sends no token or a broken one on purpose, and a wrong
    step-up is a 401 too, but those leave the session as it was."""
    if not case.operation.path.startswith("/api/admin/"):
        return
    if response.status_code not in (401, 403):
        return
    if (case.headers or {}).get("Authorization") != f"Bearer {_ADMIN.token}":
        return
    status, _ = _call("GET", "/api/admin/users?limit=1", token=_ADMIN.token)
    if status in (401, 403):
        _ADMIN.sign_in_again()
