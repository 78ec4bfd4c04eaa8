"""Tenant quotas (`rate_limits`): messages per UTC minute, hour and day across all the tenant's accounts."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, Storage, TenantFactory
from tests.integration.api_support import add, by_id, message
from tests.integration.delivery import Runner
from tests.integration.test_metrics import samples, scrape

pytestmark = pytest.mark.both_storages


@pytest.fixture
def quota(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> dict[str, str]:
    """Tenant acme with accounts smtp and other and a quota of 3 messages a day; its key."""
    _, key = make_tenant("acme", rate_limits={"per_day": 3})
    make_account("acme")
    make_account("acme", "other")
    return key


def test_genro_and_own_quota_shapes_are_accepted_and_returned_as_given(api: TestClient, admin: dict[str, str]) -> None:
    for limits in ({"hourly": 100, "daily": 1000}, {"per_minute": 10, "per_day": 1000}, {"daily": 0}, {}):
        reply = api.post("/tenant", json={"id": "acme", "rate_limits": limits}, headers=admin)
        assert reply.status_code == 200, reply.text
        assert api.get("/tenant/acme", headers=admin).json()["rate_limits"] == limits


@pytest.mark.parametrize(
    "limits",
    [
        {"per_week": 5},
        {"per_day": -1},
        {"per_day": "many"},
        {"per_day": 1.5},
        {"hourly": 5, "per_hour": 5},
        {"daily": 5, "per_day": 6},
        [1, 2],
        "1000/day",
    ],
)
def test_a_quota_of_another_shape_is_a_422_naming_rate_limits(
    api: TestClient, admin: dict[str, str], limits: Any
) -> None:
    api.post("/tenant", json={"id": "acme"}, headers=admin)
    for method, path, body in (
        ("POST", "/tenant", {"id": "acme", "rate_limits": limits}),
        ("PUT", "/tenant/acme", {"rate_limits": limits}),
    ):
        reply = api.request(method, path, json=body, headers=admin)
        assert reply.status_code == 422, (method, limits, reply.text)
        assert any("rate_limits" in error["loc"] for error in reply.json()["detail"])
    assert api.get("/tenant/acme", headers=admin).json()["rate_limits"] is None


def test_over_the_daily_quota_what_fits_is_accepted_in_order_and_the_rest_rejected_and_recorded(
    api: TestClient, quota: dict[str, str], queues: Runner
) -> None:
    reply = add(api, quota, message("m-1"), message("m-2", account_id="other"), message("m-3"), message("m-4"))
    assert reply.status_code == 200, reply.text
    reason = "tenant quota exceeded: 3 messages per day"
    assert reply.json() == {"ok": True, "queued": 3, "rejected": [{"id": "m-4", "reason": reason}]}

    refused = add(api, quota, message("m-5", account_id="other"))
    assert refused.status_code == 400
    assert refused.json()["detail"]["rejected"] == [{"id": "m-5", "reason": reason}]

    listed = by_id(api, quota)
    # The accepted ones are untouched; the refused ones are failed records, reported like any rejection.
    assert {i: r["status"] for i, r in listed.items()} == {
        "m-1": "pending",
        "m-2": "pending",
        "m-3": "pending",
        "m-4": "error",
        "m-5": "error",
    }
    assert listed["m-4"]["error"] == reason
    assert queues.queued_total() == 3


def test_the_quota_counts_every_account_of_the_tenant_per_minute(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, key = make_tenant("acme", rate_limits={"per_minute": 2, "daily": 100})
    make_account("acme")
    make_account("acme", "other")
    assert add(api, key, message("a-1")).json()["queued"] == 1
    assert add(api, key, message("b-1", account_id="other")).json()["queued"] == 1
    reply = add(api, key, message("a-2"), message("b-2", account_id="other"))
    assert reply.status_code == 400
    reasons = {r["reason"] for r in reply.json()["detail"]["rejected"]}
    assert reasons == {"tenant quota exceeded: 2 messages per minute"}


def test_another_tenant_and_a_tenant_without_quota_are_not_limited(
    api: TestClient, quota: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, free = make_tenant("globex")
    make_account("globex")
    assert add(api, quota, *(message(f"m-{n}") for n in range(3))).json()["queued"] == 3
    assert add(api, free, *(message(f"m-{n}") for n in range(10))).json()["queued"] == 10


def test_re_submitting_an_unsent_id_does_not_count_against_the_quota(api: TestClient, quota: dict[str, str]) -> None:
    for _ in range(3):
        assert add(api, quota, message("m-1")).json()["queued"] == 1
    reply = add(api, quota, message("m-2"), message("m-3"), message("m-4"))
    assert reply.json()["queued"] == 2
    assert [r["id"] for r in reply.json()["rejected"]] == ["m-4"]


def test_an_overwrite_refused_by_a_full_quota_keeps_the_accepted_version(
    api: TestClient, quota: dict[str, str]
) -> None:
    assert add(api, quota, message("m-1"), message("m-2"), message("m-3")).json()["queued"] == 3
    reply = add(api, quota, message("m-1", subject="Changed"))
    assert reply.status_code == 400
    listed = by_id(api, quota)
    assert listed["m-1"]["status"] == "pending"
    assert listed["m-1"]["message"]["subject"] == "Hello"


def test_a_request_that_fails_before_storing_its_messages_gives_its_quota_back(
    api: TestClient, quota: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("payload storage unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(stores().payloads, "store_pack", unavailable)
        with pytest.raises(RuntimeError):
            add(api, quota, message("m-1"), message("m-2"))
    assert by_id(api, quota) == {}  # nothing of the failed request was stored: its 2 slots are still free
    reply = add(api, quota, message("m-1"), message("m-2"), message("m-3"))
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ok": True, "queued": 3, "rejected": []}


def test_quota_rejections_are_counted_per_tenant_on_the_metrics_page(api: TestClient, quota: dict[str, str]) -> None:
    add(api, quota, *(message(f"m-{n}") for n in range(5)))
    add(api, quota, message("m-9"))
    values = samples(scrape()["body"])
    assert values[("gmp_quota_rejected_total", (("tenant_id", "acme"),))] == 3


def test_concurrent_intake_containers_never_accept_more_than_the_quota(storage: Storage) -> None:
    from mailproxy import ratelimit
    from mailproxy.stores import stores

    rates = stores().rates
    limits = ratelimit.Limits.of_quota({"per_minute": 25, "daily": 1000})
    granted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def container() -> None:
        start.wait()
        for _ in range(5):
            rates.forget_cache()  # each call as a fresh container would make it: no shared guess
            got = rates.reserve_quota("acme", limits, 2, 1_700_000_000).granted
            with lock:
                granted.append(got)

    threads = [threading.Thread(target=container) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 25
