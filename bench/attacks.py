#!/usr/bin/env python3
"""Reproduces the attacks of the second hardening pass against a gateway binary and
prints the figures recorded in docs/HARDENING.md (before/after).

    python3 bench/attacks.py BINARY [SCENARIO ...]

BINARY is an `sse-gateway` executable (e.g. target/release/sse-gateway, or one built
from an older commit). Each scenario starts its own gateway on a free port in a
temporary directory and stops it afterwards. Scenarios: stalled, idle_h2, webhook,
flood, replay, streams (default: all). Standard library only.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

SECRET = "attack-bench-secret-0123456789abcdef0123"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub="attacker", subscribe=("*",), publish=()):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": int(time.time()) + 3600, "subscribe": list(subscribe), "publish": list(publish)}
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


class Gateway:
    def __init__(self, binary, env=None, nofile=None, config=""):
        self.dir = tempfile.TemporaryDirectory()
        with open(os.path.join(self.dir.name, "config.toml"), "w") as f:
            f.write(config)
        command = [binary, "serve"]
        if nofile:
            command = ["prlimit", f"--nofile={nofile}:{nofile}"] + command
        environment = dict(os.environ)
        environment.update({
            "SSE_GATEWAY_SERVER__ADDR": "127.0.0.1:0",
            "SSE_GATEWAY_AUTH__HS256_SECRET": SECRET,
            "SSE_GATEWAY_DEMO__ENABLED": "false",
            "SSE_GATEWAY_DEMO__PUBLISHER": "false",
            "RUST_LOG": "info",
        })
        environment.update(env or {})
        self.process = subprocess.Popen(command, cwd=self.dir.name, env=environment,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            match = re.search(r"addr=([0-9.]+):(\d+)", line)
            if "listening" in line and match:
                self.port = int(match.group(2))
                break
        else:
            raise RuntimeError("the gateway did not start")
        # Keep draining its output so it never blocks on a full pipe.
        self.lines = []
        asyncio.get_event_loop().run_in_executor(None, self._drain)

    def _drain(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.dir.cleanup()

    def rss_mb(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fds(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


async def connect(port, data=b""):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def is_open(reader):
    """Whether the server still holds the connection (no EOF, no reset, nothing sent)."""
    try:
        while True:
            if not await asyncio.wait_for(reader.read(4096), 0.05):
                return False
    except asyncio.TimeoutError:
        return True
    except (ConnectionError, OSError):
        return False


async def request(port, raw, timeout=5.0):
    """Sends a raw request, returns the status line (or why there is none)."""
    try:
        reader, writer = await asyncio.wait_for(connect(port, raw), timeout)
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        return line.decode(errors="replace").strip() or "closed"
    except asyncio.TimeoutError:
        return "timeout"
    except (ConnectionError, OSError) as error:
        return f"error: {error}"


async def count_open(connections):
    states = await asyncio.gather(*(is_open(reader) for reader, _ in connections))
    return sum(states)


async def stalled(binary):
    """1,100 connections that never finish choosing a protocol, process at 1,024 fds."""
    gateway = Gateway(binary, nofile=1024)
    openings = [b"P", H2_PREFACE[:10], H2_PREFACE + H2_SETTINGS]
    connections = []
    for i in range(1100):
        try:
            connections.append(await asyncio.wait_for(connect(gateway.port, openings[i % 3]), 2))
        except (asyncio.TimeoutError, OSError):
            pass
    await asyncio.sleep(1)
    health = await request(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    fds = gateway.fds()
    await asyncio.sleep(14)
    still_open = await count_open(connections)
    health_later = await request(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(50)
    open_later = await count_open(connections)
    gateway.stop()
    return {"stalled connections made": len(connections), "/healthz while they are held": health,
            "gateway fds while held": fds, "still open after 15 s": still_open, "/healthz after 15 s": health_later,
            "still open after 65 s": open_later}


async def idle_h2(binary, count=5000, wait=70):
    """5,000 HTTP/2 connections (preface + SETTINGS), then nothing."""
    gateway = Gateway(binary)
    base_rss = gateway.rss_mb()
    connections = []
    for _ in range(count):
        connections.append(await connect(gateway.port, H2_PREFACE + H2_SETTINGS))
    await asyncio.sleep(5)
    rss, fds = gateway.rss_mb(), gateway.fds()
    await asyncio.sleep(wait - 5)
    still_open = await count_open(connections)
    result = {"connections": count, "RSS before (MB)": round(base_rss, 1), "RSS after 5 s (MB)": round(rss, 1),
              "fds after 5 s": fds, f"still open after {wait} s": still_open,
              f"fds after {wait} s": gateway.fds(), f"RSS after {wait} s (MB)": round(gateway.rss_mb(), 1)}
    gateway.stop()
    return result


WEBHOOK_CONFIG = """
[[webhooks.hooks]]
stream = "ci.github"
provider = "github"
secret = "github-hook-secret-for-the-bench"
[[webhooks.hooks]]
stream = "ci.gitlab"
provider = "gitlab"
secret = "gitlab-hook-secret-for-the-bench"
"""


async def webhook(binary, count=1000, settle=60):
    """1,000 stalled uploads (Content-Length 1 MiB, all but one byte sent, wrong secret)."""
    gateway = Gateway(binary, config=WEBHOOK_CONFIG)
    base_rss = gateway.rss_mb()
    size = 1 << 20
    head = (f"POST /webhooks/ci.github HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={'00' * 32}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    chunk = b"x" * (size - 1)
    connections = []
    refused = 0
    for _ in range(count):
        reader, writer = await connect(gateway.port, head)
        writer.write(chunk)
        connections.append((reader, writer))
    await asyncio.gather(*(w.drain() for _, w in connections), return_exceptions=True)
    await asyncio.sleep(3)
    peak = gateway.rss_mb()
    for reader, _ in connections:
        try:
            line = await asyncio.wait_for(reader.readline(), 0.01)
            refused += line.startswith(b"HTTP/1.1 503") or line.startswith(b"HTTP/1.1 401")
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
    for _, writer in connections:
        writer.close()
    await asyncio.sleep(settle)
    after = gateway.rss_mb()
    gitlab = (f"POST /webhooks/ci.gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: wrong\r\n"
              f"Content-Length: {size}\r\n\r\n").encode()
    gitlab_status = await request(gateway.port, gitlab, timeout=3)
    unknown = await request(gateway.port, gitlab.replace(b"ci.gitlab", b"ci.nothing"), timeout=3)
    gateway.stop()
    return {"uploads": count, "RSS before (MB)": round(base_rss, 1), "RSS with uploads held (MB)": round(peak, 1),
            "answered at once (401/503)": refused, f"RSS {settle} s after they closed (MB)": round(after, 1),
            "GitLab wrong token, body not sent": gitlab_status, "unknown hook, same request": unknown}


async def event_stream(port, streams, last_event_id=None, sub="attacker"):
    query = "&".join(f"stream={s}" for s in streams)
    head = f"GET /events?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token(sub)}\r\n"
    if last_event_id is not None:
        head += f"Last-Event-ID: {last_event_id}\r\n"
    reader, writer = await connect(port, (head + "\r\n").encode())
    status = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return status, reader, writer


async def flood(binary, seconds=10):
    """One subscriber sends as much as it can into its own event stream."""
    gateway = Gateway(binary)
    _, reader, writer = await event_stream(gateway.port, ["flood"])
    cpu = gateway.cpu_seconds()
    junk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + seconds
    closed = False
    while time.monotonic() < deadline:
        try:
            writer.write(junk)
            await asyncio.wait_for(writer.drain(), 1)
            sent += len(junk)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            closed = True
            break
    used = gateway.cpu_seconds() - cpu
    gateway.stop()
    return {"bytes accepted": sent, "connection closed by the gateway": closed,
            f"gateway CPU seconds in {seconds} s": round(used, 2)}


async def replay(binary, subscribers=300, streams=32, events=1000, settle=15):
    """300 subscribers resume with an unknown id on 32 streams x 1,000 events, then idle;
    beside the same number of subscribers that never resumed, on a fresh gateway."""
    names = [f"r{i}" for i in range(streams)]
    publisher = token("publisher", subscribe=(), publish=("*",))

    async def prepared():
        gateway = Gateway(binary)
        for name in names:
            batch = json.dumps([{"stream": name, "data": f"event {i:04d} of a replayed stream"} for i in range(events)])
            raw = (f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {publisher}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(batch)}\r\n\r\n{batch}").encode()
            assert "200" in await request(gateway.port, raw)
        await asyncio.sleep(1)
        return gateway

    async def one(gateway, i, last_event_id):
        _, reader, writer = await event_stream(gateway.port, names, last_event_id=last_event_id, sub=f"r{i}")
        # Preamble, and with a resume the gap notice and every event.
        records = streams * events + 2 if last_event_id else 1
        seen, tail = 0, b""
        while seen < records:
            data = await reader.read(65536)
            if not data:
                break
            seen += (tail + data).count(b"\n\n") - tail.count(b"\n\n")
            tail = data[-1:]
        return writer

    result = {}
    for label, last_event_id in (("idle, no resume", None), ("idle after the replay", "unknown")):
        gateway = await prepared()
        base = gateway.rss_mb()
        writers = await asyncio.gather(*(one(gateway, i, last_event_id) for i in range(subscribers)))
        await asyncio.sleep(settle)
        after = gateway.rss_mb()
        for writer in writers:
            writer.close()
        gateway.stop()
        result[f"{label}: RSS growth (MB)"] = round(after - base, 1)
        result[f"{label}: per subscriber (KB)"] = round((after - base) * 1024 / subscribers, 1)
    return result


async def streams_held(binary, per_connection=32):
    """How many distinct streams one subject's connections can hold."""
    gateway = Gateway(binary)
    held, connections, refusal = 0, [], ""
    while True:
        names = [f"s{held + i}" for i in range(per_connection)]
        status, reader, writer = await event_stream(gateway.port, names)
        if b" 200" not in status:
            refusal = status.decode().strip()
            break
        held += per_connection
        connections.append(writer)
    gateway.stop()
    return {"streams one subject holds": held, "connections": len(connections), "then": refusal}


SCENARIOS = {"stalled": stalled, "idle_h2": idle_h2, "webhook": webhook, "flood": flood, "replay": replay,
             "streams": streams_held}


async def main():
    binary = sys.argv[1]
    names = sys.argv[2:] or list(SCENARIOS)
    for name in names:
        started = time.monotonic()
        result = await SCENARIOS[name](binary)
        print(json.dumps({"scenario": name, "seconds": round(time.monotonic() - started, 1), **result}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
