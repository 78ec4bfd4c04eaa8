"""Benchmark 4: sender efficiency. AWS calls per delivered message in one warm batch of 10 to one account,
and SMTP connections opened per 1000 messages by one warm container: at most the account's sessions
(`max_connections`, 5 by default: a batch sends over that many at once), each kept for the next batches.

The calls are reported, no longer judged: the "at most 2 AWS calls per message" target is withdrawn
(issue 12). The sender keeps a claim before and a result after each SMTP transaction; the cost per
million emails (bench.cost) is the target that matters.

    python -m bench.sender [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

from bench.report import emit, table, verdict
from bench.sink import counting_sink
from bench.world import make_message, running_world, setup_tenant

TARGET_CONNECTIONS = 5  # the account's max_connections (its default): opened once, then reused


def run(total: int) -> dict[str, Any]:
    """Warm the container with one batch, measure the next batch, then deliver `total` more."""
    from mailproxy import smtp

    rng = random.Random(3)
    with counting_sink() as (port, sink), running_world({"GMP_RETRY_DELAYS": "0"}) as world:
        key = setup_tenant(world, "acme", ["primary"], port, limits={"limit_per_minute": 1_000_000})
        counter = iter(range(10**9))

        def submit(count: int) -> None:
            for start in range(0, count, 100):
                batch = [
                    make_message(rng, f"m-{next(counter)}", "primary", 1200) for _ in range(min(100, count - start))
                ]
                status, reply = world.request("POST", "/commands/add-messages", {"messages": batch}, token=key)
                if status != 200:
                    raise RuntimeError(f"{status} {reply}")

        submit(10)
        world.deliver_all(batch_size=10)  # the warm-up batch: the container's caches and connections are made here
        submit(10)
        world.reset_counts()
        accepted_before = sink.accepted
        with world.meter.section() as batch_calls:
            world.deliver_all(batch_size=10)
        if sink.accepted - accepted_before != 10:
            raise RuntimeError(f"the metered batch delivered {sink.accepted - accepted_before} of 10 messages")
        per_operation = {name: n / 10 for name, n in sorted(batch_calls.calls.items())}

        for start in range(0, total, 100):
            submit(min(100, total - start))
            world.deliver_all(batch_size=10)
        # Counted from the cold start: the warm-up batch opened the container's connections.
        opened = smtp.default_pool().connections_opened
        delivered = sink.accepted
    return {
        "calls_per_message": batch_calls.total_calls() / 10,
        "operations": per_operation,
        "messages_for_connections": delivered,
        "connections_opened": opened,
        "connections_per_1000": opened * 1000 / max(1, delivered),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sender benchmark and print its table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 messages for the connection count")
    parser.add_argument("--messages", type=int, default=None)
    args = parser.parse_args(argv)
    total = args.messages or (20 if args.quick else 1000)
    result = run(total)
    rows = [[name, f"{n:.2f}"] for name, n in result["operations"].items()]
    print(
        table(
            "Sender: AWS calls per delivered message, one warm batch of 10 to one account",
            ["operation", "per message"],
            rows,
        )
    )
    calls, conns = result["calls_per_message"], result["connections_per_1000"]
    print(
        table(
            "\nSender efficiency",
            ["figure", "value", "target", ""],
            [
                [
                    "AWS calls per delivered message",
                    f"{calls:.2f}",
                    "none (withdrawn): a claim before, a result after each transaction",
                    "",
                ],
                [
                    f"SMTP connections per 1000 messages ({result['messages_for_connections']} sent)",
                    f"{conns:.2f}",
                    f"<= {TARGET_CONNECTIONS:g} per warm container and account",
                    verdict(result["connections_opened"], TARGET_CONNECTIONS, at_most=True),
                ],
            ],
        )
    )
    emit(
        "sender",
        {
            "quick": args.quick,
            **result,
            "target_connections": TARGET_CONNECTIONS,
            "met": result["connections_opened"] <= TARGET_CONNECTIONS,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
