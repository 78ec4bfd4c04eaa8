"""The benchmarks keep working: each runs in its tiny --quick mode and prints its JSON line (not timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WATCHDOG = (
    "import faulthandler, runpy, sys; faulthandler.dump_traceback_later(240, exit=True); "
    "sys.argv = ['{module}', '--quick', *{args!r}]; runpy.run_module('{module}', run_name='__main__')"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("cost", []),
        ("cost", ["--variant", "standard", "--smtp-rtt-ms", "5"]),
        ("coldstart", []),
        ("throughput", []),
        ("throughput", ["--smtp-rtt-ms", "5"]),
        ("sender", []),
        ("batch_latency", []),
        ("pipelining", []),
    ],
)
def test_benchmark_runs_in_quick_mode_and_prints_its_json_line(name: str, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"}
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        # A hung run dumps every thread's stack and exits, so a failure says where it stopped.
        [sys.executable, "-c", WATCHDOG.format(module=f"bench.{name}", args=args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a quick run takes seconds; never let one hold CI
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    assert len(lines) == 1, done.stdout[-3000:]
    result = json.loads(lines[0].removeprefix("BENCH_JSON "))
    assert result["bench"] == name and "met" in result
