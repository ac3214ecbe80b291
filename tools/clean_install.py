"""What a user gets from ``pip install journy-analytics``, checked in fresh virtual environments.

Every test of the suite runs in the development environment, where the dev extra installs
every framework and tool: a module that imports a package the core does not install passes
there and fails for users. This job builds the sdist and the wheel (the wheel from the sdist,
as ``python -m build`` does, so a file missing from the sdist fails here), then:

1. installs the wheel with no extra into a fresh venv: only journy-analytics and orjson may
   be there; every public module imports; each integration and the collector, whose package
   is missing, raise an ImportError naming the extra to install; the ``journy`` command runs;
   and the README's quick start (Getting started and the basic tracking methods, as written,
   with the host pointed at loopback) delivers to a collector;
2. installs the wheel with each extra alone, each into its own fresh venv, and uses what
   that extra enables. The collector that (1) and the gevent check deliver to runs from the
   ``collector`` venv. The extras are read from pyproject.toml: an extra with no check here
   fails the job.

Run it with ``make clean-install`` (or ``python tools/clean_install.py``; it needs the
``build`` package, in the dev extra). It uses only the standard library and the package
index pip is configured with (the cache makes it quick). Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "clean-install-key"
# The repository's own tooling, not for users: no check here.
TOOLING_EXTRAS = ("dev", "bench")
# What the core install may hold besides the SDK (pip itself where venv added it).
CORE_PACKAGES = {"journy-analytics", "orjson", "pip", "setuptools"}

# Public modules that need nothing beyond the core.
CORE_MODULES = [
    "journy_analytics",
    "journy_analytics.segment",
    "journy_analytics.plugins",
    "journy_analytics.bulk",
    "journy_analytics.testing",
    "journy_analytics.integrations",
    "journy_analytics.integrations.asgi",
    "journy_analytics.integrations.aws_lambda",
]
# Public modules that need an extra: without it, an ImportError that names the extra.
NEEDS_EXTRA = {
    "journy_analytics.collector": "collector",
    "journy_analytics.integrations.django": "django",
    "journy_analytics.integrations.flask": "flask",
    "journy_analytics.integrations.celery": "celery",
}

# Per extra, code run in a venv holding only the SDK and that extra: it uses what the
# extra enables and prints "ok". {url} is the collector's address.
EXTRA_CHECKS: Dict[str, str] = {
    "collector": """
        from journy_analytics import Analytics
        from journy_analytics.collector import CollectorThread
        with CollectorThread(db=":memory:") as collector:
            client = Analytics(write_key="k", host=collector.url)
            client.track(user_id="u1", event="Collected")
            assert client.close_and_flush(10)
            assert [e["event"] for e in collector.events(type="track")] == ["Collected"]
        print("ok")
    """,
    "django": """
        from django.conf import settings
        settings.configure()
        import django
        django.setup()
        from journy_analytics.integrations.django import JournyMiddleware
        print("ok")
    """,
    "flask": """
        import flask
        from journy_analytics.integrations.flask import JournyAnalytics
        print("ok")
    """,
    "asgi": """
        import starlette
        from journy_analytics.integrations.asgi import JournyMiddleware
        print("ok")
    """,
    "celery": """
        import celery
        from journy_analytics.integrations.celery import instrument
        print("ok")
    """,
    "otel": """
        from journy_analytics.plugins import OpenTelemetryContext
        OpenTelemetryContext()
        print("ok")
    """,
    "import": """
        import tqdm
        import journy_analytics.cli
        print("ok")
    """,
    "parquet": """
        import pyarrow, pyarrow.parquet
        print("ok")
    """,
    "gevent": """
        from gevent import monkey
        monkey.patch_all()
        from journy_analytics import Analytics
        client = Analytics(write_key="{key}", host="{url}")
        client.track(user_id="green", event="Under gevent")
        assert client.close_and_flush(10)
        print("ok")
    """,
}


class Failed(Exception):
    pass


def run(args: List[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise Failed(f"{what} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def extras_of_pyproject(source: Path) -> Dict[str, List[str]]:
    text = (source / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    found = re.findall(r"^([\w-]+) = \[(.*?)\]", section, re.S | re.M)
    return {name: re.findall(r'"([^"]+)"', body) for name, body in found}


def build(source: Path, out: Path) -> Path:
    """The sdist, then the wheel built from it; returns the wheel."""
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], "python -m build")
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    print(f"built {sdist.name} and {wheel.name}")
    return wheel


def fresh_venv(path: Path, requirement: str) -> Path:
    """A new venv holding ``requirement`` and what it depends on; returns its python."""
    run([sys.executable, "-m", "venv", "--without-pip", str(path)], f"venv {path.name}")
    python = path / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", requirement],
        f"pip install {requirement} into {path.name}",
    )
    run([sys.executable, "-m", "pip", "--python", str(python), "check"], f"pip check {path.name}")
    return python


def installed(python: Path) -> Dict[str, str]:
    listed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "list", "--format=json"],
        "pip list",
    )
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)}


def python_code(python: Path, code: str, what: str, cwd: Optional[Path] = None) -> str:
    # Run from an empty folder: the checkout's src/ must never be what gets imported.
    done = run(
        [str(python), "-c", textwrap.dedent(code)],
        what,
        cwd=str(cwd),
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOURNY_HOST")},
    )
    return done.stdout


def check_core(python: Path, work: Path) -> None:
    extra_packages = set(installed(python)) - CORE_PACKAGES
    if extra_packages:
        raise Failed(f"the core install pulled more than orjson: {sorted(extra_packages)}")
    probe = f"""
        import importlib, json
        results = {{}}
        for name in {CORE_MODULES + list(NEEDS_EXTRA)!r}:
            try:
                module = importlib.import_module(name)
                results[name] = "ok" if "/site-packages/" in module.__file__ else module.__file__
            except ImportError as exc:
                results[name] = f"{{type(exc).__name__}}: {{exc}}"
        print(json.dumps(results))
    """
    results = json.loads(python_code(python, probe, "importing the public modules", work))
    problems = [f"{name}: {results[name]}" for name in CORE_MODULES if results[name] != "ok"]
    for name, extra in NEEDS_EXTRA.items():
        hint = f"pip install 'journy-analytics[{extra}]'"
        if not results[name].startswith("ImportError: ") or hint not in results[name]:
            problems.append(f"{name} without its extra: {results[name]} (wanted {hint!r})")
    if problems:
        raise Failed("in a clean install of the core:\n  " + "\n  ".join(problems))
    print(f"core: {len(CORE_MODULES)} modules import; {len(NEEDS_EXTRA)} name their extra")
    journy = python.parent / "journy"
    run([str(journy), "--help"], "journy --help", cwd=str(work))
    refused = subprocess.run([str(journy), "collector"], capture_output=True, text=True)
    if refused.returncode != 2 or "journy-analytics[collector]" not in refused.stderr:
        raise Failed(f"journy collector without the extra: {refused.stderr!r}")


def quick_start(readme: str, url: str) -> str:
    """The README's Getting started and basic tracking blocks, pointed at ``url``."""
    part = readme.split("## Getting started", 1)[1].split("\n## Configuration", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, re.S)
    code = "\n".join(blocks)
    if 'host="https://analyze.journy.io"' not in code or len(blocks) < 5:
        raise Failed("the README's quick start changed: update tools/clean_install.py")
    code = code.replace('host="https://analyze.journy.io"', f'host="{url}"')
    code = code.replace('write_key="YOUR_WRITE_KEY"', f'write_key="{WRITE_KEY}"')
    return code + "\nassert analytics.close_and_flush(10)\nprint('ok')\n"


