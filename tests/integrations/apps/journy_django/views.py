# myapp/views.py: no ids, the request's scope has them
from django.http import HttpResponse

import journy_analytics


def export(request):
    journy_analytics.track(event="Report Exported")
    return HttpResponse("exported")
