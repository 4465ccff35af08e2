"""A client connected to the engine an address names.

The connection is made once per command and checked at once (docker-py asks the engine for its
version), so a down engine, a wrong CA, a refused ssh login or an unknown host key fails here,
within the config ``timeout``, with a message that names the host and the file or setting to fix
(``errors``).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.address import Address, resolve
from mlflow_docker_target.engine.errors import connection_error

log = logging.getLogger(__name__)


class _APIClient(docker.APIClient):
    """docker-py's API client, with the engine's CA kept when ``REQUESTS_CA_BUNDLE`` is set.

    requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` replace a session's CA bundle
    (psf/requests#3829, docker/docker-py#2433), so a private CA given for the engine would be
    ignored and every TLS connection would fail verification.
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            merged["verify"] = self.verify
        return merged


class _DockerClient(docker.DockerClient):
    """The high-level client around an API client made here."""

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api


@dataclass(frozen=True)
class Engine:
    """A connected engine and what the plugin needs to know about where it runs."""

    client: docker.DockerClient
    address: Address

    @property
    def url(self) -> str:
        return self.address.url

    @property
    def is_local(self) -> bool:
        return self.address.is_local

    @property
    def host(self) -> str:
        """Host name clients use to reach ports the engine publishes."""
        return self.address.published_host


def connect(engine: str | None, settings: Settings | None = None) -> Engine:
    """Connect to ``engine`` (URL or context name) or, when ``None``, to the environment's."""
    settings = settings or Settings()
    return connect_to(resolve(engine, settings), settings.timeout)


def connect_to(address: Address, timeout: float) -> Engine:
    """Connect to the engine at ``address``.

    The client asks the engine for its version on construction, so an engine that is down,
    refuses our certificate or our ssh login fails here, within ``timeout``, with a message
    that names it and says what to fix.
    """
    if address.scheme in ("tcp", "http") and address.tls is None and not address.is_local:
        log.warning("Talking to the Docker engine at %s without TLS: whoever reaches that port "
                    "controls the host. Prefer TLS (DOCKER_TLS_VERIFY, -C tlscacert) or ssh://.",
                    address.url)
    try:
        tls = address.tls.config() if address.tls else False
        if address.scheme == "ssh":
            _check_ssh_answers(address, timeout)
        api = _APIClient(base_url=address.client_url, tls=tls, timeout=timeout)
    except MlflowException:
        raise
    except Exception as exc:
        # one clear error: docker-py's chain (requests, urllib3, ssl) would bury it in the CLI
        raise connection_error(address, exc, timeout) from None
    return Engine(client=_DockerClient(api), address=address)


def _check_ssh_answers(address: Address, timeout: float) -> None:
    """Wait at most ``timeout`` for the ssh server's banner.

    paramiko, under docker-py, connects with no time limit of its own; this check bounds the
    wait for a host that does not answer. Hosts behind a ProxyCommand are left to it.
    """
    if "proxycommand" in address.ssh_options:
        return
    host, port = address.published_host, urlparse(address.client_url).port or 22
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        banner = sock.recv(256)
    if not banner.startswith(b"SSH-"):
        raise ConnectionError(f"{host}:{port} answered, but not as an ssh server")
