"""README's Python examples run as written (with the host pointed at a loopback collector)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

import journy_analytics
from journy_analytics import Analytics
from journy_analytics._default import set_default_client
from journy_analytics.collector import CollectorThread

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def python_blocks() -> List[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def framework_blocks() -> List[str]:
    """``py`` blocks: recipes that need a framework (and its server) to run."""
    return re.findall(r"```py\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_framework_recipes_compile_and_use_the_public_names() -> None:
    blocks = framework_blocks()
    assert len(blocks) >= 5
    text = "\n".join(blocks)
    for index, block in enumerate(blocks):
        compile(block, f"README.md py block {index + 1}", "exec")
    for name in (
        "journy_analytics.integrations.django.JournyMiddleware",
        "from journy_analytics.integrations.flask import JournyAnalytics",
        "from journy_analytics.integrations.asgi import JournyMiddleware",
        "from journy_analytics.integrations.celery import instrument",
        "from journy_analytics.integrations.aws_lambda import flush_after",
    ):
        assert name in text


def test_readme_has_the_seed_sections() -> None:
    text = README.read_text(encoding="utf-8")
    for heading in (
        "## Getting started",
        "### Identify",
        "### Group",
        "### Track",
        "### Page",
        "## Configuration",
        "## Graceful shutdown",
        "## Error handling",
        "## asyncio",
        "## Request scope",
        "## Frameworks",
        "### Django",
        "### Flask",
        "### FastAPI and Starlette (ASGI)",
        "### Celery",
        "### AWS Lambda",
        "### gevent and eventlet",
    ):
        assert heading in text
    first_lines = text.split("## Install")[0]
    assert "make demo" in first_lines and "make test" in first_lines


def test_readme_examples_run_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 10
    with CollectorThread() as collector:

        class Redirected(Analytics):
            """The examples name journy.io; no test leaves this machine."""

            def __init__(self, *args: Any, **settings: Any) -> None:
                settings["host"] = collector.url
                settings.setdefault("flush_interval", 0.05)
                super().__init__(*args, **settings)

        monkeypatch.setattr(journy_analytics, "Analytics", Redirected)
        # The examples set the module-level client's settings: undone after the test, so
        # that tests run later do not inherit a host that is gone.
        for setting in ("write_key", "host", "path"):
            monkeypatch.setattr(journy_analytics, setting, getattr(journy_analytics, setting))
        previous = set_default_client(None)
        namespace: Dict[str, Any] = {}
        try:
            for index, block in enumerate(blocks):
                try:
                    exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
                except Exception as exc:  # pragma: no cover - the failure message is the point
                    raise AssertionError(
                        f"README block {index + 1} failed: {exc!r}\n{block}"
                    ) from exc
            assert namespace["analytics"].close_and_flush(10)
            assert journy_analytics.close_and_flush(10)
        finally:
            set_default_client(previous)
        user = collector.user("f4ca124298")
        assert user is not None
        assert user["traits"] == {
            "firstname": "Elon",
            "lastname": "Musk",
            "email": "elon@tesla.com",
        }
        account = collector.account("tesla")
        assert account is not None
        assert account["traits"] == {"name": "Tesla", "employees": 127000, "plan": "enterprise"}
        assert "f4ca124298" in account["members"]
        names = [e.get("event") for e in collector.events(type="track")]
        for expected in (
            "Signed Up",
            "Car Sold",
            "Invoice Paid",
            "Report Generated",
            "Export Finished",
        ):
            assert expected in names
        (sold,) = [e for e in collector.events(type="track") if e.get("event") == "Car Sold"]
        assert sold["context"]["groupId"] == "tesla"
        assert sold["timestamp"] == "2015-12-12T19:11:00.000Z"
        # the request scope example: ids, account and context from the scope
        (exported,) = [
            e
            for e in collector.events(type="track")
            if e.get("event") == "Export Finished" and "ip" in e["context"]
        ]
        assert exported["userId"] == "f4ca124298"
        assert exported["context"]["groupId"] == "tesla"
        assert exported["context"]["ip"] == "203.0.113.9"
        (reported,) = [
            e
            for e in collector.events(type="track")
            if e.get("event") == "Report Generated" and e["context"].get("groupId") == "tesla"
        ]
        assert reported["userId"] == "f4ca124298"
        screens = collector.events(type="screen", user_id="f4ca124298")
        assert len(screens) >= 2, "pages with a name are screens"


def _extras() -> Dict[str, List[str]]:
    """pyproject.toml's optional dependencies (tomllib is 3.11+; the section is simple)."""
    text = (README.parent / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras: Dict[str, List[str]] = {}
    for name, body in re.findall(r"^([\w-]+) = \[(.*?)\]", section, re.S | re.M):
        extras[name] = re.findall(r'"([^"]+)"', body)
    return extras


def test_the_install_section_lists_every_extra_and_exactly_what_it_pulls() -> None:
    install = README.read_text(encoding="utf-8").split("## Install", 1)[1].split("\n## ", 1)[0]
    listed: Dict[str, List[str]] = {}
    for extra, pulls in re.findall(
        r'^pip install "journy-analytics\[([\w-]+)\]"\s+# \+ ([^:]+):', install, re.M
    ):
        listed[extra] = [p.strip() for p in pulls.split(",")]
    extras = _extras()
    for tooling in ("dev", "bench"):  # for this repository's own work, not for users
        extras.pop(tooling)
    assert listed == extras
    (core,) = re.findall(r"^pip install journy-analytics\s+# the SDK: (.*)$", install, re.M)
    text = (README.parent / "pyproject.toml").read_text(encoding="utf-8")
    dependencies = re.findall(r'"([^"]+)"', text.split("dependencies = [", 1)[1].split("]")[0])
    assert [d.split(">")[0] for d in dependencies] == ["orjson"]
    assert core == "orjson, nothing else"
