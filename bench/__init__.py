"""Side-by-side benchmark of journy-analytics (``python -m bench`` / ``make bench``).

Modules: ``__main__`` (orchestration, one subprocess per SDK and scenario), ``runner`` (one
measurement in a fresh interpreter), ``sink`` (the loopback sink, its own process), ``workload``
(the shared event shape), ``report`` (tables, JSON, docs/benchmarks.md). ``node/`` holds the
pinned @segment/analytics-node runner (``run.js``) and the golden wire capture (``capture.js``).
"""
