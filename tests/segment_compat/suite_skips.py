"""Which of segment-analytics-python's own tests do not run against journy_analytics.segment,
and why. docs/migrating.md lists the same (tests/segment_compat/test_segment_suite.py checks that).

Run: every test in RUN_FILES except SKIPPED_TESTS. Not run: the files in SKIPPED_FILES, which
test Segment's private modules (its consumer thread, its requests-based ``post``, its OAuth
client, its ``utils``) rather than the API a user calls; the shim replaces those modules with
journy-analytics' own, whose tests are named in each reason.
"""

from __future__ import annotations

from typing import Dict

RUN_FILES = ("test_client.py", "test_init.py", "test_module.py")

SKIPPED_FILES: Dict[str, str] = {
    "test_consumer.py": (
        "Segment's private upload thread (segment.analytics.consumer.Consumer), driven "
        "directly with a mocked post(): journy-analytics delivers with its own worker, whose "
        "batching, retry and Retry-After rules are tested in tests/core/test_delivery.py, "
        "tests/core/test_retry.py and tests/reliability/"
    ),
    "test_request.py": (
        "Segment's private request module (segment.analytics.request.post, requests session, "
        "APIError); two of its tests also post to Segment's hosted API (api.segment.io). The "
        "shim's transport is journy-analytics' (tests/core/test_delivery.py, "
        "tests/client/test_security.py)"
    ),
    "test_oauth.py": (
        "Segment's OAuth client for its hosted token server (oauth2.segment.io): journy.io "
        "authenticates with the write key alone, so the shim refuses the oauth_* settings "
        "(tests/segment_compat/test_shim.py::test_oauth_settings_are_refused)"
    ),
    "test_utils.py": (
        "Segment's private helpers (segment.analytics.utils: clean, guess_timezone, "
        "remove_trailing_slash); the shim encodes with journy-analytics' encoder "
        "(tests/message/test_hostile_input.py, docs/encoding.md) and keeps segment's timezone "
        "guess "
        "(tests/segment_compat/test_shim.py::test_naive_now_is_local_time)"
    ),
}

SKIPPED_TESTS: Dict[str, str] = {
    "test_client.py::TestClient::test_proxies": (
        "patches Segment's private requests session (segment.analytics.request._session) so "
        "that nothing is sent; against the shim the event would really go to the proxy it "
        "names, 203.243.63.16, off this machine. The shim's proxies setting is tested through "
        "a real loopback proxy "
        "(tests/segment_compat/test_shim.py::test_proxies_route_through_proxy)"
    ),
    "test_client.py::TestClient::test_user_defined_upload_size": (
        "counts calls to Segment's private segment.analytics.consumer.post; upload_size is "
        "tested on the wire instead "
        "(tests/segment_compat/test_shim.py::test_upload_size_is_the_batch_size)"
    ),
}
