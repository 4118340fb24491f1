#!/usr/bin/env python3
"""Many users with live sessions, for benches/load.sh's many-users rows.

Creates N accounts straight in a gateway's SQLite database, all sharing one password hash
that the gateway itself made (one registration through the API, at the instance's bcrypt
cost), then logs every account in through the public API, so each has one live session in
whatever session store the instance uses (memory or Redis), and writes the N access tokens
to a file, one a line. Only the accounts are written directly, and only into a benchmark
instance's own database: sessions and tokens come from the gateway's ordinary login.

    many_users.py PORT DB_PATH N TOKENS_FILE
"""

import http.client
import json
import sqlite3
import sys
import threading
import uuid

PASSWORD = "L0ad-Test-Pass!"
LOGIN_CONNECTIONS = 6


def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def main():
    port, db_path, count, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]

    # One account through the API: its row carries the hash every clone shares.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, body = post(conn, "/api/auth/register", {
        "email": "seed@example.com", "password": PASSWORD,
        "first_name": "Load", "last_name": "Test",
    })
    if status not in (200, 201):
        sys.exit(f"registering the seed account: {status} {body[:200]!r}")

    db = sqlite3.connect(db_path, timeout=30)
    seed = db.execute(
        "SELECT password_hash, created_at, updated_at FROM users WHERE email = ?",
        ("seed@example.com",),
    ).fetchone()
    if seed is None:
        sys.exit("the seed account is not in the database")
    password_hash, created_at, updated_at = seed
    with db:
        db.executemany(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, is_verified,"
            " is_active, created_at, updated_at) VALUES (?, ?, ?, 'Load', 'Test', 1, 1, ?, ?)",
            ((str(uuid.uuid4()), f"u{i}@example.com", password_hash, created_at, updated_at)
             for i in range(count)),
        )
    db.close()

    tokens = [None] * count
    failures = []

    def log_in(first):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(first, count, LOGIN_CONNECTIONS):
            status, body = post(c, "/api/auth/login",
                                {"email": f"u{i}@example.com", "password": PASSWORD})
            if status != 200:
                failures.append(f"u{i}: {status} {body[:200]!r}")
                return
            tokens[i] = json.loads(body)["data"]["tokens"]["access_token"]

    threads = [threading.Thread(target=log_in, args=(k,)) for k in range(LOGIN_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit("logins failed: " + "; ".join(failures[:3]))
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main()
