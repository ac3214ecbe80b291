"""Pieces every integration shares: which client, building it from a settings dict, flushing."""

from __future__ import annotations

import importlib
import threading
import uuid
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from journy_analytics import _default
from journy_analytics._logging import RateLimitedLog
from journy_analytics.client import Analytics

__all__ = [
    "JOURNY_COOKIE",
    "RateLimitedLog",
    "client_from_settings",
    "cookie_in_header",
    "flush",
    "import_string",
    "missing_framework",
    "resolve",
    "someone",
    "visitor_defaults",
]


_settings_lock = threading.Lock()
_from_settings: Dict[Tuple[Tuple[str, Any], ...], Analytics] = {}


def missing_framework(exc: ModuleNotFoundError, integration: str, extra: str) -> ImportError:
    """The error an integration raises when its framework is not installed, saying how to
    install it (``exc`` itself, re-raised, when the missing module is another one: a broken
    install of the framework must not read as a missing framework)."""
    missing = (exc.name or "").partition(".")[0]
    if missing != extra:
        raise exc
    return ImportError(
        f"journy_analytics.integrations.{integration} needs {extra}, which is not installed: "
        f"pip install 'journy-analytics[{extra}]'"
    )


def resolve(analytics: Optional[Analytics]) -> Analytics:
    """The client an integration uses: the one it was given, else the module-level one."""
    return analytics if analytics is not None else _default.default_client()


def flush(analytics: Optional[Analytics], timeout: Optional[float]) -> bool:
    """Flush the given client, else the module-level one if it was ever created (a process
    that tracked nothing has nothing to flush and needs no write key)."""
    if analytics is not None:
        return analytics.flush(timeout)
    return _default.flush(timeout)


def import_string(value: Any, setting: str) -> Any:
    """A callable or object given directly, or as a dotted path ``"package.module.name"``."""
    if not isinstance(value, str):
        return value
    module_name, _, attr = value.rpartition(".")
    if not module_name:
        raise ValueError(f"{setting}={value!r} must be a dotted path like 'myapp.analytics.who'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{setting}={value!r} cannot be imported: {exc}") from exc


def client_from_settings(settings: Mapping[str, Any], *, source: str) -> Optional[Analytics]:
    """The client a framework's settings dict describes.

    ``analytics`` / ``client`` (an ``Analytics`` or a dotted path to one) is used as it is.
    Otherwise, when the dict holds ``Analytics`` settings (``write_key``, ``host``, ...), one
    client is built per process for those settings and installed as the module-level client,
    so that the app's own ``journy_analytics.track(...)`` calls share it. With neither, None:
    the module-level client, configured from the environment (``JOURNY_WRITE_KEY``, ...).

    A client built before a fork (gunicorn ``--preload``) keeps working in each child: the
    SDK gives a forked child its own worker thread and connections.
    """
    given = settings.get("analytics", settings.get("client"))
    if given is not None:
        client = import_string(given, f"{source}['analytics']")
        if not isinstance(client, Analytics):
            raise ValueError(
                f"{source}['analytics'] must be a journy_analytics.Analytics, "
                f"not {type(client).__name__}"
            )
        return client
    options = {k: v for k, v in settings.items() if k not in _INTEGRATION_KEYS}
    if not options:
        return None
    key = tuple(sorted((k, _hashable(v)) for k, v in options.items()))
    with _settings_lock:
        client = _from_settings.get(key)
        if client is None or client.closed:
            try:
                client = Analytics(**options)
            except TypeError as exc:
                raise ValueError(f"{source}: {exc} (see the README's configuration table)") from exc
            _from_settings[key] = client
            _default.set_default_client(client)
    return client


# Keys of a settings dict that configure the integration, not the client.
_INTEGRATION_KEYS = frozenset({"analytics", "client", "identify"})


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def identify_result(
    identify: Optional[Callable[..., Any]], arg: Any, defaults: Dict[str, Any]
) -> Dict[str, Any]:
    """``defaults`` updated with what the user's ``identify(arg)`` returned (a dict or None)."""
    if identify is None:
        return defaults
    extra = identify(arg)
    if extra is None:
        return defaults
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"identify() must return a dict of scope arguments (user_id, anonymous_id, "
            f"group_id, properties, context) or None, not {type(extra).__name__}"
        )
    return {**defaults, **extra}


# The cookie journy.io's JavaScript snippet sets on your site: the visitor's device id,
# the id journy.io's web tracking knows the visitor by (its REST API's "link" takes it).
JOURNY_COOKIE = "__journey"
# A longer value is not a device id the snippet set; it could push events over 32 KB.
_MAX_DEVICE_ID = 200


def _device_id(value: Optional[str]) -> Optional[str]:
    """The ``__journey`` cookie's value as an anonymous id; None when it is absent or not
    a plausible id (empty, too long, control characters): a cookie is the visitor's input,
    and a bad one must not break the page."""
    if not value:
        return None
    value = value.strip().strip('"')
    if not value or len(value) > _MAX_DEVICE_ID or not value.isprintable():
        return None
    return value


def cookie_in_header(header: Optional[str], name: str = JOURNY_COOKIE) -> Optional[str]:
    """The value of cookie ``name`` in a ``Cookie:`` request header (None if absent)."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return None


def visitor_defaults(user: Dict[str, Any], journy_cookie: Optional[str]) -> Dict[str, Any]:
    """An integration's default scope: the logged-in user (``user``), plus the visitor's
    ``__journey`` cookie as ``anonymous_id`` when journy.io's snippet set one."""
    device = _device_id(journy_cookie)
    return {**user, "anonymous_id": device} if device is not None else user


def someone(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` naming someone: with neither a user nor an anonymous id (a logged-out
    visitor without the ``__journey`` cookie, and ``identify`` gave none), a fresh random
    ``anonymous_id`` for this request, so that ``track(event=...)`` in the view cannot
    raise: an analytics call must never break a page."""
    if kwargs.get("user_id") is None and kwargs.get("anonymous_id") is None:
        return {**kwargs, "anonymous_id": str(uuid.uuid4())}
    return kwargs
