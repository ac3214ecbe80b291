from django.contrib.auth.middleware import PersistentRemoteUserMiddleware

# The README's login signal (an app's AppConfig.ready() would import it): loaded with the
# middleware, before the first login.
from journy_django import signals  # noqa: F401


class HeaderRemoteUserMiddleware(PersistentRemoteUserMiddleware):
    """Logs in the (existing) user named by the X-Remote-User header: a stand-in for a
    front-end proxy's authentication, through Django's real auth machinery."""

    header = "HTTP_X_REMOTE_USER"


def identify(request):
    """The hook of JOURNY_ANALYTICS: the visitor's anonymous id and account, if any."""
    extra = {}
    if "X-Anonymous-Id" in request.headers:
        extra["anonymous_id"] = request.headers["X-Anonymous-Id"]
    if "X-Account" in request.headers:
        extra["group_id"] = request.headers["X-Account"]
    return extra
