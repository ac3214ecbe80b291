"""Fork handling: one place that notices a new process and tells the parts that care.

A forked child inherits the parent's memory but none of its threads, and locks that other
threads held at the moment of the fork stay held forever. Two ways to notice:

* ``os.register_at_fork`` (where it exists: not on Windows) runs our hook in the child of
  every fork made through Python.
* ``check()`` compares ``os.getpid()``: it catches a fork that bypassed Python (a C
  extension calling ``fork()``, uWSGI without its after-fork hook) *before* the child's
  first event gets a message id or enters a queue, so nothing of the child's is mixed with
  what the parent left behind. The event methods call it only when ``mark[0]`` reads 0:
  on Linux ``mark`` is a page the kernel zero-fills in every child however it was forked
  (``MADV_WIPEONFORK``), so an event reads one byte instead of making a system call; where
  there is no such page ``mark[0]`` is always 0 and every event makes the check.

Hooks run in registration order; they are held weakly where they are bound methods, so a
client that is gone does not keep its worker alive for the sake of a fork.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import weakref
from typing import Any, Callable, List, Union

__all__ = ["check", "mark", "pid", "register"]

_getpid = os.getpid
_hooks: List[Union[Callable[[], Any], weakref.WeakMethod[Callable[[], Any]]]] = []
_hooks_lock = threading.Lock()


class _State:
    pid = _getpid()


state = _State()


# Linux's value (since 4.14); the mmap module does not name it.
_MADV_WIPEONFORK = 18


def _new_mark() -> Any:
    """``[0]`` reads 1 in this process, 0 in a child it forks (a page the kernel wipes in
    the child; re-armed by ``check()``). Without such a page: always 0 (always check), or
    always 1 where there is no fork at all."""
    if not hasattr(os, "fork"):
        return b"\x01"
    if sys.platform.startswith("linux"):
        try:
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=flags)
            page.madvise(_MADV_WIPEONFORK)
        except (AttributeError, OSError, ValueError):
            pass  # a kernel before 4.14, or an mmap without madvise
        else:
            page[0] = 1
            return page
    return bytearray(1)


mark = _new_mark()


def pid() -> int:
    return state.pid


def register(hook: Callable[[], Any]) -> None:
    """Run ``hook()`` in a forked child, before its first event."""
    entry: Any = weakref.WeakMethod(hook) if hasattr(hook, "__self__") else hook
    with _hooks_lock:
        _hooks.append(entry)


def check() -> None:
    """Notice a fork that bypassed ``os.register_at_fork``. A system call (~0.3 us)."""
    if _getpid() != state.pid:
        _in_child()
    if type(mark) is mmap.mmap:
        mark[0] = 1  # this process's hooks have run: events read the mark again


def _in_child() -> None:
    global _hooks_lock
    current = _getpid()
    if current == state.pid:
        return
    state.pid = current
    # The parent's lock may have been held by one of its threads at the fork.
    _hooks_lock = threading.Lock()
    alive = []
    for entry in list(_hooks):
        hook = entry() if isinstance(entry, weakref.WeakMethod) else entry
        if hook is None:
            continue
        alive.append(entry)
        hook()
    _hooks[:] = alive


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
