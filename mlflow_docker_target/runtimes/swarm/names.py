"""The Swarm names of deployments and endpoints: services, networks and configs.

Deployment names may hold ``_`` and ``.``, upper case, and run to 63 characters; a service
name, which is also a DNS name on the overlay (``tasks.<name>``), may not: names that must
change get a short hash of the original so that two deployments never map to one service, and
the original is kept in the service's labels (``record.DEPLOYMENT``, ``record.ENDPOINT``).
A server's stem starts with a letter or digit, so the ``--`` of fronts never meets one.
"""

from __future__ import annotations

import hashlib
import re

PREFIXES = {"server": "mlflow-", "canary": "mlflow--canary-", "front": "mlflow--front-",
            "endpoint": "mlflow--endpoint-"}
MAX_SERVICE_NAME = 63
_NOT_ALLOWED = re.compile(r"[^a-z0-9-]")


def service_name(name: str, kind: str = "server") -> str:
    """The service of a deployment's replicas (``server``), of its canary's (``canary``), of a
    deployment's own front (``front``) or of a shared endpoint's front (``endpoint``); also
    its network's name."""
    prefix = PREFIXES[kind]
    stem = _NOT_ALLOWED.sub("-", name.lower())
    room = MAX_SERVICE_NAME - len(prefix)
    if stem != name or len(stem) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        stem = f"{stem[:room - 9].rstrip('-')}-{digest}"
    return f"{prefix}{stem}"
