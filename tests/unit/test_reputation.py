"""The reputation guard's arithmetic and the suppression list's address keys (pure logic, no storage)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mailproxy import reputation
from mailproxy.addresses import suppression_key
from mailproxy.settings import get_settings


@pytest.fixture(autouse=True)
def defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GMP_REPUTATION_WINDOW_SECONDS", "GMP_REPUTATION_MIN_SENDS", "GMP_BOUNCE_RATE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GMP_COMPLAINT_RATE_LIMIT", raising=False)
    monkeypatch.setenv("GMP_STORAGE", "sqlite")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("bob@Example.COM", "bob@example.com"),
        ("Bob <Bob@EXAMPLE.com>", "Bob@example.com"),
        ("  alice@x.test ", "alice@x.test"),
        ('"a b"@X.test', '"a b"@x.test'),
    ],
)
def test_an_address_is_keyed_by_its_domain_in_lower_case_and_its_local_part_as_written(entry: str, key: str) -> None:
    assert suppression_key(entry) == key


def test_the_window_is_24_buckets_ending_with_the_current_one() -> None:
    assert reputation.bucket_seconds() == 3600
    window = reputation.window_buckets(7 * 3600 + 5)
    assert (window.start, window.stop) == (7 - 23, 8)
    stale = reputation.stale_buckets(7 * 3600 + 5)
    assert (stale.start, stale.stop) == (7 - 47, 7 - 23)


@pytest.mark.parametrize(
    ("window", "paused"),
    [
        ({"sent": 199, "bounces": 100, "complaints": 100}, False),  # under the minimum volume
        ({"sent": 200, "bounces": 9, "complaints": 0}, False),  # 4.5 %
        ({"sent": 200, "bounces": 10, "complaints": 0}, True),  # 5 %: at the limit
        ({"sent": 1000, "bounces": 0, "complaints": 0}, False),
        ({"sent": 1000, "bounces": 0, "complaints": 1}, True),  # 0.1 %
        ({"sent": 2000, "bounces": 0, "complaints": 1}, False),  # 0.05 %
    ],
)
def test_an_account_pauses_at_a_limit_once_it_sent_enough(window: dict[str, int], paused: bool) -> None:
    assert (reputation.verdict(window) is not None) == paused


def test_the_reason_says_which_rate_over_how_many_sends() -> None:
    assert reputation.verdict({"sent": 400, "bounces": 30, "complaints": 0}) == (
        "bounce rate 7.50% over 400 sends (limit 5.00%)"
    )
