"""``VERSION``, as in ``segment.analytics.version``: this package's version."""

from journy_analytics._version import __version__

__all__ = ["VERSION"]

VERSION = __version__
