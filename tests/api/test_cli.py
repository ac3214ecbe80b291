"""``journy erase`` and ``journy key`` against the local collector."""

from __future__ import annotations

from typing import Iterator

import pytest

from journy_analytics import JournyAPI
from journy_analytics.cli import main
from journy_analytics.collector import CollectorThread, RestSettings


@pytest.fixture
def collector() -> Iterator[CollectorThread]:
    settings = RestSettings(api_keys=["ak", "reader:ReadEvents,ReadSegments"])
    with CollectorThread(db=":memory:", rest=settings) as running:
        yield running


def test_key_prints_the_permissions(
    collector: CollectorThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNY_API_KEY", "reader")
    monkeypatch.setenv("JOURNY_API_HOST", collector.url)
    assert main(["key"]) == 0
    out = capsys.readouterr().out
    assert "permissions: ReadEvents, ReadSegments" in out
    assert "missing:     TrackData, ReadProperties, GetTrackingSnippet" in out
    assert main(["key", "--api-key", "unknown-key", "--host", collector.url]) == 1
    assert "401" in capsys.readouterr().err


def test_erase_deletes_the_user_and_the_account(
    collector: CollectorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    with JournyAPI(api_key="ak", host=collector.url) as api:
        api.upsert_user(user_id="u1", email="u1@acme-inc.com")
        api.upsert_account(account_id="acc", domain="acme-inc.com")
    assert collector.user("u1") is not None
    assert main(["erase", "--user-id", "u1", "--api-key", "ak", "--host", collector.url]) == 0
    assert "erase requested: user user_id=u1" in capsys.readouterr().out
    assert collector.user("u1") is None
    assert (
        main(["erase", "--domain", "acme-inc.com", "--api-key", "ak", "--host", collector.url]) == 0
    )
    assert collector.account("acc") is None


def test_erase_usage_and_refusals(
    collector: CollectorThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNY_API_KEY", raising=False)
    assert main(["erase", "--user-id", "u1", "--host", collector.url]) == 2
    assert "JOURNY_API_KEY" in capsys.readouterr().err
    assert main(["erase", "--api-key", "ak", "--host", collector.url]) == 2
    assert main(["erase", "--user-id", "u", "--domain", "a.io", "--api-key", "ak"]) == 2
    assert main(["erase", "--email", "nope", "--api-key", "ak", "--host", collector.url]) == 2
    assert "email" in capsys.readouterr().err
    code = main(["erase", "--user-id", "u1", "--api-key", "reader", "--host", collector.url])
    assert code == 1
    err = capsys.readouterr().err
    assert "lacks the TrackData permission" in err and "reader" not in err
