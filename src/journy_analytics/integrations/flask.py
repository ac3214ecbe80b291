"""Flask: one request scope per request.

::

    from journy_analytics.integrations.flask import JournyAnalytics

    app = Flask(__name__)
    app.config["JOURNY_ANALYTICS"] = {"write_key": "YOUR_WRITE_KEY"}  # any Analytics setting
    journy = JournyAnalytics(app, identify=lambda request: {"user_id": session.get("uid")})

or ``journy = JournyAnalytics(identify=...)`` then ``journy.init_app(app)`` in a factory.
The scope holds flask-login's ``current_user`` id when flask-login is installed and a user
is logged in, and the ``__journey`` cookie journy.io's snippet sets as ``anonymous_id``;
``identify(request)`` returns more of the scope's arguments (``user_id``,
``anonymous_id``, ``group_id``, ``properties``, ``context``) or None, and its keys win.
A logged-out visitor with no cookie and no id from ``identify`` gets a random
``anonymous_id`` for the request, so the view's ``track`` never raises.

The client: ``analytics=`` if given, else ``JOURNY_ANALYTICS["analytics"]``, else one client
per process built from ``JOURNY_ANALYTICS``'s settings (installed as the module-level
client), else the module-level client from the environment. Flask has no shutdown hook:
the client flushes when the process exits (atexit; SIGTERM under gunicorn), within
``exit_flush_timeout``.
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable, Dict, Optional

from journy_analytics._message import activate, deactivate
from journy_analytics.client import Analytics
from journy_analytics.integrations._common import (
    JOURNY_COOKIE,
    RateLimitedLog,
    client_from_settings,
    identify_result,
    import_string,
    missing_framework,
    resolve,
    someone,
    visitor_defaults,
)

try:
    import flask
except ModuleNotFoundError as exc:
    raise missing_framework(exc, "flask", "flask") from None

__all__ = ["JournyAnalytics"]

_G_TOKEN = "_journy_analytics_scope_token"
_unbalanced = RateLimitedLog(every=60.0)


def _flask_login_scope(request: Any) -> Dict[str, Any]:
    try:
        from flask_login import current_user
    except ImportError:
        return {}
    if getattr(current_user, "is_authenticated", False):
        return {"user_id": str(current_user.get_id())}
    return {}


class JournyAnalytics:
    """The Flask extension (see the module doc)."""

    def __init__(
        self,
        app: Optional[flask.Flask] = None,
        *,
        analytics: Optional[Analytics] = None,
        client: Optional[Analytics] = None,
        identify: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self._analytics = analytics if analytics is not None else client
        self._identify = identify
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        config = dict(app.config.get("JOURNY_ANALYTICS") or {})
        if self._analytics is None:
            self._analytics = client_from_settings(config, source="JOURNY_ANALYTICS")
        if self._identify is None and config.get("identify") is not None:
            self._identify = import_string(config["identify"], "JOURNY_ANALYTICS['identify']")
        app.before_request(self._open_scope)
        app.teardown_request(self._close_scope)
        app.extensions["journy_analytics"] = self

    @property
    def analytics(self) -> Analytics:
        """The client this extension's app uses."""
        return resolve(self._analytics)

    def _open_scope(self) -> None:
        request = flask.request
        defaults = visitor_defaults(_flask_login_scope(request), request.cookies.get(JOURNY_COOKIE))
        kwargs = someone(identify_result(self._identify, request, defaults))
        setattr(flask.g, _G_TOKEN, activate(**kwargs))

    def _close_scope(self, exc: Optional[BaseException] = None) -> None:
        token: Optional[contextvars.Token[Any]] = flask.g.pop(_G_TOKEN, None)
        if token is None:
            return  # an earlier before_request answered: ours never ran
        try:
            deactivate(token)
        except ValueError:
            # Opened in another context (a server that runs the hooks of one request in
            # different contexts): that context's scope ends with it; nothing leaks here.
            _unbalanced.warning(
                "journy_analytics: a Flask request's scope was closed in another context "
                "than it was opened in"
            )
