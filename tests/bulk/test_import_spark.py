"""The PySpark recipe of docs/import.md, run as written in PySpark local mode (``make soak``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from journy_analytics.collector import CollectorThread

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("JOURNY_SOAK") != "1", reason="PySpark: set JOURNY_SOAK=1 (make soak)"
    ),
]

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "import.md"


def _recipe() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- spark-recipe:start -->\n```python\n(.*?)```\n<!-- spark-recipe:end -->", text, re.S
    )
    assert block is not None, "docs/import.md lost its Spark recipe markers"
    return block.group(1)


def test_the_spark_recipe_imports_a_csv_export_idempotently(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    n = 3000
    with open(tmp_path / "orders.csv", "w") as f:
        f.write("user_id,action,created_at,total\n")
        for i in range(n):
            f.write(f"u{i % 97},Order Placed,2019-0{1 + i % 9}-11 10:{i % 60:02d}:00,{i}\n")
    with CollectorThread() as collector:
        code = _recipe()
        # Only the two settings a user fills in change; the rest runs as written.
        code = code.replace('WRITE_KEY = "your-write-key"', 'WRITE_KEY = "k"')
        code = code.replace('HOST = "https://analyze.journy.io"', f'HOST = "{collector.url}"')
        assert collector.url in code
        script = tmp_path / "recipe.py"
        script.write_text(code)
        env = {
            **os.environ,
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYSPARK_SUBMIT_ARGS": "--master local[2] pyspark-shell",
            "TZ": "UTC",
        }
        for run in range(2):  # the second run is a re-run of the whole job
            done = subprocess.run(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            assert f"delivered: {n:,}" in done.stdout, done.stdout
            assert collector.stats()["events"] == n, f"run {run + 1}"
        events = collector.events()
        assert sorted(int(e["properties"]["total"]) for e in events) == list(range(n))
        first = next(e for e in events if e["properties"]["total"] == 1)
        assert first["userId"] == "u1"
        assert first["timestamp"] == "2019-02-11T10:01:00.000Z"
        assert collector.stats()["duplicates"] == n
