"""Docker HEALTHCHECK: healthy when the server answers ``GET /ping`` with 200.

``--behind-front`` asks more: that a front's health check has also found the server ready, so
the front sends it traffic. The plugin runs it inside a new replica during a rollout.
"""

import os
import sys
import urllib.request

port = os.environ.get("SCORING_PORT") or "8080"
request = urllib.request.Request(f"http://127.0.0.1:{port}/ping")
if "--behind-front" in sys.argv[1:]:
    request.add_header("x-mlflow-probe", "behind-front")
try:
    with urllib.request.urlopen(request, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
