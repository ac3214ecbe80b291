from flask import Flask

import journy_analytics
from journy_analytics.integrations.flask import JournyAnalytics

app = Flask(__name__)
app.config["JOURNY_ANALYTICS"] = {"write_key": "YOUR_WRITE_KEY"}
JournyAnalytics(app, identify=lambda request: {"group_id": request.headers.get("X-Account")})
# or, in an app factory: journy = JournyAnalytics(identify=...); journy.init_app(app)


@app.route("/export")
def export():
    journy_analytics.track(event="Report Exported")  # no ids: the request's scope has them
    return "exported"
