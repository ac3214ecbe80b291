"""A stand-in for the Lambda runtime: calls a @flush_after handler like the runtime does
(event, context with get_remaining_time_in_millis), then freezes/kills the process the
instant the handler returns (os._exit: no atexit, no thread gets another chance).

argv: scenario, then the invocations' budget in ms. Prints one JSON line per invocation.
"""

import json
import os
import sys
import time

import journy_analytics
from journy_analytics.integrations.aws_lambda import flush_after

scenario, budget_ms = sys.argv[1], int(sys.argv[2])
# The module-level client, configured from the environment as on Lambda.
journy_analytics.write_key = "test-key"
journy_analytics.host = os.environ["JOURNY_TEST_COLLECTOR"]


class Context:
    """What the Lambda runtime passes as ``context`` (the part flush_after uses)."""

    def __init__(self, budget_ms):
        self.deadline = time.monotonic() + budget_ms / 1000.0
        self.aws_request_id = "req-1"

    def get_remaining_time_in_millis(self):
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@flush_after
def handler(event, context):
    for i in range(event["count"]):
        journy_analytics.track(
            user_id=event["user"], event="Invoice Paid", message_id=f"{event['id']}-{i}"
        )
    if event.get("fail"):
        raise ValueError("handler failed")
    return {"statusCode": 200}


invocations = {
    "warm": [{"id": "cold", "user": "u1", "count": 3}, {"id": "warm", "user": "u2", "count": 4}],
    "raises": [{"id": "raised", "user": "u3", "count": 2, "fail": True}],
    "deadline": [{"id": "late", "user": "u4", "count": 1}],
}[scenario]

for event in invocations:
    context = Context(budget_ms)
    started = time.monotonic()
    try:
        outcome = handler(event, context)
    except ValueError as exc:
        outcome = {"raised": str(exc)}
    print(
        json.dumps(
            {
                "id": event["id"],
                "outcome": outcome,
                "returned_after_s": time.monotonic() - started,
                "remaining_ms_at_return": context.get_remaining_time_in_millis(),
                "client": id(journy_analytics.default_client()),
                "client_closed": journy_analytics.default_client().closed,
            }
        ),
        flush=True,
    )
# The runtime freezes the sandbox now, and may kill it without warning.
os._exit(0)
