"""journy.io's profile semantics, observed through ingest and the read API."""

from __future__ import annotations

import itertools

_ids = itertools.count()


def ev(kind: str, **fields: object) -> dict[str, object]:
    return {"type": kind, "messageId": f"sem-{next(_ids)}", **fields}


def test_identify_traits_are_a_union_and_null_deletes(collector, http):
    assert http.batch(ev("identify", userId="u", traits={"a": 1, "b": 2})).status == 200
    assert http.batch(ev("identify", userId="u", traits={"c": 3})).status == 200
    assert http.batch(ev("identify", userId="u", traits={"a": None, "b": 20})).status == 200
    user = collector.user("u")
    assert user is not None
    assert user["traits"] == {"b": 20, "c": 3}
    assert user["identified"] is True
    assert user["events"] == 3


def test_merge_within_one_batch_follows_batch_order(collector, http):
    http.batch(
        ev("identify", userId="u", traits={"plan": "free"}),
        ev("identify", userId="u", traits={"plan": "pro"}),
        ev("identify", userId="u", traits={"plan": None, "seats": 3}),
    )
    assert collector.user("u")["traits"] == {"seats": 3}


def test_nested_trait_replaces_the_whole_value(collector, http):
    http.batch(ev("identify", userId="u", traits={"address": {"city": "A", "zip": "1"}}))
    http.batch(ev("identify", userId="u", traits={"address": {"city": "B"}}))
    assert collector.user("u")["traits"] == {"address": {"city": "B"}}


def test_anonymous_user_is_keyed_by_anonymous_id(collector, http):
    http.batch(ev("identify", anonymousId="anon-1", traits={"friends": 42}))
    user = collector.user("anon-1")
    assert user["traits"] == {"friends": 42}
    assert user["identified"] is False


def test_user_id_wins_over_anonymous_id(collector, http):
    http.batch(ev("identify", userId="u", anonymousId="anon", traits={"x": 1}))
    assert collector.user("u")["traits"] == {"x": 1}
    assert collector.user("anon") is None


def test_integer_user_id_is_read_as_string(collector, http):
    http.batch(ev("identify", userId=42, traits={"x": 1}))
    assert collector.user("42")["traits"] == {"x": 1}
    (event,) = collector.events(user_id="42")
    assert event["userId"] == 42  # the event itself is kept as received


def test_group_links_user_and_merges_account_traits(collector, http):
    http.batch(ev("group", userId="u", groupId="tesla", traits={"name": "Tesla", "size": 1}))
    http.batch(ev("group", userId="v", groupId="tesla", traits={"size": None, "city": "Austin"}))
    account = collector.account("tesla")
    assert account["traits"] == {"name": "Tesla", "city": "Austin"}
    assert account["members"] == ["u", "v"]
    assert collector.user("u")["accounts"] == ["tesla"]
    assert collector.user("u")["traits"] == {}  # group traits belong to the account


def test_user_in_several_accounts(collector, http):
    http.batch(ev("group", userId="u", groupId="a"), ev("group", userId="u", groupId="b"))
    http.batch(ev("group", userId="u", groupId="a"))
    assert collector.user("u")["accounts"] == ["a", "b"]


def test_group_with_anonymous_id_equal_to_group_id_has_no_user(collector, http):
    http.batch(ev("group", anonymousId="acme", groupId="acme", traits={"name": "Acme"}))
    assert collector.account("acme")["traits"] == {"name": "Acme"}
    assert collector.account("acme")["members"] == []
    assert collector.user("acme") is None
    assert collector.stats()["users"] == 0


def test_group_with_other_anonymous_id_links_that_anonymous_user(collector, http):
    http.batch(ev("group", anonymousId="visitor", groupId="acme"))
    assert collector.account("acme")["members"] == ["visitor"]


def test_track_in_account_context(collector, http):
    http.batch(
        ev("track", userId="u", event="Car Sold", context={"groupId": "tesla"}),
        ev("track", userId="u", event="Logged In"),
    )
    in_account = collector.events(group_id="tesla")
    assert [e["event"] for e in in_account] == ["Car Sold"]
    # journy.io makes a user a member by a group call only: acting in an account's
    # context is listed apart, and the event is flagged account_not_grouped.
    assert collector.account("tesla")["members"] == []
    assert collector.account("tesla")["notGrouped"] == ["u"]
    assert collector.user("u")["accounts"] == [] and collector.user("u")["notGrouped"] == ["tesla"]
    http.batch(ev("group", userId="u", groupId="tesla"))
    assert collector.account("tesla")["members"] == ["u"]
    assert collector.account("tesla")["notGrouped"] == []
    assert collector.user("u")["accounts"] == ["tesla"]
    assert collector.account("tesla")["events"] == 2
    assert collector.user("u")["events"] == 3


def test_page_with_name_is_a_screen_without_name_a_page(collector, http):
    http.batch(
        ev("page", userId="u", name="Pricing", category="Docs"),
        ev("page", userId="u", properties={"url": "https://x/blog"}),
        ev("screen", userId="u", name="Home"),
    )
    assert [e["type"] for e in collector.events()] == ["screen", "page", "screen"]
    assert [e.get("name") for e in collector.events(type="screen")] == ["Pricing", "Home"]
    assert len(collector.events(type="page")) == 1
    # Everything else is kept as received.
    first = collector.events()[0]
    assert first["category"] == "Docs"
    assert first["userId"] == "u"


def test_alias_links_previous_id(collector, http):
    http.batch(ev("identify", anonymousId="anon", traits={"a": 1}))
    http.batch(ev("alias", userId="u", previousId="anon"))
    assert collector.user("u")["aliases"] == ["anon"]
    assert collector.user("anon")["traits"] == {"a": 1}


def test_duplicate_does_not_apply_twice(collector, http):
    first = ev("identify", userId="u", traits={"a": 1})
    http.batch(first)
    http.batch(ev("identify", userId="u", traits={"a": None}))
    http.batch(first)  # a late retry of the first event must not resurrect "a"
    assert collector.user("u")["traits"] == {}
    assert collector.stats()["duplicates"] == 1


def test_data_survives_stop_and_start_on_the_same_port(collector, http):
    http.batch(ev("identify", userId="u", traits={"a": 1}))
    port = collector.port
    collector.stop()
    assert collector.user("u")["traits"] == {"a": 1}  # readable while down
    collector.start()
    assert collector.port == port
    assert http.batch(ev("identify", userId="u", traits={"b": 2})).status == 200
    assert collector.user("u")["traits"] == {"a": 1, "b": 2}


def test_file_database_persists_across_collectors(tmp_path, make_http):
    from journy_analytics.collector import CollectorThread

    db = str(tmp_path / "c.db")
    with CollectorThread(db=db) as c:
        make_http(c.url).batch(ev("identify", userId="u", traits={"a": 1}))
    with CollectorThread(db=db) as c:
        assert c.user("u")["traits"] == {"a": 1}
        assert c.stats()["stored"] == 1
