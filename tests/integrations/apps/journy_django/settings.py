"""A minimal Django project: real auth (users in SQLite), a remote-user login from a header,
and the journy middleware configured the way the README tells users to."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "journy_django.urls"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes"]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["JOURNY_TEST_DB"]}
}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.RemoteUserBackend"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "journy_django.auth.HeaderRemoteUserMiddleware",
    "journy_analytics.integrations.django.JournyMiddleware",
]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

JOURNY_ANALYTICS = {
    "write_key": "test-key",
    "host": os.environ["JOURNY_TEST_COLLECTOR"],
    # Long on purpose: the last requests' events are still queued when SIGTERM arrives,
    # so the test sees whether shutdown delivers them.
    "flush_interval": 60.0,
    "identify": "journy_django.auth.identify",
}
