"""`journy demo`: the seed document's examples, through the SDK, into the collector."""

from __future__ import annotations

import re

import pytest

from journy_analytics.cli import main


def test_demo_shows_union_null_and_account_context(capsys):
    pytest.importorskip("journy_analytics.client")
    assert main(["demo", "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "everything delivered" in out
    elon = out[out.index("user f4ca124298") : out.index("anonymous user")]
    assert re.search(r"firstname\s+Elon", elon)
    assert re.search(r"email\s+elon@tesla.com", elon)
    assert "friends" not in elon.split("->")[0]  # deleted by the null trait
    assert "accounts: tesla" in elon
    anon = out[out.index("anonymous user 48d213bb-95c3-4f8d-af97-86b2b404dcfe") :]
    assert re.search(r"friends\s+42", anon)
    account = out[out.index("account tesla") : out.index("=== Events")]
    assert re.search(r"website\s+https://tesla.com", account)
    assert "employees" not in account.split("->")[0]
    assert "members:  f4ca124298\n" in account
    events = out[out.index("=== Events") :]
    assert "(12 events)" in events
    car_sold = next(line for line in events.splitlines() if "Car Sold" in line)
    assert car_sold.startswith("2015-12-12T19:11:00.000Z")
    assert "tesla" in car_sold
    assert len([line for line in events.splitlines() if "  screen  " in line]) == 2
    assert len([line for line in events.splitlines() if "  page  " in line]) == 1
