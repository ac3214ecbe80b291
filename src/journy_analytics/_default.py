"""The module-level default client, for the segment-python habit::

    import journy_analytics as analytics
    analytics.write_key = "..."          # or JOURNY_WRITE_KEY in the environment
    analytics.track(user_id="u1", event="Signed Up")

The client is created on first use from the module's settings (``write_key``, ``host``,
``path``, ``disable``) and, where those are None, from the environment: JOURNY_WRITE_KEY,
JOURNY_HOST, JOURNY_PATH, JOURNY_DISABLE, JOURNY_GZIP, JOURNY_MAX_RETRIES,
JOURNY_MAX_EVENTS_IN_BATCH, JOURNY_FLUSH_INTERVAL, JOURNY_MAX_QUEUE_SIZE.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, NoReturn, Optional, Union

from journy_analytics._types import FLUSH_TIMEOUT, FlushTimeoutDefault

if TYPE_CHECKING:
    from journy_analytics.client import Analytics

__all__ = [
    "aclose",
    "aflush",
    "alias",
    "close_and_flush",
    "default_client",
    "deregister",
    "environment_settings",
    "flush",
    "group",
    "identify",
    "off",
    "on",
    "once",
    "page",
    "register",
    "screen",
    "set_default_client",
    "stats",
    "track",
]

_lock = threading.Lock()
_client: Optional[Analytics] = None

_TRUE = {"1", "true", "yes", "on"}
_ENV_SETTINGS: Dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("JOURNY_HOST", str),
    "path": ("JOURNY_PATH", str),
    "disable": ("JOURNY_DISABLE", lambda v: v.strip().lower() in _TRUE),
    "gzip": ("JOURNY_GZIP", lambda v: v.strip().lower() in _TRUE),
    "max_retries": ("JOURNY_MAX_RETRIES", int),
    "max_events_in_batch": ("JOURNY_MAX_EVENTS_IN_BATCH", int),
    "flush_interval": ("JOURNY_FLUSH_INTERVAL", float),
    "max_queue_size": ("JOURNY_MAX_QUEUE_SIZE", int),
}


def environment_settings(**given: Any) -> Dict[str, Any]:
    """``given`` client settings, each None taken from its environment variable
    (``host`` from JOURNY_HOST, ...) when that is set; those still None are left out, so
    the caller's default applies. ``Analytics(...)`` and the module-level client both
    read the environment through here: a value given in code always wins."""
    settings: Dict[str, Any] = {}
    for name, value in given.items():
        env, convert = _ENV_SETTINGS[name]
        if value is None and env in os.environ:
            try:
                value = convert(os.environ[env])
            except ValueError:
                raise ValueError(f"{env}={os.environ[env]!r} is not a valid {name}") from None
        if value is not None:
            settings[name] = value
    return settings


def _settings() -> Dict[str, Any]:
    module = sys.modules["journy_analytics"]
    key = getattr(module, "write_key", None) or os.environ.get("JOURNY_WRITE_KEY")
    if not key:
        raise ValueError(
            "the default client has no write key: set journy_analytics.write_key = '...' "
            "or the JOURNY_WRITE_KEY environment variable, or create an Analytics(...) yourself"
        )
    # What the module sets; Analytics(...) fills the rest from the environment.
    settings = {name: getattr(module, name, None) for name in _ENV_SETTINGS}
    return {"write_key": key, **{k: v for k, v in settings.items() if v is not None}}


def default_client() -> Analytics:
    """The module-level client, created on first use."""
    global _client
    client = _client
    if client is None or client.closed:
        from journy_analytics.client import Analytics

        with _lock:
            if _client is None or _client.closed:
                _client = Analytics(**_settings())
            client = _client
    return client


def set_default_client(client: Optional[Analytics]) -> Optional[Analytics]:
    """Install ``client`` as the module-level client (None: build anew on next use).
    Returns the previous one. Used by ``journy_analytics.testing``."""
    global _client
    with _lock:
        previous, _client = _client, client
    return previous


def identify(*positional: NoReturn, **kwargs: Any) -> None:
    default_client().identify(*positional, **kwargs)


def group(*positional: NoReturn, **kwargs: Any) -> None:
    default_client().group(*positional, **kwargs)


def track(*positional: NoReturn, **kwargs: Any) -> None:
    default_client().track(*positional, **kwargs)


def page(*positional: NoReturn, **kwargs: Any) -> None:
    default_client().page(*positional, **kwargs)


def screen(*positional: NoReturn, **kwargs: Any) -> None:
    default_client().screen(*positional, **kwargs)


def alias(*positional: NoReturn, **kwargs: Any) -> None:
    default_client().alias(*positional, **kwargs)


def flush(timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT) -> bool:
    return _client.flush(timeout) if _client is not None else True


def close_and_flush(timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT) -> bool:
    return _client.close_and_flush(timeout) if _client is not None else True


async def aflush(timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT) -> bool:
    return await _client.aflush(timeout) if _client is not None else True


async def aclose(timeout: Union[float, FlushTimeoutDefault, None] = FLUSH_TIMEOUT) -> bool:
    return await _client.aclose(timeout) if _client is not None else True


def on(name: str, handler: Callable[..., Any]) -> None:
    default_client().on(name, handler)


def off(name: str, handler: Callable[..., Any]) -> None:
    default_client().off(name, handler)


def once(name: str, handler: Callable[..., Any]) -> None:
    default_client().once(name, handler)


def stats() -> Dict[str, Any]:
    return default_client().stats()


def register(*plugins: Any) -> None:
    """Register plugins on the module-level client (docs/plugins.md)."""
    default_client().register(*plugins)


def deregister(name: str) -> Any:
    return default_client().deregister(name)
