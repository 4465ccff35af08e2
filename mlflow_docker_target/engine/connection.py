"""A client connected to the engine an address names, and errors that say what to fix.

The connection is made once per command and checked at once (docker-py asks the engine for its
version), so a down engine, a wrong CA, a refused ssh login or an unknown host key fails here,
within the config ``timeout``, with a message that names the host and the file or setting to fix.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import requests
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.address import Address, resolve

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


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def connection_error(address: Address, exc: BaseException, timeout: float) -> MlflowException:
    """An actionable message for a failure to reach or to authenticate with an engine."""
    import paramiko

    chain = list(_causes(exc))
    text = " ".join(str(e) for e in chain)
    where = f"the Docker engine at {address.url} (from {address.origin})"
    tls = address.tls
    if any(isinstance(e, paramiko.BadHostKeyException) for e in chain):
        reason = (f"the ssh host key of {address.published_host} is not the one in "
                  "~/.ssh/known_hosts. If the host was reinstalled, check its new key and "
                  f"replace the old one (ssh-keygen -R {address.published_host})")
    elif "not found in known_hosts" in text:
        port = urlparse(address.url).port
        keyscan = f"ssh-keyscan {f'-p {port} ' if port else ''}{address.published_host}"
        reason = (f"the ssh host key of {address.published_host} is unknown: it is not in "
                  "~/.ssh/known_hosts. Check the key and add it (`ssh` to the host once, or "
                  f"`{keyscan} >> ~/.ssh/known_hosts`)")
    elif any(isinstance(e, paramiko.AuthenticationException) for e in chain):
        user = urlparse(address.url).username or "your user"
        reason = (f"the ssh login as {user} was refused ({exc}). Check the key (ssh-agent, or "
                  "IdentityFile in ~/.ssh/config) and that the user may log in")
    elif "CERTIFICATE_VERIFY_FAILED" in text and "mismatch" in text:
        reason = (f"its TLS certificate is not issued for {address.hostname}. Use the name or "
                  "address the certificate names (its subjectAltName)")
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        ca = tls.ca if tls and tls.ca else "the system's trust store"
        reason = (f"its TLS certificate is not signed by the CA in {ca} (from "
                  f"{tls.origin if tls else 'the default'}). Point tlscacert or "
                  "DOCKER_CERT_PATH at the CA that signed the engine's certificate")
    elif any(alert in text for alert in ("alert certificate required", "alert bad certificate",
                                         "alert unknown ca", "alert handshake failure")):
        given = f"{tls.cert} (from {tls.origin})" if tls and tls.cert else "none was given"
        reason = (f"the engine refused this client's TLS certificate ({given}). Give a client "
                  "certificate and key signed by the CA the engine trusts: -C tlscert and "
                  "tlskey, or cert.pem and key.pem in DOCKER_CERT_PATH")
    elif "HTTP request to an HTTPS server" in text:
        reason = ("the engine speaks TLS. Set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or "
                  "-C tlscacert, tlscert and tlskey")
    elif "WRONG_VERSION_NUMBER" in text.upper() or any(isinstance(e, ssl.SSLError)
                                                       for e in chain):
        reason = (f"the TLS handshake failed ({_last_line(text)}). If the engine listens "
                  "without TLS, drop the TLS settings")
    elif any(isinstance(e, (socket.timeout, requests.Timeout, TimeoutError)) for e in chain):
        reason = (f"it did not answer within {timeout:g} s (config timeout). Check the address, "
                  "that the engine runs and that no firewall drops the connection")
    elif "No route to host" in text or "Network is unreachable" in text:
        reason = ("this machine has no route to it: nothing answers at that address. Check the "
                  "address, and the VPN or network that should reach it")
    elif any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        reason = "the connection was refused: nothing listens there. Check the address and port"
    elif any(isinstance(e, FileNotFoundError) for e in chain) and address.scheme == "unix":
        reason = ("there is no engine socket there. Start the engine (on this project's "
                  "machines `make engine`), or point DOCKER_HOST or the target URI elsewhere")
    elif any(isinstance(e, PermissionError) for e in chain):
        reason = ("this user may not use the engine's socket. Join the docker group, or use "
                  "an engine this user may reach")
    elif address.scheme == "ssh":
        reason = (f"{_last_line(text)}. Over ssh the remote user needs the docker CLI (it runs "
                  "`docker system dial-stdio`) and access to the engine's socket")
    else:
        reason = (f"{_last_line(text)}. Check that the engine is running and that this user may "
                  "use it, or point DOCKER_HOST or the target URI at another engine")
    return MlflowException(f"Cannot reach {where}: {reason}.")


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "no answer"


@contextmanager
def talking_to(engine: Engine) -> Iterator[None]:
    """Turn the engine lost mid-operation into an error that names it, not a stack trace."""
    import paramiko

    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as exc:
        request = getattr(exc, "request", None)
        if request is None or not str(request.url).startswith(engine.client.api.base_url):
            raise  # some other server (the tracking server, say): its own error says which
        raise MlflowException(f"Lost the Docker engine at {engine.url} mid-operation: {exc}. "
                              "`mlflow deployments list` shows what it holds now.") from None
    except paramiko.SSHException as exc:
        raise MlflowException(f"Lost the ssh connection to the Docker engine at {engine.url} "
                              f"mid-operation: {exc}.") from None
    except docker.errors.DockerException as exc:
        if isinstance(exc, docker.errors.APIError):
            raise
        raise connection_error(engine.address, exc, engine.client.api.timeout) from None
