"""What the controller has decided about each deployment it watches, kept on its volume.

The controller's memory must outlive it (an engine restart, a newer plugin replacing it), and
container labels cannot change once made, so it keeps one small JSON file on its own volume:
per deployment, the alias's version it last saw, a version that failed (not tried again until
the alias moves), and its last decision with the reason; and under ``canary``, what it counted
of a canary and its verdict (``canary_watch``). ``get`` reads the same file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

DIR = "/var/lib/mlflow-dockerhost-controller"  # the controller's volume, inside it
FILE = "ledger.json"


def load(directory: str = DIR) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((Path(directory) / FILE).read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def save(entries: dict[str, dict[str, Any]], directory: str = DIR) -> None:
    """Written whole and renamed into place: a controller killed mid-write leaves the old."""
    path = Path(directory) / FILE
    written = path.with_name(f".{FILE}.{os.getpid()}")
    written.write_text(json.dumps(entries, indent=1, sort_keys=True))
    written.replace(path)


def decide(entries: dict[str, dict[str, Any]], deployment: str, decision: str,
           **facts: Any) -> None:
    """Record ``decision`` (one line, said in the log too) and ``facts`` for ``deployment``."""
    entry = entries.setdefault(deployment, {})
    entry.update(facts, decision=decision, decided_at=timestamp())


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
