"""segment-analytics-python's own test suite, run against journy_analytics.segment.

The test files come from the installed release (the dev extra installs it; its wheel carries
segment/analytics/test/). They run in a child pytest whose conftest swaps ``segment.analytics``
for the shim and points it at a local collector on 127.0.0.1; nothing is copied into this
repository. Skips are listed with their reasons in suite_skips.py and docs/migrating.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Tuple

import pytest

from journy_analytics.collector import CollectorThread
from segment_compat.suite_skips import RUN_FILES, SKIPPED_FILES, SKIPPED_TESTS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _segment_test_dir() -> Path:
    spec = importlib.util.find_spec("segment.analytics")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("segment-analytics-python is not installed (it is in the dev extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "test"
    if not path.is_dir():
        pytest.fail(f"the installed segment-analytics-python has no test suite at {path}")
    return path


def test_every_segment_test_file_is_run_or_skipped_with_a_reason() -> None:
    shipped = {p.name for p in _segment_test_dir().glob("test_*.py")}
    assert shipped == set(RUN_FILES) | set(SKIPPED_FILES), (
        "the installed segment release changed its test files; sort the new ones into "
        "tests/segment_compat/suite_skips.py and docs/migrating.md"
    )


def test_docs_list_every_skip_with_its_reason() -> None:
    doc = (ROOT / "docs" / "migrating.md").read_text()
    for name in [*SKIPPED_FILES, *SKIPPED_TESTS]:
        assert f"`{name}`" in doc, f"docs/migrating.md does not list the skipped {name}"


def _run_suite(tmp_path: Path, collector_url: str) -> Tuple[Dict[str, str], str]:
    suite = tmp_path / "segment_suite"
    suite.mkdir()
    for name in RUN_FILES:
        shutil.copy(_segment_test_dir() / name, suite / name)
    shutil.copy(HERE / "suite_conftest.py", suite / "conftest.py")
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "JOURNY_HOST": collector_url,
        "JOURNY_SUITE_SKIPS_DIR": str(HERE),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--timeout=120",
            f"--junitxml={report}",
            f"--rootdir={suite}",
        ],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outcomes: Dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            module = case.get("classname", "").rsplit(".", 1)
            file_ = module[0].split(".")[-1] + ".py" if len(module) == 2 else "?"
            nodeid = f"{file_}::{module[-1]}::{case.get('name')}"
            kinds = {child.tag for child in case}
            if kinds & {"failure", "error"}:
                outcomes[nodeid] = "failed"
            elif "skipped" in kinds:
                outcomes[nodeid] = "skipped"
            else:
                outcomes[nodeid] = "passed"
    return outcomes, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_segment_suite_passes_against_the_shim(tmp_path: Path) -> None:
    with CollectorThread(db=":memory:") as collector:
        outcomes, output = _run_suite(tmp_path, collector.url)
        with urllib.request.urlopen(collector.url + "/api/stats", timeout=10) as answer:
            received = json.loads(answer.read())
    assert outcomes, f"Segment's suite did not run:\n{output}"
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    assert not failed, f"Segment's tests failing against the shim: {failed}\n{output}"
    skipped = {n for n, o in outcomes.items() if o == "skipped"}
    assert skipped == set(SKIPPED_TESTS), (
        f"skipped {sorted(skipped)}; expected {sorted(SKIPPED_TESTS)}"
    )
    passed = [n for n, o in outcomes.items() if o == "passed"]
    for name in RUN_FILES:
        assert any(n.startswith(name) for n in passed), f"no test of {name} ran"
    assert not re.search(r"api\.segment\.io", output), "something tried Segment's servers"
    # Segment's test_flush alone queues 1000 identify calls: they must have reached 127.0.0.1.
    assert received["received"] >= 1000, received
