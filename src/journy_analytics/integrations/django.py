"""Django: one request scope per request, from the authenticated user.

settings.py::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "journy_analytics.integrations.django.JournyMiddleware",  # after authentication
    ]
    JOURNY_ANALYTICS = {
        "write_key": "YOUR_WRITE_KEY",        # any Analytics(...) setting
        "identify": "myapp.analytics.identify",  # optional: def identify(request) -> dict
    }

In a view, ``journy_analytics.track(event="Report Exported")`` then needs no ids: the
scope gives ``user_id`` (the authenticated user's primary key), ``anonymous_id`` (the
``__journey`` cookie journy.io's snippet sets, if any) and whatever ``identify`` returns
(``anonymous_id``, ``group_id``, ``properties``, ``context``); its keys win over the
default, and returning ``{"user_id": None}`` drops the user. A logged-out visitor with no
cookie and no id from ``identify`` gets a random ``anonymous_id`` for the request, so the
view's ``track`` never raises.

The client: ``JOURNY_ANALYTICS["analytics"]`` (an ``Analytics`` or a dotted path to one) if
given; else, if ``JOURNY_ANALYTICS`` holds client settings, one client per process built
from them and installed as the module-level client; else the module-level client as the
environment configures it. It is created when Django loads the middleware (in the gunicorn
master under ``--preload``, where it survives the fork), and flushed when the worker
process exits (SIGTERM, ``max_requests``), within ``exit_flush_timeout``. Under ASGI
(uvicorn), whose Django handler has no lifespan, the SDK's SIGTERM handler flushes.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from journy_analytics._message import activate, deactivate
from journy_analytics.client import Analytics
from journy_analytics.integrations._common import (
    JOURNY_COOKIE,
    client_from_settings,
    identify_result,
    import_string,
    missing_framework,
    someone,
    visitor_defaults,
)

try:
    from django.conf import settings as django_settings
except ModuleNotFoundError as exc:
    raise missing_framework(exc, "django", "django") from None

__all__ = ["JournyMiddleware", "user_scope"]


def user_scope(request: Any) -> Dict[str, Any]:
    """The default scope of a request: ``user_id`` of the authenticated user, if any."""
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return {"user_id": str(user.pk)}
    return {}


class JournyMiddleware:
    """Opens ``journy_analytics.scope(...)`` around each request (see the module doc)."""

    # Sync only on purpose: ``request.user`` and a sync ``identify`` may query the database,
    # which Django forbids on the event loop. Under ASGI Django runs this in a thread of its
    # own per request (asgiref's sync_to_async) and the rest of the request, async views
    # included, back on the loop in a copy of this thread's context (async_to_sync), so
    # they see the scope (tests/integrations/test_django_asgi.py).
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        config = dict(getattr(django_settings, "JOURNY_ANALYTICS", None) or {})
        self.analytics: Optional[Analytics] = client_from_settings(
            config, source="JOURNY_ANALYTICS"
        )
        identify = config.get("identify")
        self.identify: Optional[Callable[[Any], Any]] = (
            None if identify is None else import_string(identify, "JOURNY_ANALYTICS['identify']")
        )

    def __call__(self, request: Any) -> Any:
        defaults = visitor_defaults(user_scope(request), request.COOKIES.get(JOURNY_COOKIE))
        kwargs = someone(identify_result(self.identify, request, defaults))
        token = activate(**kwargs)
        try:
            return self.get_response(request)
        finally:
            deactivate(token)
