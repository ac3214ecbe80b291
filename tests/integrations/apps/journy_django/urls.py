import asyncio
import os
from collections import Counter

from django.http import HttpResponse
from django.urls import path

import journy_analytics
from journy_django.views import export


def track(request):
    # No ids here: the request scope has them.
    journy_analytics.track(event="Report Exported", message_id=request.GET["mid"])
    client = journy_analytics.default_client()
    return HttpResponse(f"{os.getpid()} {id(client)}")


def fail(request):
    journy_analytics.track(event="Before Failure", message_id=request.GET["mid"])
    raise RuntimeError("view failed on purpose")


_arrived: Counter = Counter()


async def track_async(request):
    """Tracks, then waits on the loop until ``n`` requests of its ``group`` are inside this
    view at once (so their scopes are all open together), then tracks again."""
    mid, group, n = request.GET["mid"], request.GET["group"], int(request.GET["n"])
    journy_analytics.track(event="Async Started", message_id=f"{mid}-a")
    _arrived[group] += 1
    for _ in range(500):  # at most 5 s
        if _arrived[group] >= n:
            break
        await asyncio.sleep(0.01)
    together = _arrived[group] >= n
    journy_analytics.track(event="Async Finished", message_id=f"{mid}-b")
    return HttpResponse("together" if together else "alone")


async def fail_async(request):
    journy_analytics.track(event="Before Async Failure", message_id=request.GET["mid"])
    await asyncio.sleep(0)
    raise RuntimeError("async view failed on purpose")


urlpatterns = [
    path("export", export),  # the README's recipe view
    path("track", track),
    path("fail", fail),
    path("track-async", track_async),
    path("fail-async", fail_async),
]
