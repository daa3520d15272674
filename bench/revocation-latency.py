#!/usr/bin/env python3
"""How long a revocation takes to end streams on another node.

Two gateway nodes share one Redis (the machine's, at REDIS_URL, with a fresh key
prefix). Each round opens SUBSCRIBERS event streams on node B with a token of a
fresh subject, revokes that subject on node A (`POST /revocations`), and measures,
per stream, the time from sending the revocation to the stream's end on node B.
Prints the median and the maximum per round, then over all rounds.

    python3 bench/revocation-latency.py [ROUNDS] [SUBSCRIBERS]

Uses target/release/sse-gateway when built, else target/debug/sse-gateway
(`cargo build --release` first for figures worth quoting).
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SUBSCRIBERS = int(sys.argv[2]) if len(sys.argv) > 2 else 50
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = next(
    path
    for path in (
        os.path.join(ROOT, "target/release/sse-gateway"),
        os.path.join(ROOT, "target/debug/sse-gateway"),
    )
    if os.path.exists(path)
)
SECRET = uuid.uuid4().hex + uuid.uuid4().hex


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(port, prefix):
    env = dict(os.environ)
    env.update(
        {
            "SSE_GATEWAY_SERVER__ADDR": f"127.0.0.1:{port}",
            "SSE_GATEWAY_AUTH__HS256_SECRET": SECRET,
            "SSE_GATEWAY_BACKEND__KIND": "redis",
            "SSE_GATEWAY_BACKEND__REDIS__URL": REDIS_URL,
            "SSE_GATEWAY_BACKEND__REDIS__KEY_PREFIX": prefix,
            "SSE_GATEWAY_DEMO__PUBLISHER": "false",
            "SSE_GATEWAY_LOG__LEVEL": "warn",
            "SSE_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_SUBJECT": "0",
        }
    )
    return env


def token(env, *args):
    return subprocess.check_output([BINARY, "token", *args], env=env, text=True).strip()


def wait_ready(port):
    for _ in range(400):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"node on {port} not ready")


def open_stream(port, bearer, opened, ended_at, index):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/events?stream=bench", headers={"Authorization": f"Bearer {bearer}"})
    response = connection.getresponse()
    assert response.status == 200, response.status
    response.fp.readline()  # retry:
    opened.release()
    while response.fp.readline():
        pass
    ended_at[index] = time.monotonic()


def main():
    prefix = f"revbench{uuid.uuid4().hex[:8]}:"
    ports = [free_port(), free_port()]
    logs = tempfile.NamedTemporaryFile(prefix="revocation-bench-", suffix=".log", delete=False)
    nodes = [
        subprocess.Popen([BINARY, "serve"], env=env_for(port, prefix), stdout=logs, stderr=logs, cwd=tempfile.gettempdir())
        for port in ports
    ]
    try:
        for port in ports:
            wait_ready(port)
        env = env_for(ports[0], prefix)
        admin = token(env, "--sub", "ops", "--admin", "--ttl", "1h")
        all_latencies = []
        for round_number in range(ROUNDS):
            subject = f"user-{uuid.uuid4().hex[:8]}"
            bearer = token(env, "--sub", subject, "--subscribe", "*", "--ttl", "1h")
            time.sleep(1.1)  # the revocation must come in a later second than the token's iat
            opened = threading.Semaphore(0)
            ended_at = [None] * SUBSCRIBERS
            threads = [
                threading.Thread(target=open_stream, args=(ports[1], bearer, opened, ended_at, i), daemon=True)
                for i in range(SUBSCRIBERS)
            ]
            for thread in threads:
                thread.start()
            for _ in threads:
                opened.acquire()
            connection = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)
            sent = time.monotonic()
            connection.request(
                "POST",
                "/revocations",
                body=json.dumps({"sub": subject}),
                headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
            )
            reply = connection.getresponse()
            assert reply.status == 200, reply.read()
            for thread in threads:
                thread.join(timeout=30)
            latencies = [(end - sent) * 1000 for end in ended_at if end is not None]
            assert len(latencies) == SUBSCRIBERS, f"{SUBSCRIBERS - len(latencies)} streams did not end"
            all_latencies.extend(latencies)
            print(
                f"round {round_number + 1}: {SUBSCRIBERS} streams on node B ended after "
                f"median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
            )
        print(
            f"all rounds: median {statistics.median(all_latencies):.1f} ms, "
            f"max {max(all_latencies):.1f} ms ({os.path.relpath(BINARY, ROOT)})"
        )
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait()
        # Leave nothing behind in the shared Redis.
        keys = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "--scan", "--pattern", prefix.replace(":", "\\:") + "*"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if keys:
            subprocess.run(["redis-cli", "-u", REDIS_URL, "DEL", *keys], capture_output=True, check=False)


if __name__ == "__main__":
    main()
