"""journy-analytics: the Python server-side SDK for journy.io.

    from journy_analytics import Analytics
    analytics = Analytics(write_key="YOUR_WRITE_KEY")
    analytics.track(user_id="f4ca124298", event="Car Sold", properties={"revenue": 39999.99})
    analytics.close_and_flush()

Or the module-level default client, configured from ``JOURNY_WRITE_KEY``::

    import journy_analytics as analytics
    analytics.track(user_id="f4ca124298", event="Signed Up")
"""

from journy_analytics._api import AsyncJournyAPI, JournyAPI, JournyAPIError, KeyInfo
from journy_analytics._core import HttpClient, Response, RetryPolicy
from journy_analytics._default import (
    aclose,
    aflush,
    alias,
    close_and_flush,
    default_client,
    deregister,
    flush,
    group,
    identify,
    off,
    on,
    once,
    page,
    register,
    screen,
    stats,
    track,
)
from journy_analytics._exceptions import (
    DeliveryError,
    NameResolutionError,
    ProxyConnectError,
    ProxyTunnelError,
    RequestTimeoutError,
    SpoolLockedError,
    ValidationError,
)
from journy_analytics._message import scope
from journy_analytics._types import Cause
from journy_analytics._version import __version__
from journy_analytics.client import Analytics

# Settings of the module-level default client; None means "from the environment".
write_key = None
host = None
path = None

__all__ = [
    "Analytics",
    "AsyncJournyAPI",
    "Cause",
    "DeliveryError",
    "HttpClient",
    "JournyAPI",
    "JournyAPIError",
    "KeyInfo",
    "NameResolutionError",
    "ProxyConnectError",
    "ProxyTunnelError",
    "RequestTimeoutError",
    "Response",
    "RetryPolicy",
    "SpoolLockedError",
    "ValidationError",
    "__version__",
    "aclose",
    "aflush",
    "alias",
    "close_and_flush",
    "default_client",
    "deregister",
    "flush",
    "group",
    "host",
    "identify",
    "off",
    "on",
    "once",
    "page",
    "path",
    "register",
    "scope",
    "screen",
    "stats",
    "track",
    "write_key",
]
