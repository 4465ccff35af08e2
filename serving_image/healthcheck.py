"""Docker HEALTHCHECK: healthy when the server answers ``GET /ping`` with 200."""

import os
import sys
import urllib.request

port = os.environ.get("SCORING_PORT") or "8080"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
