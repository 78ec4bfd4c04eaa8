"""SchedulerFunction: every minute (every GMP_SCHEDULER_INTERVAL seconds locally), one scheduler round."""

from typing import Any

from mailproxy.logs import configure_logging
from mailproxy.scheduler import run_round

configure_logging("SchedulerFunction")


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Re-queue what is due and finish work a crash left open."""
    return run_round()
