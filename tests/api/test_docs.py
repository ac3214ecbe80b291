"""docs/journy-api.md's Python examples run as written against the local collector (its
batch and REST paths), and its Django view erases a user through Django's test client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import pytest

import journy_analytics
from journy_analytics.collector import CollectorThread

DOC = Path(__file__).resolve().parents[2] / "docs" / "journy-api.md"


def test_the_examples_run_and_the_django_view_erases() -> None:
    pytest.importorskip("django")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 4
    with CollectorThread(db=":memory:") as collector:

        class Api(journy_analytics.JournyAPI):
            def __init__(self, **settings: Any) -> None:  # the docs name api.journy.io
                super().__init__(**{**settings, "host": collector.url})

        class Client(journy_analytics.Analytics):
            def __init__(self, **settings: Any) -> None:
                settings.pop("spool", None)  # the docs' path is a server's
                super().__init__(
                    **{
                        **settings,
                        "host": collector.url,
                        "api_host": collector.url,
                        "flush_interval": 0.05,
                    }
                )

        patch = pytest.MonkeyPatch()
        patch.setattr(journy_analytics, "JournyAPI", Api)
        patch.setattr(journy_analytics, "Analytics", Client)
        namespace: Dict[str, Any] = {}
        made = []
        original_init = Client.__init__

        def tracked(self: Any, **settings: Any) -> None:
            original_init(self, **settings)
            made.append(self)

        patch.setattr(Client, "__init__", tracked)
        try:
            for index, block in enumerate(blocks):
                exec(
                    compile(block, f"docs/journy-api.md python block {index + 1}", "exec"),
                    namespace,
                )
                if index == 0:
                    user = collector.user("u1")
                    assert user is not None and user["traits"]["plan"] == "pro"
                    assert user["traits"]["signed_up_at"] == "2024-05-01T09:30:00.000Z"
                    assert "u1" in collector.account("acc-1")["members"]
            # Block 2 erased u1; block 4 removed it from acc-1 (after the erase: no-op).
            assert collector.user("u1") is None

            # The Django view: a user with events, erased through the view.
            from django.conf import settings

            if not settings.configured:
                settings.configure(DEBUG=False, ALLOWED_HOSTS=["testserver"])
            import django

            django.setup()
            from django.test import RequestFactory

            analytics = namespace["analytics"]  # the view's module-level client (block 3)
            analytics.identify(user_id="u9", traits={"email": "u9@acme-inc.com"})
            assert analytics.flush(10)
            assert collector.user("u9") is not None
            request = RequestFactory().post("/erase/u9", {"email": "u9@acme-inc.com"})
            response = namespace["erase_user"](request, "u9")
            assert response.status_code == 200, response.content
            assert b'"deleted": true' in response.content
            assert collector.user("u9") is None
            analytics.identify(user_id="u9", traits={"plan": "late"})
            assert analytics.stats()["erase_fence"]["refused"] == 1
            analytics.close_and_flush(5)
        finally:
            patch.undo()
            for client in made:
                client.close_and_flush(5)
