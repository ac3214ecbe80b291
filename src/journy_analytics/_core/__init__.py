"""The delivery core: from encoded events in a queue to the server's answer, reported.

What the rest of the package may use is exported here and nothing else is imported from
outside this folder: the worker and its config, the transport protocol and its default,
the network settings, the retry policy, and the batch-settled hook for bulk senders
(:class:`BatchAck`, :class:`BatchOwner`). The outcome vocabulary (``Cause``,
``DeliveryError``) is the package's own (``_types``, ``_exceptions``).

Inside, one module per owner (see docs/architecture.md):

- ``_worker``: the dispatcher thread and the worker's lifecycle, the flush target
- ``_queue``: the bounded deque of encoded events, cut into batches
- ``_outcomes``: every counter of ``stats()``, the batches in flight, the reporting
- ``_sender_pool``: the sender threads, parked retries, the pause gates
- ``_attempt``: one batch's attempts (envelope, gzip, one request, the retry decision)
- ``_spool``, ``_spool_file``: the optional disk queue (the worker's side; the file)
- ``_retry``: the retry policy, an immutable value
- ``_transport``, ``_network``: keep-alive HTTP with a watchdog; proxies, trust, DNS
"""

from __future__ import annotations

from journy_analytics._core._network import (
    PROXY_FROM_ENV,
    NetworkSettings,
    ProxySetting,
)
from journy_analytics._core._outcomes import BatchAck, BatchOwner
from journy_analytics._core._retry import Outcome, RetryPolicy, parse_retry_after
from journy_analytics._core._transport import (
    USER_AGENT,
    HttpClient,
    Response,
    StdlibHttpClient,
    explain_failure,
)
from journy_analytics._core._worker import Worker, WorkerConfig

__all__ = [
    "PROXY_FROM_ENV",
    "USER_AGENT",
    "BatchAck",
    "BatchOwner",
    "HttpClient",
    "NetworkSettings",
    "Outcome",
    "ProxySetting",
    "Response",
    "RetryPolicy",
    "StdlibHttpClient",
    "Worker",
    "WorkerConfig",
    "explain_failure",
    "parse_retry_after",
]
