"""Celery: the scope active when a task is sent is active again when it runs.

::

    from celery import Celery
    from journy_analytics.integrations.celery import instrument

    app = Celery("tasks", broker=...)
    instrument(app)

    # in a web request, inside journy_analytics.scope(user_id=...):
    export_report.delay(report_id)      # the task's events carry that user_id

``instrument`` connects Celery signals: ``before_task_publish`` writes the current scope
(a small JSON dict) into the message's ``journy_scope`` header; in the worker,
``task_prerun`` opens that scope around the task and ``task_postrun`` closes it. Every
worker process flushes the client when it shuts down (``worker_process_shutdown`` for the
prefork children, which end without running ``atexit``, and ``worker_shutdown``), within
``flush_timeout``. A client created in the parent before the prefork pool forks keeps
working in each child (the SDK gives a forked child its own worker thread).

``analytics=`` (or ``client=``) is the client to flush; by default the module-level one.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Dict, Optional

from journy_analytics._message import Scope, activate_scope, active_scope, deactivate
from journy_analytics.client import Analytics
from journy_analytics.integrations._common import RateLimitedLog, flush, missing_framework

try:
    from celery import signals
except ModuleNotFoundError as exc:
    raise missing_framework(exc, "celery", "celery") from None

__all__ = ["HEADER", "instrument"]

HEADER = "journy_scope"

_lock = threading.Lock()
_tokens: Dict[str, contextvars.Token[Optional[Scope]]] = {}
_flush_targets: Dict[int, tuple[Optional[Analytics], float]] = {}
_bad_header = RateLimitedLog(every=60.0)
_late = RateLimitedLog(every=60.0)


def instrument(
    celery_app: Any,
    *,
    analytics: Optional[Analytics] = None,
    client: Optional[Analytics] = None,
    flush_timeout: float = 5.0,
) -> None:
    """Carry the journy scope from senders to tasks and flush at worker shutdown (see the
    module doc). Calling it again for the same app changes nothing but the client."""
    target = analytics if analytics is not None else client
    with _lock:
        _flush_targets[id(celery_app)] = (target, float(flush_timeout))
    # Celery's signals are process-wide; dispatch_uid keeps one connection each.
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="journy.publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="journy.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="journy.postrun")
    signals.worker_process_shutdown.connect(
        _on_shutdown, weak=False, dispatch_uid="journy.process_shutdown"
    )
    signals.worker_shutdown.connect(_on_shutdown, weak=False, dispatch_uid="journy.shutdown")


def _on_publish(headers: Optional[Dict[str, Any]] = None, **_: Any) -> None:
    current = active_scope()
    if current is not None and headers is not None:
        headers[HEADER] = current.to_dict()


def _received_scope(task: Any) -> Optional[Dict[str, Any]]:
    request = getattr(task, "request", None)
    if request is None:
        return None
    data = getattr(request, HEADER, None)  # protocol 2: custom headers land on the request
    if data is None:
        headers = getattr(request, "headers", None) or {}
        data = headers.get(HEADER) if isinstance(headers, dict) else None
    return data if isinstance(data, dict) else None


def _on_prerun(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
    data = _received_scope(task)
    if data is None or task_id is None:
        return
    try:
        received = Scope.from_dict(data)
    except Exception as exc:
        _bad_header.warning(
            "journy_analytics: task %s carries an unusable %s header (%s); it runs without it",
            getattr(task, "name", "?"),
            HEADER,
            exc,
        )
        return
    _tokens[task_id] = activate_scope(received)


def _on_postrun(task_id: Optional[str] = None, **_: Any) -> None:
    token = _tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        try:
            deactivate(token)
        except ValueError:
            pass  # the pool ran the task's hooks in different contexts: nothing to restore


def _on_shutdown(**_: Any) -> None:
    with _lock:
        targets = list(_flush_targets.values()) or [(None, 5.0)]
    for target, timeout in targets:
        if not flush(target, timeout):
            _late.warning(
                "journy_analytics: events were still undelivered %.1f s into the Celery "
                "worker's shutdown flush",
                timeout,
            )
