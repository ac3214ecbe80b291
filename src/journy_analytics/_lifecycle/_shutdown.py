"""Process exit: every open worker gets one bounded chance to deliver.

The registry holds every worker that is not closed, strongly: a client that went out of
scope without ``close_and_flush()`` still has its events delivered (its worker retires in
the background, see ``Worker.retire``) and, at exit, flushed like any other.

Three ways a process ends, three hooks:

* normal exit: ``atexit``.
* a ``multiprocessing`` child (ends with ``os._exit``, which skips atexit): its own
  finalizer registry, which it does run.
* ``SIGTERM`` (docker stop, Kubernetes, a plain ``kill``), whose default action skips
  atexit: with ``handle_sigterm=True`` (the default) a handler delivers what is queued
  within ``exit_flush_timeout``, then ends the process as SIGTERM would have. When the app
  or its server installed a SIGTERM handler of its own before the client was created
  (uvicorn, gunicorn workers, Celery), ours delivers what is queued, switches the clients
  to send every later event at once (the app's graceful shutdown may still track some),
  and calls that handler: the app decides how the process ends. A handler the app
  installs *after* the client replaces ours; Python's exit then runs atexit as usual.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
import time
from typing import Any, List, Optional, Protocol, Set

from journy_analytics._lifecycle import _fork
from journy_analytics._lifecycle._threads import signal_free
from journy_analytics._logging import logger

__all__ = ["flush_all", "install_sigterm_handler", "track", "untrack"]


class _Closable(Protocol):
    @property
    def exit_flush_timeout(self) -> float: ...

    def close(self, timeout: Optional[float]) -> bool: ...

    def flush(self, timeout: Optional[float]) -> bool: ...

    def terminating(self, budget: float) -> None: ...


_open: Set[Any] = set()
_lock = threading.Lock()


def track(worker: _Closable) -> None:
    with _lock:
        _open.add(worker)


def untrack(worker: _Closable) -> None:
    with _lock:
        _open.discard(worker)


def _workers() -> List[_Closable]:
    with _lock:
        return list(_open)


def flush_all(close: bool = True) -> None:
    """Close (or just flush) every open worker, all within the largest
    ``exit_flush_timeout`` of them. They progress at once, each on its own threads."""
    # In a child forked behind Python's back (libc fork() from a C extension), the workers
    # still hold the parent's queues: let them reset first, or the child's exit would wait
    # for, and report as dropped, events that are the parent's to deliver.
    _fork.check()
    workers = _workers()
    if not workers:
        return
    budget = max(w.exit_flush_timeout for w in workers)
    deadline = time.monotonic() + budget
    for worker in workers:
        remaining = max(0.0, min(worker.exit_flush_timeout, deadline - time.monotonic()))
        try:
            if close:
                worker.close(remaining)
            else:
                worker.flush(remaining)
        except Exception:  # pragma: no cover
            logger.exception("delivering at exit failed")


atexit.register(flush_all)


# -- SIGTERM ------------------------------------------------------------------------------

_previous: Any = None
_installed = False


def install_sigterm_handler() -> None:
    """Install the SIGTERM handler once per process, from the main thread (the only one
    Python lets set handlers). Leaves a SIGTERM that is ignored, or handled outside
    Python, as it is."""
    global _previous, _installed
    if _installed or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        logger.debug(
            "the client was created outside the main thread: no SIGTERM handler; call "
            "close_and_flush() from your own shutdown code"
        )
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    _previous = previous
    _installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    _fork.check()
    previous = _previous
    chained = callable(previous)
    if chained:
        workers = _workers()
        budget = max((w.exit_flush_timeout for w in workers), default=0.0)
        for worker in workers:
            worker.terminating(budget)
    try:
        _deliver_from_handler(close=not chained)
    except Exception as exc:
        # gevent runs signal handlers in its hub, where nothing may block: the app's own
        # shutdown (chained below) ends through sys.exit, and atexit delivers then.
        logger.warning("could not deliver from the SIGTERM handler (%s); relying on exit", exc)
    if chained:
        previous(signum, frame)
        return
    # The default action: deliver, then end exactly as SIGTERM would have.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def _deliver_from_handler(close: bool) -> None:
    """A signal handler runs between two bytecodes of the main thread, which may hold one
    of our locks at that moment: deliver from another thread, and wait for it at most the
    exit budget (plus a little), so such a moment delays the exit instead of hanging it."""
    workers = _workers()
    if not workers:
        return
    budget = max(w.exit_flush_timeout for w in workers)
    helper = threading.Thread(
        target=signal_free(flush_all), args=(close,), name="journy-analytics-sigterm", daemon=True
    )
    try:
        helper.start()
    except RuntimeError:  # interpreter shutdown: no new thread
        flush_all(close)
        return
    helper.join(budget + 1.0)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _watch_multiprocessing_child()


class _ExitHook:
    """A weak-referenceable key for multiprocessing's after-fork registry."""


_exit_hook = _ExitHook()


def _register_multiprocessing_exit_flush(_: object) -> None:
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(None, flush_all, exitpriority=0)


def _watch_multiprocessing_child() -> None:
    """multiprocessing ends a fork/forkserver child with ``os._exit()``: atexit never runs
    there, so events tracked in the child would be lost silently. Its own finalizers do
    run, but it clears them in the child after this hook, so register through its
    after-fork registry, which runs after the clear. A no-op unless multiprocessing is in
    use (it is imported then; we never import it ourselves)."""
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_exit_hook, _register_multiprocessing_exit_flush)


# Through _fork: it runs for a fork Python saw (os.register_at_fork) and for one it did not.
_fork.register(_after_fork_in_child)
