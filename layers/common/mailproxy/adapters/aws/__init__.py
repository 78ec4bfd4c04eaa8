"""The AWS adapter: DynamoDB, SQS, S3, KMS and Secrets Manager behind the ports.

Each port is a module of functions (a module satisfies a Protocol), the only code that knows the tables'
keys and builds their expressions.
"""

from __future__ import annotations

from mailproxy.ports import Stores


def aws_stores() -> Stores:
    """The ports on AWS."""
    from mailproxy.adapters.aws import ledger, messages, outbox, payloads, queue, rates, sealer, state, tenants

    return Stores(
        messages=messages,
        tenants=tenants,
        rates=rates,
        counters=state,
        journals=state,
        service=state,
        commands=state,
        payloads=payloads,
        queue=queue,
        outbox=outbox,
        ledger=ledger,
        sealer=sealer,
    )
