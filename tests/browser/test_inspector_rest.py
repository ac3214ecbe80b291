"""The inspector shows the REST API's calls beside the batch path's events."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect
from tests.collector.rest_contract import RestHttp


def test_rest_calls_are_listed_and_profiles_follow_them(page: Any, collector: Any) -> None:
    api = RestHttp(collector.url)
    upsert = {"identification": {"userId": "ada"}, "properties": {"plan": "<b>pro</b>"}}
    assert api.post("/users/upsert", upsert).status == 201
    assert api.post("/track", {"identification": {"user": {"userId": "ada"}}}).status == 400
    assert api.post("/users/upsert", upsert, key=None).status == 401

    page.goto(collector.url + "/?view=user&id=ada")
    expect(page.locator("#profile table.traits tr[data-trait=plan] td").nth(1)).to_have_text(
        "<b>pro</b>"
    )

    page.locator("#to-rest").click()
    rows = page.locator("#rest-calls tbody tr")
    expect(rows).to_have_count(3)
    # Newest first: each call with its path and status.
    expect(rows.nth(0)).to_contain_text("POST /users/upsert")
    expect(rows.nth(0).locator("td").nth(2)).to_have_text("401")
    expect(rows.nth(1)).to_contain_text("POST /track")
    expect(rows.nth(1).locator("td").nth(2)).to_have_text("400")
    expect(rows.nth(2).locator("td").nth(2)).to_have_text("201")
    assert "test-api-key" not in page.content()  # the key is never shown

    # The upsert's identify is in the event list too; a delete takes the profile away.
    page.locator("#to-events").click()
    expect(page.locator("#events tbody tr")).to_have_count(1)
    assert api.delete("/users", {"identification": {"userId": "ada"}}).status == 202
    page.goto(collector.url + "/?view=user&id=ada")
    expect(page.locator("#profile h2")).to_have_text("No user ada")
