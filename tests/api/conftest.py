from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from journy_analytics import JournyAPI, RetryPolicy

from .server import ApiServer

# Retries in milliseconds, not seconds: the tests wait on answers, never on the clock.
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=10.0)


@pytest.fixture
def server() -> Iterator[ApiServer]:
    running = ApiServer()
    yield running
    running.stop()


@pytest.fixture
def make_api(server: ApiServer) -> Iterator[Callable[..., JournyAPI]]:
    made: List[JournyAPI] = []

    def make(**settings: Any) -> JournyAPI:
        settings.setdefault("api_key", "test-api-key")
        settings.setdefault("host", server.url)
        settings.setdefault("retry_policy", FAST)
        settings.setdefault("timeout", 5.0)
        api = JournyAPI(**settings)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()
