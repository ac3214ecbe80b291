"""segment-analytics-python 2.x's API on journy-analytics: change the import, nothing else.

    import journy_analytics.segment as analytics      # was: import segment.analytics as analytics
    analytics.write_key = "YOUR_JOURNY_WRITE_KEY"
    analytics.track("f4ca124298", "Signed Up", {"plan": "Pro"})
    analytics.shutdown()

rudder-sdk-python's module API is the same, and its ``dataPlaneUrl`` setting is read too.
The settings below are read when the default client is first created (as segment does);
set ``default_client = None`` to have it created anew. docs/migrating.md has every setting.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from journy_analytics.segment.client import Client, SegmentValidationError
from journy_analytics.segment.version import VERSION

__version__ = VERSION

__all__ = [
    "VERSION",
    "Client",
    "SegmentValidationError",
    "alias",
    "default_client",
    "deregister",
    "flush",
    "group",
    "identify",
    "join",
    "page",
    "register",
    "screen",
    "shutdown",
    "stats",
    "track",
]

# Settings (segment's names and defaults).
write_key: Optional[str] = Client.DefaultConfig.write_key
host: Optional[str] = Client.DefaultConfig.host
on_error: Any = Client.DefaultConfig.on_error
debug: bool = Client.DefaultConfig.debug
log_handler: Any = Client.DefaultConfig.log_handler
send: bool = Client.DefaultConfig.send
sync_mode: bool = Client.DefaultConfig.sync_mode
max_queue_size: int = Client.DefaultConfig.max_queue_size
gzip: bool = Client.DefaultConfig.gzip
timeout: float = Client.DefaultConfig.timeout
max_retries: int = Client.DefaultConfig.max_retries
upload_size: int = Client.DefaultConfig.upload_size
upload_interval: float = Client.DefaultConfig.upload_interval
proxies: Any = Client.DefaultConfig.proxies
thread: int = Client.DefaultConfig.thread
oauth_client_id: Optional[str] = Client.DefaultConfig.oauth_client_id
oauth_client_key: Optional[str] = Client.DefaultConfig.oauth_client_key
oauth_key_id: Optional[str] = Client.DefaultConfig.oauth_key_id
oauth_auth_server: str = Client.DefaultConfig.oauth_auth_server
oauth_scope: str = Client.DefaultConfig.oauth_scope
# rudder-sdk-python's name for host; wins over host when set.
dataPlaneUrl: Optional[str] = None

default_client: Optional[Client] = None


def track(*args: Any, **kwargs: Any) -> Any:
    """Send a track call."""
    return _proxy("track", *args, **kwargs)


def identify(*args: Any, **kwargs: Any) -> Any:
    """Send an identify call."""
    return _proxy("identify", *args, **kwargs)


def group(*args: Any, **kwargs: Any) -> Any:
    """Send a group call."""
    return _proxy("group", *args, **kwargs)


def alias(*args: Any, **kwargs: Any) -> Any:
    """Send an alias call."""
    return _proxy("alias", *args, **kwargs)


def page(*args: Any, **kwargs: Any) -> Any:
    """Send a page call."""
    return _proxy("page", *args, **kwargs)


def screen(*args: Any, **kwargs: Any) -> Any:
    """Send a screen call."""
    return _proxy("screen", *args, **kwargs)


def flush() -> None:
    """Block until everything queued is delivered or finally failed."""
    _proxy("flush")


def join() -> None:
    """Deliver what is queued and stop the default client."""
    _proxy("join")


def shutdown() -> None:
    """Flush all messages and stop the default client."""
    _proxy("flush")
    _proxy("join")


def register(*plugins: Any) -> None:
    """Register journy-analytics plugins on the default client (docs/plugins.md)."""
    _proxy("register", *plugins)


def deregister(name: str) -> Any:
    return _proxy("deregister", name)


def stats() -> Dict[str, Any]:
    """The default client's journy-analytics ``stats()``."""
    result: Dict[str, Any] = _proxy("stats")
    return result


def _proxy(method: str, *args: Any, **kwargs: Any) -> Any:
    """Create the default client if there is none, and call it."""
    global default_client
    if not default_client:
        default_client = Client(
            write_key,
            host=dataPlaneUrl or host,
            debug=debug,
            max_queue_size=max_queue_size,
            send=send,
            on_error=on_error,
            gzip=gzip,
            max_retries=max_retries,
            sync_mode=sync_mode,
            timeout=timeout,
            proxies=proxies,
            thread=thread,
            upload_size=upload_size,
            upload_interval=upload_interval,
            log_handler=log_handler,
            oauth_client_id=oauth_client_id,
            oauth_client_key=oauth_client_key,
            oauth_key_id=oauth_key_id,
            oauth_auth_server=oauth_auth_server,
            oauth_scope=oauth_scope,
        )
    return getattr(default_client, method)(*args, **kwargs)
