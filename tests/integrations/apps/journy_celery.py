"""A Celery app on the filesystem broker (no server), instrumented for journy.

The client is created at import, in the worker's main process, before the prefork pool
forks its children; exit_flush_timeout=0, so whatever arrives after SIGTERM was delivered by
the integration's worker_process_shutdown flush, not atexit.
"""

import os

from celery import Celery

import journy_analytics
from journy_analytics import Analytics
from journy_analytics.integrations.celery import instrument

folder = os.environ["JOURNY_TEST_CELERY_DIR"]
app = Celery("journy_celery")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": os.path.join(folder, "queue"),
        "data_folder_out": os.path.join(folder, "queue"),
        "processed_folder": os.path.join(folder, "processed"),
        # The exchange tables: by default ./control of whichever process declares them
        # (the test in the checkout, the worker in apps/), which left them in the tree.
        "control_folder": os.path.join(folder, "control"),
        "polling_interval": 0.05,
    },
    result_backend="file://" + os.path.join(folder, "results"),
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
)

analytics = Analytics(
    write_key="test-key",
    host=os.environ["JOURNY_TEST_COLLECTOR"],
    flush_interval=60.0,
    exit_flush_timeout=0.0,
)
instrument(app, analytics=analytics)


@app.task
def export(mid):
    # No ids: the scope that was active where the task was sent.
    analytics.track(event="Export Finished", message_id=mid)
    return os.getpid()


@app.task
def scope_seen():
    from journy_analytics._message._scope import active_scope

    current = active_scope()
    return None if current is None else current.to_dict()


@app.task
def explicit(mid):
    with journy_analytics.scope(group_id="inner-account"):
        analytics.track(event="Nested In Task", message_id=mid)
    return os.getpid()
