"""Benchmark 1: AWS cost per million emails, by service, for the standard workload and a faulty variant.

The real handlers run against moto in this process (resources from template.yaml); every AWS request
they make is counted by operation through botocore's event hooks; DynamoDB request units come from
item sizes (see bench/meter.py); the SQS event source mapping's receives and deletes are counted too;
a real aiosmtpd sink on loopback takes the mail. Prices: bench/prices.json.

`--smtp-rtt-ms N` makes the sink answer MAIL, each RCPT and the end of DATA N ms late (a provider N ms away,
issue 17); the time the sender's invocations spent waiting on it is billed as Lambda bills it, at the
function's memory. With 0 (the default) nothing waits and the figures are those of loopback.

    python -m bench.cost [--quick] [--messages N] [--variant standard|faults|both] [--smtp-rtt-ms N] [--accounts 1-3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from bench.meter import Tally
from bench.report import emit, table, verdict
from bench.sink import counting_sink
from bench.world import PLATFORM_LOG_BYTES, World, callback_server, make_message, running_world, setup_tenant

PRICES = json.loads((Path(__file__).parent / "prices.json").read_text())
TARGET_PER_MILLION = 3.0
MESSAGE_BYTES = 2048
PER_REQUEST = 100
ACCOUNTS = ("primary", "secondary", "bulk")
TENANT = "acme"


def reporter_included() -> bool:
    """The reporter is priced when its handler exists."""
    return (Path(__file__).resolve().parents[1] / "functions" / "reporter" / "app.py").exists()


def run_workload(
    total: int, *, faults: bool, seed: int = 7, smtp_rtt_ms: float = 0.0, accounts: int = len(ACCOUNTS)
) -> dict[str, Any]:
    """Submit and deliver `total` messages over the first `accounts` accounts; what it cost, per service."""
    rng = random.Random(seed)
    names = ACCOUNTS[:accounts]
    settings = {"GMP_RETRY_DELAYS": "0", "GMP_MAX_RETRIES": "3"}
    sink_context = counting_sink(reply_delay_ms=smtp_rtt_ms)
    with sink_context as (port, sink), callback_server() as (callback, _reports), running_world(settings) as world:
        world.smtp_waited = lambda: sink.waiting_seconds
        key = setup_tenant(world, TENANT, list(names), port, limits={"limit_per_minute": 1_000_000}, callback=callback)
        world.play_streams()
        world.reset_counts()
        requests = 0
        for start in range(0, total, PER_REQUEST):
            batch = []
            for n in range(start, min(total, start + PER_REQUEST)):
                to = None
                if faults:
                    roll = rng.random()
                    if roll < 0.10:
                        to = f"flaky451-{n}@example.net"  # deferred once, then accepted
                    elif roll < 0.12:
                        to = f"reject550-{n}@example.net"  # fails permanently
                batch.append(make_message(rng, f"m-{n}", rng.choice(names), MESSAGE_BYTES, to))
            status, reply = world.request("POST", "/commands/add-messages", {"messages": batch}, token=key)
            if status != 200 or reply.get("queued") != len(batch):
                raise RuntimeError(f"add-messages answered {status}: {str(reply)[:300]}")
            requests += 1
            world.deliver_all()  # drain as we go: moto's queues slow down with depth
            world.play_streams()
        world.deliver_all()
        world.play_streams()
        result = _costs(world, total, requests, sink.accepted, sink.sessions)
        result["smtp_rtt_ms"] = smtp_rtt_ms
        result["accounts"] = len(names)
        return result


def _costs(world: World, total: int, requests: int, delivered: int, smtp_sessions: int) -> dict[str, Any]:
    tally = Tally()
    tally.add(world.meter.tally)
    tally.add(world.esm_tally)
    memory = {name: fn.memory_size for name, fn in world.functions.items()}
    invocations = sum(s.count for s in world.invocations.values())
    # Billed duration = the handler's own CPU + the modelled wait on AWS + its wait on the SMTP provider (the
    # sink's reply delay, where the handler was not on CPU meanwhile; none on bare loopback).
    gb_seconds = sum(
        (s.cpu + s.modelled_latency + s.smtp_wait) * memory[name] / 1024 for name, s in world.invocations.items()
    )
    gb_seconds_cpu = sum(s.cpu * memory[name] / 1024 for name, s in world.invocations.items())
    log_bytes = world.logs.bytes + PLATFORM_LOG_BYTES * invocations
    wru, rru = sum(tally.wru.values()), sum(tally.rru.values())

    def billed(prefix: str) -> int:
        return sum(n for name, n in tally.billed_requests.items() if name.startswith(prefix))

    per_service = {
        "DynamoDB writes": (wru, wru * PRICES["dynamodb_write_request_unit"], "WRU"),
        "DynamoDB reads": (rru, rru * PRICES["dynamodb_read_request_unit"], "RRU"),
        "SQS": (billed("sqs."), billed("sqs.") * PRICES["sqs_request"], "requests (64 KB chunks)"),
        "API Gateway": (requests, requests * PRICES["apigateway_rest_request"], "requests"),
        "Lambda requests": (invocations, invocations * PRICES["lambda_request"], "invocations"),
        "Lambda duration": (gb_seconds, gb_seconds * PRICES["lambda_arm64_gb_second"], "GB-s"),
        "CloudWatch Logs": (log_bytes, log_bytes / 1e9 * PRICES["cloudwatch_logs_ingested_gb"], "bytes"),
        "KMS": (billed("kms."), billed("kms.") * PRICES["kms_request"], "requests"),
        "S3": (
            billed("s3."),
            billed("s3.PutObject") * PRICES["s3_put_request"] + billed("s3.GetObject") * PRICES["s3_get_request"],
            "requests",
        ),
        "Secrets Manager": (
            billed("secretsmanager."),
            billed("secretsmanager.") * PRICES["secretsmanager_request"],
            "requests",
        ),
    }
    dollars = sum(cost for _, cost, _ in per_service.values())
    return {
        "messages": total,
        "delivered": delivered,
        "smtp_sessions": smtp_sessions,
        "per_million": dollars / total * 1e6,
        "services": {
            name: {"units_per_message": units / total, "per_million": cost / total * 1e6, "unit": unit}
            for name, (units, cost, unit) in per_service.items()
        },
        "calls_per_message": tally.total_calls() / total,
        "operations": {name: n / total for name, n in sorted(tally.calls.items())},
        "wru_by_table": {name: n / total for name, n in sorted(tally.wru.items())},
        "rru_by_table": {name: n / total for name, n in sorted(tally.rru.items())},
        "gsi_wru_per_message": sum(tally.gsi_wru.values()) / total,
        "lambda": {
            name: {
                "invocations": s.count,
                "ms_per_invocation": 1000 * (s.cpu + s.modelled_latency + s.smtp_wait) / max(1, s.count),
                "cpu_ms_per_invocation": 1000 * s.cpu / max(1, s.count),
                "smtp_wait_ms_per_invocation": 1000 * s.smtp_wait / max(1, s.count),
                "smtp_held_ms_per_invocation": 1000 * s.smtp_held / max(1, s.count),
                # The handler's wall time without the emulator's, plus the modelled AWS wait: a cross-check.
                "wall_ms_per_invocation": 1000 * (s.wall + s.modelled_latency) / max(1, s.count),
                "memory_mb": memory[name],
            }
            for name, s in world.invocations.items()
        },
        "lambda_gb_seconds_cpu_only_per_million": gb_seconds_cpu / total * 1e6,
        "log_bytes_per_message": log_bytes / total,
    }


def _short(name: str) -> str:
    return name.removeprefix("gmp-local-")


def print_result(label: str, result: dict[str, Any]) -> None:
    """The human table of one variant."""
    rows = [
        [name, f"{s['units_per_message']:.3f}", s["unit"], f"${s['per_million']:.3f}"]
        for name, s in result["services"].items()
    ]
    rows.append(["TOTAL", "", "", f"${result['per_million']:.2f}"])
    print(
        table(
            f"\nCost per million emails: {label} ({result['messages']} messages)",
            ["service", "per message", "unit", "$ / million"],
            rows,
        )
    )
    ops = [[name, f"{n:.3f}"] for name, n in result["operations"].items()]
    print(
        table(
            f"\nAWS requests per message ({result['calls_per_message']:.2f} in all)", ["operation", "per message"], ops
        )
    )
    tables = [
        [_short(name), f"{n:.3f}", f"{result['rru_by_table'].get(name, 0):.3f}"]
        for name, n in result["wru_by_table"].items()
    ]
    print(table("\nDynamoDB units per message by table", ["table", "WRU", "RRU"], tables))
    functions = [
        [
            name.removesuffix("Function"),
            f"{s['invocations']}",
            f"{s['memory_mb']}",
            f"{s['ms_per_invocation']:.1f}",
            f"{s['cpu_ms_per_invocation']:.1f}",
            f"{s['smtp_held_ms_per_invocation']:.1f}",
            f"{s['smtp_wait_ms_per_invocation']:.1f}",
            f"{s['wall_ms_per_invocation']:.1f}",
        ]
        for name, s in result["lambda"].items()
    ]
    print(
        table(
            f"\nLambda time per invocation (ms), SMTP replies {result['smtp_rtt_ms']:g} ms late "
            "(priced: CPU + modelled AWS wait + SMTP wait off CPU; wall: without the emulator's share)",
            ["function", "invocations", "MB", "priced", "CPU", "SMTP replies held", "SMTP wait priced", "wall"],
            functions,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the cost benchmark and print its table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 messages: checks the benchmark runs")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--variant", choices=("standard", "faults", "both"), default="both")
    parser.add_argument(
        "--smtp-rtt-ms", type=float, default=0.0, help="the sink answers MAIL, RCPT and end of DATA this late"
    )
    parser.add_argument(
        "--accounts",
        type=int,
        choices=range(1, len(ACCOUNTS) + 1),
        default=len(ACCOUNTS),
        help="accounts the messages spread over (a sender batch sends to each side by side)",
    )
    args = parser.parse_args(argv)
    total = args.messages or (30 if args.quick else 10_000)
    results: dict[str, Any] = {}
    if args.variant in ("standard", "both"):
        results["standard"] = run_workload(total, faults=False, smtp_rtt_ms=args.smtp_rtt_ms, accounts=args.accounts)
        print_result(f"standard workload (about 2 KB, 100 per request, {args.accounts} accounts)", results["standard"])
    if args.variant in ("faults", "both"):
        results["faults"] = run_workload(total, faults=True, smtp_rtt_ms=args.smtp_rtt_ms, accounts=args.accounts)
        print_result("variant: 10 % deferred once (451), 2 % failed (550)", results["faults"])
    reporter = "included" if reporter_included() else "excluded: functions/reporter/app.py does not exist yet"
    print(f"\nReporter: {reporter}.")
    headline = results.get("standard") or results["faults"]
    latency = f" with SMTP replies {args.smtp_rtt_ms:g} ms late" if args.smtp_rtt_ms > 0 else ""
    figure = headline["per_million"]
    print(
        f"Standard workload{latency}: ${figure:.2f} per million emails, target <= ${TARGET_PER_MILLION:.2f}: "
        f"{verdict(figure, TARGET_PER_MILLION, at_most=True)}"
    )
    emit(
        "cost",
        {
            "quick": args.quick,
            "per_million": figure,
            "smtp_rtt_ms": args.smtp_rtt_ms,
            "target_per_million": TARGET_PER_MILLION,
            "met": figure <= TARGET_PER_MILLION,
            "reporter": reporter,
            "variants": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
