"""Benchmark 5: a sender batch at real-world SMTP latency (issue 17). One warm SenderFunction invocation of a
batch of 10 messages for one account, against one of a single message, with the sink answering MAIL, each RCPT
and the end of DATA `--smtp-rtt-ms` late (50 by default: a provider 50 ms away).

The time of an invocation is its wall time without the emulator's share, plus the modelled in-region wait
of its AWS calls (bench/world.py): what Lambda would bill and what a message waits. Messages one after another
over one connection make the batch cost about ten single messages; concurrent sessions per account (issue 17)
would bring it to at most 2.5 times one.

    python -m bench.batch_latency [--quick] [--rounds N] [--smtp-rtt-ms N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from typing import Any

from bench.report import emit, table, verdict
from bench.sink import counting_sink
from bench.world import World, make_message, running_world, setup_tenant

TARGET_RATIO = 2.5  # a batch of 10 at most this many times one message's invocation
BATCH = 10


def _timed_invocation(world: World, count: int, submit: Any) -> dict[str, float]:
    """Submit `count` messages and deliver them in one SenderFunction invocation: its figures in ms."""
    submit(count)
    stats = world.invocations.get("SenderFunction")
    before = (stats.count, stats.wall, stats.modelled_latency, stats.cpu, stats.smtp_held) if stats else (0, 0, 0, 0, 0)
    world.deliver_all(batch_size=count)
    stats = world.invocations["SenderFunction"]
    after = (stats.count, stats.wall, stats.modelled_latency, stats.cpu, stats.smtp_held)
    if after[0] - before[0] != 1:
        raise RuntimeError(f"{count} messages took {after[0] - before[0]} invocations, not one")
    wall, modelled, cpu, held = (1000 * (a - b) for a, b in zip(after[1:], before[1:], strict=True))
    return {"ms": wall + modelled, "cpu_ms": cpu, "aws_wait_ms": modelled, "smtp_held_ms": held}


def run(rounds: int, smtp_rtt_ms: float) -> dict[str, Any]:
    """Warm one container, then time single-message and batch invocations in turn, `rounds` of each."""
    rng = random.Random(5)
    with counting_sink(reply_delay_ms=smtp_rtt_ms) as (port, sink), running_world({"GMP_RETRY_DELAYS": "0"}) as world:
        world.smtp_waited = lambda: sink.waiting_seconds
        key = setup_tenant(world, "acme", ["primary"], port, limits={"limit_per_minute": 1_000_000})
        counter = iter(range(10**9))

        def submit(count: int) -> None:
            batch = [make_message(rng, f"m-{next(counter)}", "primary", 1200) for _ in range(count)]
            status, reply = world.request("POST", "/commands/add-messages", {"messages": batch}, token=key)
            if status != 200:
                raise RuntimeError(f"{status} {reply}")

        _timed_invocation(world, BATCH, submit)  # the warm-up: the container's caches and connection are made here
        sink.reset_peak()
        singles, batches = [], []
        for _ in range(rounds):
            singles.append(_timed_invocation(world, 1, submit))
            batches.append(_timed_invocation(world, BATCH, submit))
        if sink.accepted != BATCH * (rounds + 1) + rounds:
            raise RuntimeError(f"the sink accepted {sink.accepted} messages")
        max_sessions = sink.max_open_sessions

    def median(runs: list[dict[str, float]], name: str) -> float:
        return statistics.median(r[name] for r in runs)

    single, batch = median(singles, "ms"), median(batches, "ms")
    return {
        "smtp_rtt_ms": smtp_rtt_ms,
        "rounds": rounds,
        "single_ms": single,
        "batch_ms": batch,
        "ratio": batch / single,
        "single_ms_runs": [r["ms"] for r in singles],
        "batch_ms_runs": [r["ms"] for r in batches],
        "single_cpu_ms": median(singles, "cpu_ms"),
        "batch_cpu_ms": median(batches, "cpu_ms"),
        "single_smtp_held_ms": median(singles, "smtp_held_ms"),
        "batch_smtp_held_ms": median(batches, "smtp_held_ms"),
        "aws_wait_ms_single": median(singles, "aws_wait_ms"),
        "aws_wait_ms_batch": median(batches, "aws_wait_ms"),
        "max_open_sessions": max_sessions,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the batch latency benchmark and print its table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round, replies 5 ms late: checks it runs")
    parser.add_argument("--rounds", type=int, default=None, help="invocations of each kind (median taken)")
    parser.add_argument("--smtp-rtt-ms", type=float, default=None, help="the sink's reply delay (default 50)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 7)
    rtt = args.smtp_rtt_ms if args.smtp_rtt_ms is not None else (5.0 if args.quick else 50.0)
    r = run(rounds, rtt)
    rows = [
        ["one message: invocation (ms)", f"{r['single_ms']:.0f}", f"CPU {r['single_cpu_ms']:.0f}", ""],
        [f"a batch of {BATCH}: invocation (ms)", f"{r['batch_ms']:.0f}", f"CPU {r['batch_cpu_ms']:.0f}", ""],
        [
            f"batch of {BATCH} / one message",
            f"{r['ratio']:.2f}",
            f"<= {TARGET_RATIO:g}",
            verdict(r["ratio"], TARGET_RATIO, at_most=True),
        ],
        ["most SMTP sessions open at once (sink)", f"{r['max_open_sessions']}", "", ""],
    ]
    title = (
        f"Sender at SMTP latency: one warm invocation, one account, replies {rtt:g} ms late "
        f"(median of {rounds}; wall without the emulator + modelled AWS wait)"
    )
    print(table(title, ["figure", "value", "", ""], rows))
    emit("batch_latency", {"quick": args.quick, **r, "target_ratio": TARGET_RATIO, "met": r["ratio"] <= TARGET_RATIO})
    return 0


if __name__ == "__main__":
    sys.exit(main())
