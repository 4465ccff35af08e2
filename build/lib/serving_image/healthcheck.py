"""Docker HEALTHCHECK: healthy when the server answers ``GET /ping`` with 200.

``--behind-front`` asks more: that a front's health check has also found the server ready, so
the front sends it traffic (``contract``). The plugin runs it inside a new replica during a
rollout.
"""

import os
import sys
import urllib.request

from serving_image import contract

port = os.environ.get(f"{contract.ENV_PREFIX}PORT") or str(contract.SERVER_PORT)
request = urllib.request.Request(f"http://127.0.0.1:{port}{contract.PING_PATH}")
if "--behind-front" in sys.argv[1:]:
    request.add_header(contract.PROBE_HEADER, contract.BEHIND_FRONT)
try:
    with urllib.request.urlopen(request, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
