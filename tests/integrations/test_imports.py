"""Importing the SDK, or an integration, pulls in no framework it does not need."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ["django", "flask", "celery", "starlette", "fastapi", "gevent", "eventlet", "kombu"]


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(run.stdout.split())


def test_the_sdk_imports_no_framework() -> None:
    assert _imported_after("import journy_analytics, journy_analytics.integrations") == set()


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("asgi", set()),  # pure ASGI: no Starlette needed
        ("aws_lambda", set()),
        ("flask", {"flask"}),
        ("celery", {"celery", "kombu"}),
    ],
)
def test_each_integration_imports_only_its_framework(module: str, allowed: set[str]) -> None:
    pytest.importorskip(module if module in ("flask", "celery") else "journy_analytics")
    imported = _imported_after(f"import journy_analytics.integrations.{module}")
    if module == "celery":
        allowed |= _imported_after("import celery.signals")  # celery's own imports
    assert imported <= allowed, imported


def test_django_integration_imports_only_django() -> None:
    pytest.importorskip("django")
    code = (
        "from django.conf import settings; settings.configure(); "
        "import journy_analytics.integrations.django"
    )
    assert _imported_after(code) == {"django"}
