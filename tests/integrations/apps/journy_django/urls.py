import os

from django.http import HttpResponse
from django.urls import path

import journy_analytics


def track(request):
    # No ids here: the request scope has them.
    journy_analytics.track(event="Report Exported", message_id=request.GET["mid"])
    client = journy_analytics.default_client()
    return HttpResponse(f"{os.getpid()} {id(client)}")


def fail(request):
    journy_analytics.track(event="Before Failure", message_id=request.GET["mid"])
    raise RuntimeError("view failed on purpose")


urlpatterns = [path("track", track), path("fail", fail)]
