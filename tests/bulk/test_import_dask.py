"""``bulk.send_partition`` on a real ``dask.distributed.LocalCluster`` of worker processes."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import pytest

from journy_analytics.bulk import ImportReport, send_partition
from journy_analytics.collector import CollectorThread

distributed = pytest.importorskip("dask.distributed")
dask_bag = pytest.importorskip("dask.bag")


def _row(i: int) -> Dict[str, Any]:
    # Flat rows, as a table export would give them.
    return {"user_id": f"u{i % 40}", "action": "Imported", "created_at": "2016-02-03", "n": i}


def test_send_partition_on_a_local_cluster_is_idempotent_on_rerun() -> None:
    n = 2000
    with CollectorThread() as collector:
        url = collector.url

        def job() -> ImportReport:
            bag = dask_bag.from_sequence([_row(i) for i in range(n)], npartitions=4)
            results: List[Tuple[int, ImportReport]] = bag.map_partitions(
                lambda rows: [
                    (
                        os.getpid(),
                        send_partition(
                            rows,
                            write_key="k",
                            host=url,
                            mapping="userId=user_id,event=action,timestamp=created_at",
                        ),
                    )
                ]
            ).compute()
            assert len(results) == 4
            # Each partition ran in a worker process, with a client of its own.
            assert os.getpid() not in {pid for pid, _ in results}
            return ImportReport.combine(report for _, report in results)

        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            distributed.Client(cluster),
        ):
            first = job()
            assert first.ok and first.delivered == n
            # The job fails half-way and is re-run from scratch: no duplicate may appear.
            again = job()
            assert again.ok and again.delivered == n
        events = collector.events()
        assert len(events) == n
        assert sorted(e["properties"]["n"] for e in events) == list(range(n))
        assert all(e["timestamp"] == "2016-02-03T00:00:00.000Z" for e in events)
        assert collector.stats()["duplicates"] == n
