"""A Flask app with the journy extension. flask-login logs the user in from a header (a
stand-in for a real login); the journy scope takes the user from flask-login and the
account from the ``identify`` hook."""

import os

from flask import Flask, request
from flask_login import LoginManager, UserMixin

import journy_analytics
from journy_analytics.integrations.flask import JournyAnalytics

app = Flask(__name__)
app.config["JOURNY_ANALYTICS"] = {
    "write_key": "test-key",
    "host": os.environ["JOURNY_TEST_COLLECTOR"],
    "flush_interval": 60.0,  # the last events are still queued at SIGTERM
}


app.secret_key = "test-only"
login_manager = LoginManager(app)


class User(UserMixin):
    def __init__(self, user_id):
        self.id = user_id


@login_manager.request_loader
def load_user_from_request(req):
    name = req.headers.get("X-User-Id")
    return User(name) if name else None


def identify(req):
    return {"group_id": req.headers.get("X-Account"), "properties": {"path": req.path}}


journy = JournyAnalytics(identify=identify)
journy.init_app(app)


@app.route("/track")
def track():
    journy_analytics.track(event="Page Served", message_id=request.args["mid"])
    return f"{os.getpid()} {id(journy.analytics)}"


@app.route("/slow")
def slow():
    # Yields to other requests of the same worker (threads, greenlets) before tracking: a
    # scope leaking between concurrent requests would show up as a wrong userId.
    import time

    time.sleep(0.05)
    journy_analytics.track(event="Slow Served", message_id=request.args["mid"])
    return str(os.getpid())
