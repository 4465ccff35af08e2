"""Steady load on an endpoint from a few clients with keep-alive connections, as real clients
send it; counts every answer, and which deployment and model version gave it. Bounded by
``stop()`` and by ``max_seconds``: it never runs on by itself."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import requests

from serving_image.contract import DEPLOYMENT_HEADER, MODEL_VERSION_HEADER


class SteadyLoad:
    def __init__(self, url: str, body: dict[str, Any], clients: int = 4,
                 headers: dict[str, str] | None = None, max_seconds: float = 600,
                 verify: str | bool = True) -> None:
        self.url = f"{url}/invocations"
        self.verify = verify  # an HTTPS endpoint's CA file
        self.body = body
        self.headers = headers or {}
        self.clients = clients
        self.max_seconds = max_seconds
        self.statuses: collections.Counter[int] = collections.Counter()
        self.served_by: collections.Counter[str] = collections.Counter()
        self.versions: collections.Counter[str] = collections.Counter()  # of 200 answers
        self.failures: list[str] = []  # what went wrong: answers other than 200, and errors
        self.unanswered = 0  # requests with no answer at all (refused, reset, timed out)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.unanswered

    @property
    def lost(self) -> int:
        """Requests without a 200 answer: errors, refused or dropped connections."""
        return self.sent - self.statuses[200]

    def _client(self) -> None:
        session = requests.Session()
        session.trust_env = False
        session.verify = self.verify
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                answer = session.post(self.url, json=self.body, headers=self.headers, timeout=30)
                with self._lock:
                    self.statuses[answer.status_code] += 1
                    self.served_by[answer.headers.get(DEPLOYMENT_HEADER, "")] += 1
                    if answer.status_code == 200:
                        self.versions[answer.headers.get(MODEL_VERSION_HEADER, "")] += 1
                    if answer.status_code != 200:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
            except requests.RequestException as exc:
                with self._lock:
                    self.unanswered += 1
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> SteadyLoad:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, answers: int, timeout: float = 60) -> None:
        """Until at least ``answers`` requests were answered (the load is really flowing)."""
        deadline = time.monotonic() + timeout
        while self.sent < answers and time.monotonic() < deadline:
            time.sleep(0.05)

    def summary(self) -> str:
        return (f"{self.sent} sent, {self.lost} lost, statuses {dict(self.statuses)}, "
                f"first failures {self.failures[:3]}")
