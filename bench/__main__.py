"""`python -m bench` (`make bench`): every benchmark in turn; `--quick` passes through."""

from __future__ import annotations

import sys

from bench import batch_latency, coldstart, cost, pipelining, sender, throughput


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark; each prints its table and its JSON line."""
    args = list(sys.argv[1:] if argv is None else argv)
    status = 0
    for module in (cost, coldstart, throughput, sender, batch_latency, pipelining):
        print(f"\n==== {module.__name__} ====", flush=True)
        status |= module.main(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
