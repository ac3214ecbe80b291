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


def _run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing any of ``blocked`` fails as if
    the package were not installed (a clean install of the core has none of them)."""
    guard = (
        "import sys, importlib.abc\n"
        "class _Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Absent())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", guard + code], capture_output=True, text=True, timeout=60
    )


def test_the_segment_drop_in_imports_without_urllib3() -> None:
    # Neither the drop-in nor its proxies setting needs urllib3 or requests: both go through
    # the SDK's own transport.
    run = _run_without(
        ["urllib3", "requests"],
        "import journy_analytics.segment as a\n"
        "c = a.Client('k', host='http://127.0.0.1:9', send=False)\n"
        "print(c.track('u1', 'E')[0])\n"
        "p = a.Client('k', host='http://127.0.0.1:9', send=False,\n"
        "             proxies={'http': 'http://127.0.0.1:3128'})\n"
        "print(p.track('u1', 'E')[0])\n"
        "import sys\n"
        "print(sorted(m for m in ('urllib3', 'requests') if m in sys.modules))\n",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["True", "True", "[]"]


@pytest.mark.parametrize("framework", ["django", "flask", "celery"])
def test_an_integration_without_its_framework_says_which_extra_to_install(
    framework: str,
) -> None:
    run = _run_without([framework], f"import journy_analytics.integrations.{framework}")
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: journy_analytics.integrations.{framework} needs {framework}, which is "
        f"not installed: pip install 'journy-analytics[{framework}]'"
    ), run.stderr


def test_the_collector_without_aiohttp_says_which_extra_to_install() -> None:
    run = _run_without(["aiohttp"], "import journy_analytics.collector")
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == (
        "ImportError: journy_analytics.collector needs aiohttp, which is not installed: "
        "pip install 'journy-analytics[collector]'"
    ), run.stderr
