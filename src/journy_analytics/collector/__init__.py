"""A local journy.io collector: a real batch endpoint with journy.io's profile semantics.

Needs the ``collector`` extra (``pip install "journy-analytics[collector]"``, for aiohttp);
``import journy_analytics`` alone never imports this package. Run it with ``journy collector``
(or ``python -m journy_analytics.collector``) or, from Python (tests, the demo), with
``CollectorThread``. ``Server`` (with ``CollectorState`` and ``Store``) runs it on an event
loop you own. See docs/collector.md.
"""

from __future__ import annotations

try:
    import aiohttp  # noqa: F401  (the server's, imported by _server below)
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "aiohttp":
        raise
    raise ImportError(
        "journy_analytics.collector needs aiohttp, which is not installed: "
        "pip install 'journy-analytics[collector]'"
    ) from None

from journy_analytics.collector._faults import Faults
from journy_analytics.collector._ingest import MAX_BODY_BYTES, MAX_EVENT_BYTES
from journy_analytics.collector._rest import RestSettings
from journy_analytics.collector._rest_auth import PERMISSIONS, ApiKey, RateLimit
from journy_analytics.collector._server import DEFAULT_PATH, CollectorState, Server
from journy_analytics.collector._store import Store
from journy_analytics.collector._thread import CollectorThread

__all__ = [
    "DEFAULT_PATH",
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "PERMISSIONS",
    "ApiKey",
    "CollectorState",
    "CollectorThread",
    "Faults",
    "RateLimit",
    "RestSettings",
    "Server",
    "Store",
]
