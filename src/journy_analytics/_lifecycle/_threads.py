"""Background threads that leave the application's signals to the main thread.

Python runs signal handlers in the main thread only, but the kernel hands a signal sent to
the process (SIGTERM from docker or Kubernetes, SIGINT from Ctrl-C) to any thread that does
not block it. When it lands on one of the SDK's threads, Python notes it, but the main
thread is not woken from what it is blocked in (``time.sleep``, a lock, a ``select``): the
handler, and with it the exit flush, waits until that call returns, which may be never.
Seen as a SIGTERM that hung one run in about eight. So every thread the SDK starts blocks
the asynchronous signals before it runs anything, and the kernel picks another thread,
normally the main one.

User code the SDK runs on those threads (event callbacks, ``on()`` handlers, destination
plugins, a user's ``http_client``) must not inherit that mask: a process or thread it
starts would inherit it in turn and ignore ``terminate()`` and Ctrl-C. So each such call
runs inside ``user_code``, which switches the thread back to the mask a normal thread has
(the one the first non-SDK thread in the chain of creators had) and blocks again after.
It costs two ``pthread_sigmask`` calls on an SDK thread (a few microseconds, once per
batch of callbacks, not per callback) and one thread-local lookup elsewhere; nested
regions switch once. While user code runs, a
process-wide signal may land on that thread, as it may on any thread the app starts.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import Any, Callable, FrozenSet, Iterable, Optional, Set

__all__ = ["signal_free", "user_code"]

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

# The C function: signal.pthread_sigmask turns each signal of the old mask into a Signals
# enum member, which made a switch cost about 70 us instead of a few.
_sigmask: Callable[[int, Iterable[int]], Set[int]] = getattr(
    importlib.import_module("_signal"), "pthread_sigmask", lambda how, mask: set()
)


# Per thread: ``normal_mask``, set only in a thread signal_free() blocked (the mask user code
# gets back), and ``depth``, how many user_code regions are open on it.
_local = threading.local()


def signal_free(target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` wrapped to block the asynchronous signals in the thread that runs it."""
    if not _BLOCKABLE:
        return target
    # A thread started from one of ours inherits our blocked mask: the normal mask is then
    # the creator's normal one, not the mask the new thread starts with.
    inherited: Optional[Set[int]] = getattr(_local, "normal_mask", None)

    def run(*args: Any, **kwargs: Any) -> Any:
        # Only in a thread of its own: under gevent or eventlet a "thread" is a greenlet
        # in the main thread, which must keep receiving signals.
        if not _in_main_os_thread():
            started = _sigmask(signal.SIG_BLOCK, _BLOCKABLE)
            _local.normal_mask = inherited if inherited is not None else started
            _local.depth = 0
        return target(*args, **kwargs)

    return run


class _UserCode:
    """``with user_code:`` around a call into the user's code (see the module docstring).
    A no-op outside the SDK's own threads."""

    __slots__ = ()

    def __enter__(self) -> None:
        local = _local
        normal = getattr(local, "normal_mask", None)
        if normal is None:
            return
        depth = local.depth
        local.depth = depth + 1
        if depth == 0:
            _sigmask(signal.SIG_SETMASK, normal)

    def __exit__(self, *exc_info: object) -> None:
        local = _local
        if getattr(local, "normal_mask", None) is None:
            return
        local.depth -= 1
        if local.depth == 0:
            _sigmask(signal.SIG_BLOCK, _BLOCKABLE)


user_code = _UserCode()


def _in_main_os_thread() -> bool:
    native = threading.get_native_id()
    if sys.platform.startswith("linux"):
        # The main thread's id is the process id, in a forked child too. Not
        # threading.main_thread(): in a child forked before gevent patched threading (a
        # gunicorn gevent worker) it still carries the parent's id.
        return native == os.getpid()
    return native == threading.main_thread().native_id
