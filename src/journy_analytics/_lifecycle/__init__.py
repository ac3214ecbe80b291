"""The process lifecycle: what happens to the SDK's threads at fork, exit and SIGTERM.

- ``fork``: the process id the call path checks, and the hooks that reset every worker
  (and the plugin chain, the message ids) in a child process.
- ``shutdown``: the registry of open workers; the exit flush (atexit, SIGTERM,
  multiprocessing children).
- ``signal_free``: every thread the SDK starts runs through it, so the application's
  signals land on its main thread.

This front is all the rest of the package uses; the modules behind it are private to it.
"""

from __future__ import annotations

from journy_analytics._lifecycle import _fork as fork
from journy_analytics._lifecycle import _shutdown as shutdown
from journy_analytics._lifecycle._threads import signal_free, user_code

__all__ = ["fork", "shutdown", "signal_free", "user_code"]
