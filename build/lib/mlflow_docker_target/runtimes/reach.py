"""The URL clients reach an endpoint by, and whether it answers from this machine.

A port published on all interfaces (a remote engine, a swarm's nodes) is reached by the engine's
host name, unless ``-C host_address`` names another; a check from here catches a firewall
between this machine and the engine before ``create`` reports success.
"""

from __future__ import annotations

import ipaddress
import time

import requests
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine.connection import Engine

UNREACHABLE_GRACE = 15.0


def url_for(engine: Engine, bound: str, port: int, host_address: str | None) -> str:
    """The URL clients reach a published port by: ``host_address`` if configured, else the
    address the port is bound to, else (all interfaces, or loopback) the engine's host."""
    host = host_address
    if not host:
        address = ipaddress.ip_address(bound) if bound else None
        specific = address is not None and not (address.is_unspecified or address.is_loopback)
        host = bound if specific else engine.host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the endpoint is the engine's host, never a proxy's
    return session


def check_reachable(url: str, server: str, grace: float = UNREACHABLE_GRACE) -> None:
    """``url`` answers ``/ping`` with 200 from this machine within ``grace`` seconds."""
    session = new_session()
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


def unreachable(server: str, url: str | None, failure: str) -> MlflowException:
    return MlflowException(
        f"The server in container {server} is ready on the engine, but {url} cannot be reached "
        f"from here ({failure or 'no answer'}). Check that a firewall lets the port through, or "
        "set -C bind_address (the address the port is published on) and -C host_address (the "
        "name clients reach it by).")


