"""The bounds on one message: counted in linear time, reasons a client can read."""

from __future__ import annotations

import time

import pytest
from mailproxy.limits import header_reason, is_structural_header, recipients_reason


@pytest.mark.parametrize(
    ("name", "structural"),
    [
        ("From", True),
        (" date ", True),
        ("CONTENT-Foo", True),
        ("x-genro-mail-id", True),
        ("Return-Path", True),
        ("Reply-To", False),
        ("Subject", False),
        ("X-Content-Type", False),
        ("List-Unsubscribe", False),
    ],
)
def test_structural_headers_are_recognised_in_any_case(name: str, structural: bool) -> None:
    assert is_structural_header(name) is structural


def test_recipients_are_counted_across_fields_after_splitting_commas() -> None:
    assert recipients_reason(["a@x.test", "b@x.test"], '"Doe, J" <c@x.test>, d@x.test', None, limit=4) is None
    assert recipients_reason(["a@x.test", "b@x.test"], "c@x.test, d@x.test", "e@x.test", limit=4) == (
        "too many recipients: 5 (limit 4)"
    )


def test_counting_a_hundred_thousand_recipients_is_quick() -> None:
    text = ", ".join(f"user{n}@example.test" for n in range(100_000))
    started = time.process_time()
    assert recipients_reason(text, None, None, limit=1000) == "too many recipients: 100000 (limit 1000)"
    assert time.process_time() - started < 5  # generous: linear, ~0.3 s; a quadratic count would take minutes


def test_header_sizes_count_names_values_and_list_separators() -> None:
    fields = [("From", "a@x.test"), ("To", ["b@x.test", "c@x.test"]), ("Cc", None)]
    # "From: a@x.test" 14 + "To: b@x.test, c@x.test" 22 + "X-A: 1" 6 = 42
    assert header_reason(fields, {"X-A": 1}, max_total=42, max_value=100) is None
    assert header_reason(fields, {"X-A": 1}, max_total=41, max_value=100) == "headers too large: 42 bytes (limit 41)"


def test_a_reserved_name_is_reported_before_sizes() -> None:
    assert header_reason([], {"Sender": "x" * 1000}, max_total=10, max_value=10) == "invalid header: Sender"
