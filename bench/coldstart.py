"""Benchmark 2: cold start per function, against the bare import of the packages it declares.

Each figure is the median over fresh Python processes (the project's .venv interpreter) of the time
from the first line of the process to the point where the function would make its first AWS call:
importing the handler module, then running its first invocation up to that call (for the intake, the
FastAPI app and Mangum; for the sender, parsing the batch). The AWS SDK (boto3, created lazily at that
first call) is reported on its own line: it is the Lambda runtime's, not a package a function declares.
The floor is the bare import of the third-party packages in functions/<name>/requirements.txt and
layers/common/requirements.txt. /health must import no boto3.

Bytecode is fixed, not left to the environment: the floor's packages load from the .venv's
precompiled bytecode, and the project's own code runs from a fresh copy, precompiled as the layer's
build ships it (layers/common/Makefile: unchecked-hash .pyc files). With --from-source the copy has
no bytecode and every process compiles it, as SAM's python3.12 builder deployed it before (it leaves
out *.pyc, and /opt is read-only).

    python -m bench.coldstart [--quick] [--runs N] [--from-source] [--only FUNCTION ...]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.report import emit, table, verdict

ROOT = Path(__file__).resolve().parents[1]
TARGET_OVERHEAD = 0.10
LAYER_PACKAGES = ["aws_lambda_powertools"]

# function -> (third-party packages it declares, handler module, the first event as Python source)
FUNCTIONS: dict[str, tuple[list[str], str, str]] = {
    "intake": (
        ["fastapi", "mangum"],
        "functions.intake.app",
        "{'resource': '/{proxy+}', 'path': '/commands/add-messages', 'httpMethod': 'POST',"
        " 'headers': {'Content-Type': 'application/json', 'X-API-Token': 'bench-admin-token'},"
        " 'multiValueHeaders': {}, 'queryStringParameters': None, 'multiValueQueryStringParameters': None,"
        " 'pathParameters': {'proxy': 'commands/add-messages'}, 'stageVariables': None,"
        " 'requestContext': {'resourcePath': '/{proxy+}', 'httpMethod': 'POST', 'stage': 'prod',"
        " 'requestId': 'r', 'identity': {'sourceIp': '127.0.0.1'}, 'path': '/prod/commands/add-messages'},"
        " 'body': json.dumps({'messages': [{'id': 'm-1', 'tenant_id': 't1', 'account_id': 'a',"
        " 'from': 'a@b.example', 'to': ['c@d.example'], 'subject': 's', 'body': 'b'}]}), 'isBase64Encoded': False}",
    ),
    "sender": (
        ["aiosmtplib"],
        "functions.sender.app",
        "{'Records': [{'messageId': 'q-1', 'receiptHandle': 'r', 'body': json.dumps({'tenant_id': 't1', 'id': 'm-1',"
        " 'rev': 'r1', 'payload': {'from': 'a@b.example', 'to': ['c@d.example'], 'subject': 's', 'body': 'b'}}),"
        " 'attributes': {}, 'messageAttributes': {}, 'eventSource': 'aws:sqs'}]}",
    ),
    "scheduler": ([], "functions.scheduler.app", "json.loads(open('events/schedule.json').read())"),
    "reporter": ([], "functions.reporter.app", "json.loads(open('events/schedule.json').read())"),
    "bounce": ([], "functions.bounce.app", "json.loads(open('events/schedule.json').read())"),
    "metrics /metrics": (
        ["prometheus_client"],
        "functions.metrics.app",
        "{'resource': '/metrics', 'path': '/metrics', 'httpMethod': 'GET', 'headers': {}, 'queryStringParameters': None}",
    ),
    "metrics /health": (
        ["prometheus_client"],
        "functions.metrics.app",
        "{'resource': '/health', 'path': '/health', 'httpMethod': 'GET', 'headers': {}}",
    ),
}

# Both timed kinds of process: the handler imported with AWS stopped at its first call, then its first
# invocation run to that call (`t`); `t0` and `event` are set before.
FIRST_INVOCATION = """
stop = {{}}
class FirstAwsCall(BaseException):
    pass
import mailproxy.aws as aws
def first_call(service):
    stop.setdefault('t', time.perf_counter())
    raise FirstAwsCall(service)
aws.client = first_call
import importlib
module = importlib.import_module({module!r})
t_import = time.perf_counter()
try:
    module.handler(event, None)
except FirstAwsCall:
    pass
except Exception:
    pass
t = stop.get('t', time.perf_counter())
"""

PROJECT = (
    """
import time
t0 = time.perf_counter()
import json, sys
event = {event}
"""
    + FIRST_INVOCATION
    + """
boto = 'boto3' in sys.modules or 'botocore.client' in sys.modules
t1 = time.perf_counter()
import boto3
boto3.session.Session().client('dynamodb', region_name='us-east-1')
sdk = time.perf_counter() - t1
print(json.dumps({{'total': t - t0, 'import': t_import - t0, 'boto3_loaded': boto, 'sdk': sdk}}))
"""
)

# The project's own code timed directly: in a process that has already loaded the declared packages and the
# runtime's SDK (a client made, as every function but /health makes one at its first call), the import of
# the handler and its first invocation up to the first AWS call. Stdlib modules the SDK needs anyway
# (http.client, ssl, email, uuid, decimal...) are then not charged to whichever of the two imports them
# first, and the figure is one interval measured, not the difference of two noisy medians.
OWN = (
    """
import time
import json
{imports}
{sdk}
event = {event}
t0 = time.perf_counter()
"""
    + FIRST_INVOCATION
    + """
print(json.dumps({{'total': t - t0}}))
"""
)
SDK_FIRST = "import boto3\nboto3.session.Session().client('dynamodb', region_name='us-east-1')"

FLOOR = """
import time
t0 = time.perf_counter()
import json
{imports}
total = time.perf_counter() - t0
t1 = time.perf_counter()
import boto3
boto3.session.Session().client('dynamodb', region_name='us-east-1')
print(json.dumps({{'total': total, 'sdk': time.perf_counter() - t1}}))
"""

ENVIRONMENT = {
    "TENANTS_TABLE": "t",
    "MESSAGES_TABLE": "m",
    "PAYLOADS_TABLE": "p",
    "STATE_TABLE": "s",
    "PAYLOAD_BUCKET": "b",
    "SECRETS_KEY_ID": "k",
    "IMMEDIATE_QUEUE_URL": "q0",
    "HIGH_QUEUE_URL": "q1",
    "MEDIUM_QUEUE_URL": "q2",
    "LOW_QUEUE_URL": "q3",
    "GMP_API_TOKEN": "bench-admin-token",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "LOG_LEVEL": "INFO",
    "POWERTOOLS_SERVICE_NAME": "serverless-mail-proxy",
}


def project_copy(into: Path, *, bytecode: bool) -> Path:
    """A copy of what the functions run (package, handlers, events) without bytecode, or all precompiled."""
    for part in ("layers/common/mailproxy", "functions", "events"):
        shutil.copytree(ROOT / part, into / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if bytecode:
        # unchecked-hash: used as it is, whatever the files' times after unzipping (what a build would ship)
        compileall.compile_dir(into, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return into


def _run(source: str, root: Path) -> dict[str, Any]:
    env = {**os.environ, **ENVIRONMENT, "PYTHONPATH": f"{root / 'layers' / 'common'}:{root}"}
    env.pop("AWS_ENDPOINT_URL", None)
    # Never write bytecode, and read it from beside each source: the copy's (if any) and the .venv's.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPYCACHEPREFIX", None)
    done = subprocess.run(
        [sys.executable, "-c", source], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    last = [line for line in done.stdout.splitlines() if line.startswith('{"total"')][-1]
    result: dict[str, Any] = json.loads(last)
    return result


def measure(name: str, runs: int, root: Path = ROOT) -> dict[str, Any]:
    """Median times of one function's cold start and of its floor, runs interleaved."""
    packages, module, event = FUNCTIONS[name]
    imports = "\n".join(f"import {p}" for p in [*packages, *LAYER_PACKAGES])
    if name == "metrics /health":
        imports = "import json"  # /health declares nothing it uses: its floor is the interpreter
    sdk = "" if name == "metrics /health" else SDK_FIRST
    project: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    own: list[dict[str, Any]] = []
    for _ in range(runs):
        floor.append(_run(FLOOR.format(imports=imports), root))
        project.append(_run(PROJECT.format(module=module, event=event), root))
        own.append(_run(OWN.format(imports=imports, sdk=sdk, module=module, event=event), root))
    own_ms = 1000 * statistics.median(o["total"] for o in own)
    total = statistics.median(p["total"] for p in project)
    base = statistics.median(f["total"] for f in floor)
    # The SDK's first client imports stdlib modules (uuid, hashlib, http.client, ssl, email...) that a
    # function may import first: whoever comes first pays. Cold start + SDK against floor + SDK says
    # what a function adds to the whole way to its first AWS call, wherever the import happens.
    with_sdk = statistics.median(p["total"] + p["sdk"] for p in project)
    floor_with_sdk = statistics.median(f["total"] + f["sdk"] for f in floor)
    return {
        "function": name,
        "floor_ms": 1000 * base,
        "cold_start_ms": 1000 * total,
        "import_ms": 1000 * statistics.median(p["import"] for p in project),
        "own_code_ms": own_ms,
        "own_code_overhead": own_ms / (1000 * base) if base > 0 else 0.0,
        "overhead": (total - base) / base if base > 0 else 0.0,
        "overhead_ms": 1000 * (total - base),
        "sdk_ms": 1000 * statistics.median(p["sdk"] for p in project),
        "floor_sdk_ms": 1000 * statistics.median(f["sdk"] for f in floor),
        "overhead_with_sdk_ms": 1000 * (with_sdk - floor_with_sdk),
        "boto3_loaded_before_first_call": any(p["boto3_loaded"] for p in project),
        "floor_packages": [*packages, *LAYER_PACKAGES] if name != "metrics /health" else [],
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every function and print the table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 processes per figure")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument(
        "--from-source", action="store_true", help="the project's code compiled in each process (no shipped bytecode)"
    )
    parser.add_argument("--only", action="append", choices=sorted(FUNCTIONS), help="measure this function only")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 20)
    names = [n for n in FUNCTIONS if (ROOT / (FUNCTIONS[n][1].replace(".", "/") + ".py")).exists()]
    names = [n for n in names if not args.only or n in args.only]
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        root = project_copy(Path(scratch), bytecode=not args.from_source)
        results = [measure(name, runs, root) for name in names]
    rows = []
    for r in results:
        health = r["function"] == "metrics /health"
        target = "no boto3" if health else f"<= +{TARGET_OVERHEAD:.0%}"
        ok = (not r["boto3_loaded_before_first_call"]) if health else r["own_code_overhead"] <= TARGET_OVERHEAD
        rows.append(
            [
                r["function"],
                f"{r['floor_ms']:.0f}",
                f"{r['cold_start_ms']:.0f}",
                f"{r['overhead_ms']:+.0f}",
                f"{r['overhead']:+.1%}",
                f"{r['sdk_ms']:.0f}",
                f"{r['own_code_ms']:.0f}",
                f"{r['own_code_overhead']:+.1%}",
                "yes" if r["boto3_loaded_before_first_call"] else "no",
                target,
                "met" if ok else "NOT met",
            ]
        )
    header = ["function", "floor ms", "cold ms", "cold - floor", "", "SDK ms", "own code ms", "own code"]
    header += ["boto3 early", "target", ""]
    code = "compiled in each process (--from-source)" if args.from_source else "precompiled, as the layer ships it"
    print(table(f"Cold start, median of {runs} fresh processes; the project's code {code}", header, rows))
    print(
        "floor: bare import of the declared packages; cold: import + first invocation to the first AWS call, from a\n"
        "fresh process; SDK: boto3 import + first client (the runtime's, at the first call), after the cold start;\n"
        "own code: the import + first invocation timed alone, after the declared packages and the SDK, over the floor\n"
        "(the verdict: it charges the project only for its own work, and the SDK's stdlib modules to nobody twice)"
    )
    worst = max((r["own_code_overhead"] for r in results if r["function"] != "metrics /health"), default=0.0)
    health = next((r for r in results if r["function"] == "metrics /health"), None)
    health_ok = health is not None and not health["boto3_loaded_before_first_call"]
    print(
        f"Worst own-code overhead {worst:+.1%}, target <= +{TARGET_OVERHEAD:.0%}: {verdict(worst, TARGET_OVERHEAD, at_most=True)}; /health without boto3: {'met' if health_ok else 'NOT met'}"
    )
    emit(
        "coldstart",
        {
            "quick": args.quick,
            "runs": runs,
            "bytecode": not args.from_source,
            "worst_overhead": worst,
            "target_overhead": TARGET_OVERHEAD,
            "health_without_boto3": health_ok,
            "met": worst <= TARGET_OVERHEAD and health_ok,
            "functions": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
