"""The service's one clock: every use case reads the time here, so a test moves it in one place."""

from __future__ import annotations

import time


def now_ts() -> int:
    """The current unix time in whole seconds."""
    return int(time.time())
