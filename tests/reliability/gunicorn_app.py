"""The WSGI app of the gunicorn test (and the recipe in docs/reliability.md).

One ``Analytics`` is created at import. With ``gunicorn --preload`` that happens in the
master, before the workers are forked: each worker's first ``track`` starts that worker's
own threads and connections (the client is fork-safe), and each worker's exit (SIGTERM to
the master, ``max_requests`` recycling) flushes what it still holds, through ``atexit``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Tuple
from urllib.parse import parse_qs

from journy_analytics import Analytics

analytics = Analytics(
    write_key="test-key",
    host=os.environ["JOURNY_TEST_COLLECTOR"],
    # Long on purpose: the events of the last requests are still queued at shutdown, so
    # the test sees whether shutdown delivers them.
    flush_interval=60.0,
)

StartResponse = Callable[[str, List[Tuple[str, str]]], Any]


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    message_id = query.get("mid", [""])[0]
    if not message_id:
        start_response("400 Bad Request", [("Content-Length", "0")])
        return [b""]
    pid = os.getpid()
    analytics.track(
        user_id=f"visitor-{message_id}",
        event="Request Served",
        properties={"pid": pid, "path": environ.get("PATH_INFO", "/")},
        message_id=message_id,
    )
    body = str(pid).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
