"""conftest.py for running segment-analytics-python's own test files against the shim.

Copied next to Segment's test files (taken from the installed release at test time) by
tests/segment_compat/test_segment_suite.py. It makes ``segment.analytics`` (and its ``client`` and
``version`` modules) resolve to journy_analytics.segment, so Segment's tests exercise the shim;
JOURNY_HOST points the shim's default host at the local collector on 127.0.0.1.
"""

import os
import sys
import unittest.mock

import pytest

# Segment's tests import the ``mock`` backport; the standard library's is the same API.
sys.modules.setdefault("mock", unittest.mock)

import segment  # noqa: E402  (the installed namespace package)

import journy_analytics.segment as shim  # noqa: E402
import journy_analytics.segment.client  # noqa: E402
import journy_analytics.segment.version  # noqa: E402

assert os.environ.get("JOURNY_HOST", "").startswith("http://127.0.0.1:"), "collector not set"

sys.modules["segment.analytics"] = shim
sys.modules["segment.analytics.client"] = journy_analytics.segment.client
sys.modules["segment.analytics.version"] = journy_analytics.segment.version
segment.analytics = shim

sys.path.insert(0, os.environ["JOURNY_SUITE_SKIPS_DIR"])
from suite_skips import SKIPPED_TESTS  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        reason = SKIPPED_TESTS.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
