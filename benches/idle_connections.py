#!/usr/bin/env python3
"""Idle keep-alive connections: are they closed after server.keepalive_timeout, and does the
memory they held come back?

Starts an upstream (here, asyncio) and the given portcullis binary (one worker, no caps on
connections, keepalive_timeout IDLE seconds), opens CONNECTIONS client connections that
each get one proxied answer and then sit idle, and prints RSS at the start, with every
connection open and idle, and once the gateway has closed them all, with how long that took.

    python3 benches/idle_connections.py --binary target/release/portcullis
    CONNECTIONS=5000 IDLE=10 python3 benches/idle_connections.py --binary …

Needs an open-files limit above CONNECTIONS for this process and for the gateway.
"""
import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

CONNECTIONS = int(os.environ.get("CONNECTIONS", "5000"))
IDLE = int(os.environ.get("IDLE", "10"))
# jemalloc hands freed pages back to the system over about ten seconds (its decay time).
SETTLE = int(os.environ.get("SETTLE", "30"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def upstream(reader, writer):
    """Answers every request on the connection with a small 200."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def one_client(port, opened, closed):
    """One proxied answer, then idle until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /app/idle HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise SystemExit(f"unexpected answer: {head[:80]!r}")
    length = next(int(l.split(b":")[1]) for l in head.lower().split(b"\r\n")
                  if l.startswith(b"content-length:"))
    await reader.readexactly(length)
    opened.append(time.monotonic())
    try:
        while await reader.read(1024):
            pass
    except ConnectionError:
        pass
    closed.append(time.monotonic())
    writer.close()


async def main(binary):
    up_port, port, admin = free_port(), free_port(), free_port()
    up = await asyncio.start_server(upstream, "127.0.0.1", up_port, backlog=4096)
    work = tempfile.mkdtemp(prefix="idle-bench-")
    config = os.path.join(work, "portcullis.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{port}"
threads = 1
keepalive_timeout = "{IDLE}s"
max_connections = 0
max_connections_per_ip = 0
[logging]
dir = ""
level = "warn"
[storage]
url = "sqlite://{work}/portcullis.db"
[tokens]
signing_key_file = "{work}/signing-key.pem"
[two_factor]
encryption_key_file = "{work}/totp.key"
[mail]
url = "file://{work}/outbox"
[rate_limits]
global = ""
[[routes]]
path_prefix = "/app"
upstream = "http://127.0.0.1:{up_port}"
policy = "public"
""")
    gw = subprocess.Popen([binary, "serve", "--config", config], cwd=work,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        await asyncio.sleep(1)
        start = rss_kb(gw.pid)
        opened, closed = [], []
        tasks = []
        for i in range(CONNECTIONS):
            tasks.append(asyncio.create_task(one_client(port, opened, closed)))
            if i % 200 == 199:
                await asyncio.sleep(0.05)
        while len(opened) < CONNECTIONS:
            await asyncio.sleep(0.1)
        all_open = time.monotonic()
        held = rss_kb(gw.pid)
        done = await asyncio.wait(tasks, timeout=IDLE + 60)
        if done[1]:
            raise SystemExit(f"{len(done[1])} connections still open {IDLE + 60}s later")
        last = max(closed) - all_open
        await asyncio.sleep(2)
        soon = rss_kb(gw.pid)
        await asyncio.sleep(max(SETTLE - 2, 0))
        after = rss_kb(gw.pid)
        print(f"{CONNECTIONS} idle connections, keepalive_timeout {IDLE}s: all closed "
              f"{last:.1f}s after the last one went idle")
        print(f"RSS MiB: start {start / 1024:.1f}, all open {held / 1024:.1f} "
              f"({(held - start) * 1024 / CONNECTIONS:.0f} bytes a connection), "
              f"2 s after the last close {soon / 1024:.1f}, {SETTLE} s after {after / 1024:.1f} "
              f"({(after - start) / 1024:+.1f} over the start)")
    finally:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        gw.terminate()
        gw.wait(timeout=30)
        up.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="target/release/portcullis")
    asyncio.run(main(parser.parse_args().binary))
