"""Framework integrations. Each module imports its framework only when it is imported
itself, so ``import journy_analytics`` never pulls in Django, Flask, Celery, ...

- ``journy_analytics.integrations.django``: ``JournyMiddleware``
- ``journy_analytics.integrations.flask``: ``JournyAnalytics(app)`` / ``init_app(app)``
- ``journy_analytics.integrations.asgi``: ``JournyMiddleware(app, identify=...)``
  (Starlette, FastAPI, any ASGI 3 app)
- ``journy_analytics.integrations.celery``: ``instrument(celery_app)``
- ``journy_analytics.integrations.aws_lambda``: ``@flush_after``

Each uses the module-level client (``journy_analytics.default_client()``) unless given one.
The lifecycle each relies on is described in docs/frameworks.md.
"""

__all__: list[str] = []