def get(url: str) -> Dict[str, object]:
    """A read of the collector's API, with the write key it was started with."""
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        data: Dict[str, object] = json.loads(answer.read())
        return data


class Collector:
    """``journy collector`` run from the venv of the collector extra, on a free port."""

    def __init__(self, python: Path, work: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        journy = python.parent / "journy"
        command = [str(journy), "collector", "--port", str(port), "--db", ":memory:"]
        command += ["--write-key", WRITE_KEY]
        self.process = subprocess.Popen(
            command, cwd=str(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                get(self.url + "/api/stats")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    error = self.process.stderr.read() if self.process.stderr else ""
                    raise Failed(f"the collector did not start: {error}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to build")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="journy-clean-install-"))
    try:
        extras = extras_of_pyproject(args.source)
        for tooling in TOOLING_EXTRAS:
            extras.pop(tooling, None)
        unchecked = set(extras) - set(EXTRA_CHECKS)
        if unchecked:
            raise Failed(f"extras with no check in tools/clean_install.py: {sorted(unchecked)}")
        wheel = build(args.source, work / "dist")
        empty = work / "cwd"
        empty.mkdir()

        core = fresh_venv(work / "core", str(wheel))
        check_core(core, empty)

        venvs = {extra: fresh_venv(work / extra, f"{wheel}[{extra}]") for extra in extras}
        collector = Collector(venvs["collector"], empty)
        try:
            readme = (args.source / "README.md").read_text(encoding="utf-8")
            python_code(core, quick_start(readme, collector.url), "the README quick start", empty)
            user = get(collector.url + "/api/users/f4ca124298")
            traits = user.get("traits")
            if not isinstance(traits, dict) or traits.get("email") != "elon@tesla.com":
                raise Failed(f"the quick start's identify did not arrive: {user}")
            print("core: the README quick start delivered to the collector")
            for extra, python in venvs.items():
                others = set(installed(python)) - CORE_PACKAGES
                wanted = {re.split(r"[<>=\[ ]", r)[0].lower() for r in extras[extra]}
                if not wanted <= others:
                    raise Failed(f"[{extra}] did not install {sorted(wanted - others)}")
                code = EXTRA_CHECKS[extra].format(url=collector.url, key=WRITE_KEY)
                output = python_code(python, code, f"the [{extra}] check", empty)
                if output.strip() != "ok":
                    raise Failed(f"the [{extra}] check printed {output!r}")
                print(f"[{extra}]: {', '.join(sorted(wanted))} installed, and it works")
            green = get(collector.url + "/api/events?userId=green")["events"]
            if not isinstance(green, list) or len(green) != 1:
                raise Failed(f"the gevent check's event did not arrive: {green}")
        finally:
            collector.stop()
    except Failed as exc:
        print(f"clean install: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"clean install: every check held ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
