"""Benchmark 3: throughput through `make run` (`python -m local.embedded`, the one-machine runtime on SQLite).

One client posts N messages of about 1.2 KB in requests of 100 to the service's API; its sender workers
deliver them through an account pointing at a counting SMTP sink on loopback (in this process). Measured:
intake messages/s and request latency, delivered messages/s, submit-to-sink latency per message (the sink
notes when each X-Genro-Mail-ID arrives). Then, in the same run, the physical limit: the same messages sent
straight to the same sink with aiosmtplib over one connection, one after another, and over 4 and 10
connections at once (what concurrent sessions could give).

`--smtp-rtt-ms N` makes the sink answer MAIL, each RCPT and the end of DATA N ms late, as a provider N ms
away would (issue 17); the sink also counts the most SMTP sessions the runtime held open at once, which
must stay within the account's `--max-connections` (default 5, the account's own default). With a delay,
the physical limits send at most DIRECT_SAMPLE of the messages (one connection at 50 ms takes 150 ms a
message), the runtime is compared with the physical limit over as many connections as it may open, and
issue 17's target applies: at least 50 msg/s at 50 ms with 10 sessions.

    python -m bench.throughput [--quick] [--messages N] [--runtime embedded|aws] [--smtp-rtt-ms N]
                               [--max-connections N]

`--runtime aws` drives the AWS-fidelity mode (`python -m local`, the Lambda handlers around moto) instead:
for comparison only, moto answers in milliseconds a call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from bench.report import emit, table, verdict
from bench.sink import counting_sink
from bench.world import make_message

ROOT = Path(__file__).resolve().parents[1]
TARGET_SHARE_OF_LIMIT = 0.60  # delivered messages/s, as a share of the physical limit measured in the same run
TARGET_REQUEST_P50_MS = 50.0  # per request of 100 messages
TOKEN = "bench-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"
DIRECT_CONNECTIONS = (1, 4, 10)
DIRECT_SAMPLE = 300  # messages for each physical limit when the sink delays its replies
TARGET_AT_LATENCY_PER_SECOND = 50.0  # issue 17: delivered msg/s at 50 ms with max_connections = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants, from /proc (0 where unavailable)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            total += sum(_cpu_seconds(int(child)) for child in children.read().split())
    except (OSError, ValueError, IndexError):
        pass
    return total


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_stack(port: int, runtime: str, data_dir: str) -> subprocess.Popen[bytes]:
    """The runtime on a free port, its own SMTP sink off; returns once /health answers."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}",
        "GMP_DATA_DIR": data_dir,
        "GMP_PORT": str(port),
        "GMP_SMTP_SINK_PORT": "0",
        "GMP_MOTO_PORT": "0",
        "GMP_API_TOKEN": TOKEN,
        "GMP_SMTP_VERIFY_TLS": "false",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    module = "local.embedded" if runtime == "embedded" else "local"
    process = subprocess.Popen(
        [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"python -m {module} exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"python -m {module} did not answer /health within 120 s")


async def _direct(port: int, messages: list[EmailMessage], connections: int = 1) -> float:
    """Seconds to send `messages` over `connections` aiosmtplib connections at once, each one after another."""
    import aiosmtplib

    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) for _ in range(connections)]
    await asyncio.gather(*(smtp.connect() for smtp in clients))

    async def send(smtp: aiosmtplib.SMTP, share: list[EmailMessage]) -> None:
        for message in share:
            await smtp.send_message(message)

    started = time.perf_counter()
    await asyncio.gather(*(send(smtp, messages[n::connections]) for n, smtp in enumerate(clients)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(smtp.quit() for smtp in clients))
    return elapsed


def _as_email(message: dict[str, Any]) -> EmailMessage:
    email = EmailMessage()
    email["From"] = message["from"]
    email["To"] = ", ".join(message["to"])
    email["Subject"] = message["subject"]
    email["X-Genro-Mail-ID"] = "direct-" + message["id"]
    email.set_content(message["body"])
    return email


def run(
    total: int, timeout: float, runtime: str = "embedded", smtp_rtt_ms: float = 0.0, max_connections: int | None = None
) -> dict[str, Any]:
    """Drive the runtime and the direct path; the figures."""
    rng = random.Random(11)
    messages = [make_message(rng, f"m-{n}", "primary", 1200) for n in range(total)]
    port = _free_port()
    sink_context = counting_sink(reply_delay_ms=smtp_rtt_ms)
    with sink_context as (sink_port, sink), tempfile.TemporaryDirectory(prefix="gmp-bench-") as data_dir:
        stack = start_stack(port, runtime, data_dir)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
            admin = {"X-API-Token": TOKEN}
            tenant = client.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin)
            tenant.raise_for_status()
            key = {"X-API-Token": tenant.json()["api_key"]}
            account = {"id": "primary", "host": "127.0.0.1", "port": sink_port, "use_tls": False}
            if max_connections is not None:
                account["max_connections"] = max_connections
            client.post("/account", json=account, headers=key).raise_for_status()

            submitted: dict[str, float] = {}
            latencies: list[float] = []
            cpu_before = _cpu_seconds(stack.pid)
            started = time.perf_counter()
            wall_started = time.time()
            for start in range(0, total, 100):
                chunk = messages[start : start + 100]
                t0 = time.perf_counter()
                reply = client.post("/commands/add-messages", json={"messages": chunk}, headers=key)
                latencies.append(time.perf_counter() - t0)
                reply.raise_for_status()
                now = time.time()
                for message in chunk:
                    submitted[message["id"]] = now
            intake_seconds = time.perf_counter() - started
            finished = sink.wait_for(total, timeout)
            delivered_seconds = (max(sink.arrivals.values()) - wall_started) if sink.arrivals else float("inf")
            arrived = dict(sink.arrivals)
            stack_cpu = _cpu_seconds(stack.pid) - cpu_before
            stack_max_sessions = sink.max_open_sessions
        finally:
            stack.terminate()
            try:
                stack.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stack.kill()
        direct = [_as_email(m) for m in (messages if smtp_rtt_ms <= 0 else messages[:DIRECT_SAMPLE])]
        direct_per_second: dict[str, float] = {}
        for connections in DIRECT_CONNECTIONS:
            seconds = asyncio.run(_direct(sink_port, direct, connections))
            direct_per_second[str(connections)] = len(direct) / seconds
    to_sink = [arrived[i] - submitted[i] for i in submitted if i in arrived]
    return {
        "runtime": runtime,
        "messages": total,
        "delivered": len(arrived),
        "complete": finished,
        "intake_per_second": total / intake_seconds,
        "request_p50_ms": 1000 * _percentile(latencies, 0.5),
        "request_p99_ms": 1000 * _percentile(latencies, 0.99),
        "delivered_per_second": len(arrived) / delivered_seconds if delivered_seconds > 0 else 0.0,
        "to_sink_p50_ms": 1000 * _percentile(to_sink, 0.5),
        "to_sink_p99_ms": 1000 * _percentile(to_sink, 0.99),
        "direct_per_second": direct_per_second["1"],
        "direct_per_second_by_connections": direct_per_second,
        "direct_messages": len(direct),
        "smtp_rtt_ms": smtp_rtt_ms,
        "max_connections": max_connections or 5,
        "max_open_sessions": stack_max_sessions,
        # CPU the stack's processes spent per delivered message (/proc; 0 on systems without it).
        "stack_cpu_ms_per_message": 1000 * stack_cpu / max(1, len(arrived)),
        "request_mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the throughput benchmark and print its table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 messages")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for delivery")
    parser.add_argument("--runtime", choices=("embedded", "aws"), default="embedded")
    parser.add_argument(
        "--smtp-rtt-ms", type=float, default=0.0, help="the sink answers MAIL, RCPT and end of DATA this late"
    )
    parser.add_argument("--max-connections", type=int, default=None, help="the account's max_connections")
    args = parser.parse_args(argv)
    total = args.messages or (20 if args.quick else 2000)
    r = run(total, 120.0 if args.quick else args.timeout, args.runtime, args.smtp_rtt_ms, args.max_connections)
    delivered = r["delivered_per_second"]
    at_latency = args.smtp_rtt_ms > 0
    # At latency the runtime sends over up to max_connections sessions: compared with as many connections.
    compared = (
        str(r["max_connections"])
        if at_latency and str(r["max_connections"]) in r["direct_per_second_by_connections"]
        else "1"
    )
    share = delivered / r["direct_per_second_by_connections"][compared]
    sessions_ok = r["max_open_sessions"] <= r["max_connections"]
    latency_ok = delivered >= TARGET_AT_LATENCY_PER_SECOND or args.smtp_rtt_ms != 50 or r["max_connections"] != 10
    p50 = r["request_p50_ms"]
    rows = [
        ["intake (msg/s)", f"{r['intake_per_second']:.0f}", ""],
        [
            "request of 100: p50 / p99 (ms)",
            f"{p50:.0f} / {r['request_p99_ms']:.0f}",
            f"p50 < {TARGET_REQUEST_P50_MS:.0f}  {verdict(p50, TARGET_REQUEST_P50_MS, at_most=True)}",
        ],
        ["delivered (msg/s)", f"{delivered:.1f}", ""],
        ["submit to sink: p50 / p99 (ms)", f"{r['to_sink_p50_ms']:.0f} / {r['to_sink_p99_ms']:.0f}", ""],
        ["CPU per delivered message, all the runtime's processes (ms)", f"{r['stack_cpu_ms_per_message']:.1f}", ""],
        [
            "most SMTP sessions open at once (sink)",
            f"{r['max_open_sessions']}",
            f"<= {r['max_connections']} (max_connections)  {verdict(r['max_open_sessions'], r['max_connections'], at_most=True)}",
        ],
        *(
            [f"physical limit: aiosmtplib, {n} connection{'s at once' if n != '1' else ''} (msg/s)", f"{rate:.1f}", ""]
            for n, rate in r["direct_per_second_by_connections"].items()
        ),
        [
            f"delivered / physical limit over {compared} connection{'s' if compared != '1' else ''}",
            f"{share:.1%}",
            f">= {TARGET_SHARE_OF_LIMIT:.0%}  {verdict(share, TARGET_SHARE_OF_LIMIT, at_most=False)}",
        ],
    ]
    if args.smtp_rtt_ms == 50 and r["max_connections"] == 10:
        rows.append(
            [
                "delivered at 50 ms with 10 sessions (issue 17)",
                f"{delivered:.1f}",
                f">= {TARGET_AT_LATENCY_PER_SECOND:.0f}  "
                f"{verdict(delivered, TARGET_AT_LATENCY_PER_SECOND, at_most=False)}",
            ]
        )
    title = (
        f"Throughput through {'make run (SQLite)' if args.runtime == 'embedded' else 'make run-aws (moto)'}: "
        f"{r['delivered']}/{r['messages']} messages of ~1.2 KB, requests of 100, "
        f"SMTP replies {args.smtp_rtt_ms:g} ms late"
        + (f" (physical limits over {r['direct_messages']} messages)" if args.smtp_rtt_ms > 0 else "")
    )
    print(table(title, ["figure", "value", "target"], rows))
    emit(
        "throughput",
        {
            "quick": args.quick,
            **r,
            "target_share_of_limit": TARGET_SHARE_OF_LIMIT,
            "target_request_p50_ms": TARGET_REQUEST_P50_MS,
            "met": share >= TARGET_SHARE_OF_LIMIT
            and p50 < TARGET_REQUEST_P50_MS
            and r["complete"]
            and sessions_ok
            and latency_ok,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
