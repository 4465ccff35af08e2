"""The HTTP sink: KServe's inference logger events, so that its consumers work as they are.

Each prediction is two CloudEvents 1.0 in binary mode (the body is the payload itself, the
attributes are ``ce-`` headers), as KServe's logger sends them: type
``org.kubeflow.serving.inference.request`` with the request body, then, for a 200 answer only
(as KServe does), ``org.kubeflow.serving.inference.response`` with the answer's. ``ce-id`` is the
request id, ``ce-inferenceservicename`` the deployment, ``ce-endpoint`` the shared endpoint (else
the deployment), ``ce-component`` ``predictor`` and ``ce-metadata`` the recorded headers as JSON
(name: [values]). Our own extensions carry the rest of the record: model URI and version,
replica, route, protocol, status, latency, and whether the body was cut.

One keep-alive connection per worker, with the standard library's client (nothing added to
the image); ``https://`` verifies against the image's CA bundle.
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

from serving_image.contract import PAYLOAD_SINK_UNREACHABLE
from serving_image.payload_log.records import Exchange, Source, timestamp

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
TIMEOUT = 5.0  # seconds for a connection and for each event's answer


class SinkRefused(Exception):
    """The receiver answered, but not with 2xx."""


class HttpSink:
    def __init__(self, url: str, token: str | None, source: Source) -> None:
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.token = token
        self.source = source
        self.connection: http.client.HTTPConnection | None = None

    def check(self) -> str | None:
        try:
            self._connection().connect()
        except OSError as exc:
            self.close()
            return (f"{PAYLOAD_SINK_UNREACHABLE}: {self.url} ({exc}); records are dropped "
                    "until it answers.")
        return None

    def write(self, exchanges: list[Exchange]) -> None:
        for exchange in exchanges:
            self._post(exchange, REQUEST_TYPE, exchange.request_body)
            if exchange.status == 200:
                self._post(exchange, RESPONSE_TYPE, exchange.response_body)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.connection is None:
            if self.https:
                self.connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=TIMEOUT,
                    context=ssl.create_default_context())
            else:
                self.connection = http.client.HTTPConnection(self.host, self.port,
                                                             timeout=TIMEOUT)
        return self.connection

    def _post(self, exchange: Exchange, kind: str, body: bytes) -> None:
        headers = self._headers(exchange, kind, body)
        try:
            connection = self._connection()
            connection.request("POST", self.path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException):
            self.close()  # a new connection next time
            raise
        if not 200 <= answer.status < 300:
            raise SinkRefused(f"{self.url} answered {answer.status} {answer.reason}")

    def _headers(self, exchange: Exchange, kind: str, body: bytes) -> dict[str, str]:
        source = self.source
        response = kind == RESPONSE_TYPE
        cut = (exchange.response_size if response else exchange.request_size) > len(body)
        headers = {
            "ce-specversion": "1.0",
            "ce-id": exchange.id,
            "ce-type": kind,
            "ce-source": f"/mlflow-dockerhost/{source.deployment}/{source.replica}",
            "ce-time": timestamp(exchange.started + (exchange.latency if response else 0)),
            "ce-inferenceservicename": source.deployment,
            "ce-namespace": "default",
            "ce-component": "predictor",
            "ce-endpoint": source.endpoint or source.deployment,
            "ce-metadata": json.dumps({name: [value] for name, value
                                       in exchange.request_headers.items()}),
            "ce-modeluri": source.model_uri or "",
            "ce-modelversion": source.model_version or "",
            "ce-replica": source.replica,
            "ce-route": exchange.route,
            "ce-protocol": exchange.protocol,
            "ce-status": str(exchange.status),
            "ce-latencyms": f"{exchange.latency * 1000:.3f}",
            "ce-truncated": "true" if cut else "false",
            "content-type": (exchange.response_type if response else exchange.request_type)
            or "application/octet-stream",
        }
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers
