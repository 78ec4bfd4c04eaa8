"""The AWS adapter: DynamoDB, SQS, S3, KMS and Secrets Manager behind the ports.

Each port is a module of functions (a module satisfies a Protocol), the only code that knows the tables'
keys and builds their expressions.
"""

from __future__ import annotations

from mailproxy.ports import Stores


def aws_stores() -> Stores:
    """The ports on AWS."""
    from mailproxy import crypto, ledger, messages, payloads, queues, ratelimit, state, tenants
    from mailproxy.adapters.aws import outbox

    return Stores(
        messages=messages,
        tenants=tenants,
        rates=ratelimit,
        counters=state,
        journals=state,
        service=state,
        commands=state,
        payloads=payloads,
        queue=queues,
        outbox=outbox,
        ledger=ledger,
        sealer=crypto,
    )
