"""Run under gevent or eventlet monkey-patching (argv[1]); print one JSON line of results.

argv: green library, fast collector URL, slow collector URL (answers after 800 ms).
"""

import sys

LIBRARY = sys.argv[1]
if LIBRARY == "gevent":
    from gevent import monkey

    monkey.patch_all()
    import gevent

    def spawn_all(fn, count):
        gevent.joinall([gevent.spawn(fn, n) for n in range(count)], timeout=30)

elif LIBRARY == "eventlet":
    import eventlet

    eventlet.monkey_patch()

    def spawn_all(fn, count):
        pool = eventlet.GreenPool()
        for n in range(count):
            pool.spawn(fn, n)
        pool.waitall()

else:
    raise SystemExit(f"unknown green library {LIBRARY}")

import json  # noqa: E402
import time  # noqa: E402

import journy_analytics  # noqa: E402
from journy_analytics import Analytics  # noqa: E402

fast_url, slow_url = sys.argv[2], sys.argv[3]
results = {}

client = Analytics(write_key="k", host=fast_url, flush_interval=60)


def request(n):
    with journy_analytics.scope(user_id=f"green-{n}"):
        for i in range(10):
            time.sleep(0.001)  # a cooperative yield under monkey-patching
            client.track(event="Green Call", message_id=f"{LIBRARY}-{n}-{i}")


spawn_all(request, 20)
started = time.monotonic()
results["flush_ok"] = client.flush(timeout=20)
results["flush_s"] = time.monotonic() - started
results["delivered"] = client.stats()["delivered"]

slow = Analytics(write_key="k", host=slow_url, flush_interval=60)
slow.track(user_id="u", event="Slow")
started = time.monotonic()
results["slow_flush_ok"] = slow.flush(timeout=0.3)
results["slow_flush_s"] = time.monotonic() - started
started = time.monotonic()
results["slow_close_ok"] = slow.close_and_flush(timeout=5)
results["slow_close_s"] = time.monotonic() - started
started = time.monotonic()
results["close_ok"] = client.close_and_flush(timeout=10)
results["close_s"] = time.monotonic() - started
print("GREEN " + json.dumps(results), flush=True)
