"""Benchmarks (not tests): cost, cold start, throughput, sender efficiency. `python -m bench` runs them all."""

import sys
from pathlib import Path

# `python -m bench.x` from the repository root works without `make`'s PYTHONPATH (layers/common holds mailproxy).
_LAYER = str(Path(__file__).resolve().parents[1] / "layers" / "common")
if _LAYER not in sys.path:
    sys.path.insert(0, _LAYER)
