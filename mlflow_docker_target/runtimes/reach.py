"""The URL clients reach an endpoint by, and whether it answers from this machine.

A port published on all interfaces (a remote engine, a swarm's nodes) is reached by the engine's
host name, unless ``-C host_address`` names another; a check from here catches a firewall
between this machine and the engine before ``create`` reports success.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from typing import Any

import requests
from mlflow.exceptions import MlflowException
from requests.adapters import HTTPAdapter

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes import certificates

UNREACHABLE_GRACE = 15.0


def bind_address(engine: Engine, settings: Settings) -> str:
    """The host address a port is published on: a remote engine's loopback is out of reach."""
    return settings.bind_address or ("127.0.0.1" if engine.is_local else "0.0.0.0")


def host_for(engine: Engine, bound: str, host_address: str | None) -> str:
    """The host clients reach a published port by: ``host_address`` if configured, else the
    address the port is bound to, else (all interfaces, or loopback) the engine's host."""
    if host_address:
        return host_address
    address = ipaddress.ip_address(bound) if bound else None
    specific = address is not None and not (address.is_unspecified or address.is_loopback)
    return bound if specific else engine.host


def url_for(engine: Engine, bound: str, port: int, host_address: str | None,
            https: bool = False) -> str:
    """The URL of a published port (:func:`host_for`); ``https`` for a front that serves TLS."""
    host = host_for(engine, bound, host_address)
    scheme = "https" if https else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def new_session(certificate: str | None = None, any_host: bool = False) -> requests.Session:
    """A session straight to an endpoint; ``certificate``: the chain an HTTPS front serves,
    which the plugin's own checks trust alone (:func:`certificates.pinned`), for any host name
    with ``any_host`` (a swarm's node, by its address)."""
    session = requests.Session()
    session.trust_env = False  # the endpoint is the engine's host, never a proxy's
    if certificate is not None:
        context = certificates.pinned(certificate)
        context.check_hostname = not any_host
        session.mount("https://", _Pinned(context))
    return session


class _Pinned(HTTPAdapter):
    """requests' adapter with a TLS context of our own (requests takes only CA files)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def check_reachable(url: str, server: str, certificate: str | None = None,
                    grace: float = UNREACHABLE_GRACE) -> None:
    """``url`` answers ``/ping`` with 200 from this machine within ``grace`` seconds (an HTTPS
    front with ``certificate``)."""
    session = new_session(certificate)
    deadline = time.monotonic() + grace
    failure = ""
    while time.monotonic() < deadline:
        try:
            answer = session.get(f"{url}/ping", timeout=2)
            if answer.status_code == 200:
                return
            failure = f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            failure = str(exc)
        time.sleep(0.2)
    raise unreachable(server, url, failure)


def not_routing(urls: list[str], certificate: str | None = None,
                grace: float = UNREACHABLE_GRACE) -> list[str]:
    """Of ``urls`` (a swarm's nodes' fronts), those that did not answer ``/ping`` with 200
    from this machine within ``grace`` seconds: a node's front finds a new service's tasks
    through that node's DNS, which Swarm updates a moment after the manager's."""
    session = new_session(certificate, any_host=True)  # the certificate names the endpoint
    deadline = time.monotonic() + grace
    waiting = list(urls)
    while waiting and time.monotonic() < deadline:
        for url in list(waiting):
            try:
                if session.get(f"{url}/ping", timeout=2).status_code == 200:
                    waiting.remove(url)
            except requests.RequestException:
                continue
        if waiting:
            time.sleep(0.2)
    return waiting


def unreachable(server: str, url: str | None, failure: str) -> MlflowException:
    return MlflowException(
        f"The server in container {server} is ready on the engine, but {url} cannot be reached "
        f"from here ({failure or 'no answer'}). Check that a firewall lets the port through, or "
        "set -C bind_address (the address the port is published on) and -C host_address (the "
        "name clients reach it by).")


