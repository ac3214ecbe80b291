"""JournyAPI end to end against the local collector's REST paths, every request checked
against journy.io's OpenAPI document on its way out."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Iterator

import pytest

from journy_analytics import JournyAPI, JournyAPIError, RetryPolicy
from journy_analytics.collector import CollectorThread, RestSettings

from .contract import CheckedTransport

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=60.0)


@pytest.fixture
def checked() -> Iterator[CheckedTransport]:
    transport = CheckedTransport()
    yield transport
    transport.close()


def test_every_call_against_the_collector(checked: CheckedTransport) -> None:
    settings = RestSettings(api_keys=["ak", "reader:ReadEvents"])
    with CollectorThread(db=":memory:", rest=settings) as collector:
        api = JournyAPI(api_key="ak", host=collector.url, http_client=checked, retry_policy=FAST)
        api.upsert_user(user_id="u1", email="u1@acme-inc.com", properties={"plan": "pro"})
        api.upsert_user(user_id="u2", properties={"plan": "free"})
        api.upsert_account(
            account_id="acc",
            domain="acme-inc.com",
            properties={"seats": 3},
            members=[{"user_id": "u1"}],
        )
        api.add_users_to_account(account_id="acc", users=[{"user_id": "u2"}])
        assert {m for m in collector.account("acc")["members"]} >= {"u1", "u2"}
        api.remove_users_from_account(account_id="acc", users=[{"user_id": "u2"}])
        api.track(event="signed_up", user_id="u1", account_id="acc", metadata={"n": 1})
        api.link(device_id="device-1", user_id="u1")
        assert collector.user("u1")["traits"]["plan"] == "pro"
        assert api.validate_key().allows("TrackData")
        assert isinstance(api.tracking_snippet(domain="acme-inc.com"), str)
        api.events(), api.user_properties(), api.account_properties()
        api.user_segments(), api.account_segments()
        api.delete_user(user_id="u1")
        assert collector.user("u1") is None
        api.delete_account(account_id="acc")
        assert collector.account("acc") is None

        reader = JournyAPI(api_key="reader", host=collector.url, http_client=checked)
        with pytest.raises(JournyAPIError, match="lacks the TrackData permission"):
            reader.upsert_user(user_id="u3")
        assert checked.problems == []
        assert checked.sent >= 17


def test_5000_upserts_under_a_small_rate_limit(checked: CheckedTransport) -> None:
    """A bulk job against a collector allowing 250 requests a second per key: paced from
    the rate-limit headers, it never meets a 429, and every upsert lands."""
    settings = RestSettings(rate_limit="250/s")
    with CollectorThread(db=":memory:", rest=settings) as collector:
        api = JournyAPI(
            api_key="bulk",
            host=collector.url,
            http_client=checked,
            retry_policy=FAST,
            rate_window=1.0,
        )
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            done = list(
                pool.map(
                    lambda i: api.upsert_user(user_id=f"bulk-{i}", properties={"i": i}), range(5000)
                )
            )
        elapsed = time.monotonic() - started
        assert len(done) == 5000
        stats = api.stats()
        missing = [i for i in range(5000) if collector.user(f"bulk-{i}") is None]
        assert missing == []
        assert stats["rate_limited"] == 0, stats
        assert checked.problems == []
        print(f"5000 upserts in {elapsed:.1f} s ({5000 / elapsed:.0f}/s), {stats}")
