"""Background threads that leave the application's signals to the main thread.

Python runs signal handlers in the main thread only, but the kernel hands a signal sent to
the process (SIGTERM from docker or Kubernetes, SIGINT from Ctrl-C) to any thread that does
not block it. When it lands on one of the SDK's threads, Python notes it, but the main
thread is not woken from what it is blocked in (``time.sleep``, a lock, a ``select``): the
handler, and with it the exit flush, waits until that call returns, which may be never.
Seen as a SIGTERM that hung one run in about eight. So every thread the SDK starts blocks
the asynchronous signals before it runs anything, and the kernel picks another thread,
normally the main one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, FrozenSet

__all__ = ["signal_free"]

# Signals the kernel raises for a fault in the thread itself: blocking them would only
# turn a crash into a kill. SIGKILL and SIGSTOP cannot be blocked at all.
_SYNCHRONOUS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")


def _blockable() -> FrozenSet[int]:
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no per-thread signal masks
        return frozenset()
    keep = {
        getattr(signal, name)
        for name in (*_SYNCHRONOUS, "SIGKILL", "SIGSTOP")
        if hasattr(signal, name)
    }
    return frozenset(s for s in signal.valid_signals() if s not in keep)


_BLOCKABLE = _blockable()


def signal_free(target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` wrapped to block the asynchronous signals in the thread that runs it."""
    if not _BLOCKABLE:
        return target

    def run(*args: Any, **kwargs: Any) -> Any:
        # Only in a thread of its own: under gevent or eventlet a "thread" is a greenlet
        # in the main thread, which must keep receiving signals.
        if not _in_main_os_thread():
            signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKABLE)
        return target(*args, **kwargs)

    return run


def _in_main_os_thread() -> bool:
    native = threading.get_native_id()
    if sys.platform.startswith("linux"):
        # The main thread's id is the process id, in a forked child too. Not
        # threading.main_thread(): in a child forked before gevent patched threading (a
        # gunicorn gevent worker) it still carries the parent's id.
        return native == os.getpid()
    return native == threading.main_thread().native_id
