"""What can go wrong between the plugin and an engine, mapped to errors that say what to do.

Tables, as httpx maps its transports' errors to its own. :data:`CONNECTION_FAILURES` says, row
by row, what a failure to reach or to log in to an engine looks like (an exception type somewhere
in its chain, or words in its text) and what to tell the user; the first row that matches gives
the reason. :data:`ENGINE_ANSWERS` does the same for an engine that answers with an error.
:func:`talking_to` wraps every command, so that no ``docker.errors`` or ``requests`` exception
crosses the client's boundary: each becomes an ``MlflowException``. An engine's error answer is
chained as the cause; a connection failure is not: its message carries what the user needs,
and the CLI would print docker-py's whole chain (requests, urllib3, ssl) above it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

import docker.errors
import requests
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine.address import Address


class _Engine(Protocol):
    """What :func:`talking_to` reads of a connected engine (``connection.Engine``)."""

    @property
    def url(self) -> str: ...

    @property
    def address(self) -> Address: ...

    @property
    def client(self) -> Any: ...


@dataclass(frozen=True)
class Failure:
    """A failure to reach an engine, as the rows of the table read it."""

    address: Address
    error: BaseException
    timeout: float

    @property
    def chain(self) -> list[BaseException]:
        """The exception and those it was raised from or during, outermost first."""
        found: list[BaseException] = []
        current: BaseException | None = self.error
        while current is not None and all(current is not e for e in found):
            found.append(current)
            current = current.__cause__ or current.__context__
        return found

    @property
    def text(self) -> str:
        return " ".join(str(e) for e in self.chain)

    def has(self, *kinds: type[BaseException] | str) -> bool:
        """An exception of one of ``kinds`` (a type, or a class name, for libraries imported
        only when used: paramiko) is in the chain."""
        names = {k for k in kinds if isinstance(k, str)}
        types = tuple(k for k in kinds if isinstance(k, type))
        return any(isinstance(e, types) or names & {c.__name__ for c in type(e).__mro__}
                   for e in self.chain)

    def says(self, *words: str) -> bool:
        return any(word in self.text for word in words)

    @property
    def last_line(self) -> str:
        return self.text.strip().splitlines()[-1] if self.text.strip() else "no answer"


def _unknown_host_key(f: Failure) -> str:
    host, port = f.address.published_host, urlparse(f.address.url).port
    keyscan = f"ssh-keyscan {f'-p {port} ' if port else ''}{host}"
    return (f"the ssh host key of {host} is unknown: it is not in ~/.ssh/known_hosts. Check the "
            f"key and add it (`ssh` to the host once, or `{keyscan} >> ~/.ssh/known_hosts`)")


def _untrusted_ca(f: Failure) -> str:
    tls = f.address.tls
    ca = tls.ca if tls and tls.ca else "the system's trust store"
    return (f"its TLS certificate is not signed by the CA in {ca} (from "
            f"{tls.origin if tls else 'the default'}). Point tlscacert or DOCKER_CERT_PATH at "
            "the CA that signed the engine's certificate")


def _refused_client_certificate(f: Failure) -> str:
    tls = f.address.tls
    given = f"{tls.cert} (from {tls.origin})" if tls and tls.cert else "none was given"
    return (f"the engine refused this client's TLS certificate ({given}). Give a client "
            "certificate and key signed by the CA the engine trusts: -C tlscert and tlskey, or "
            "cert.pem and key.pem in DOCKER_CERT_PATH")


Row = tuple[Callable[[Failure], bool], Callable[[Failure], str]]

# What a failure looks like, and what to say of it; the first row that matches wins.
CONNECTION_FAILURES: tuple[Row, ...] = (
    (lambda f: f.has("BadHostKeyException"),
     lambda f: f"the ssh host key of {f.address.published_host} is not the one in "
               "~/.ssh/known_hosts. If the host was reinstalled, check its new key and replace "
               f"the old one (ssh-keygen -R {f.address.published_host})"),
    (lambda f: f.says("not found in known_hosts"), _unknown_host_key),
    (lambda f: f.has("AuthenticationException"),
     lambda f: f"the ssh login as {urlparse(f.address.url).username or 'your user'} was "
               f"refused ({f.error}). Check the key (ssh-agent, or IdentityFile in "
               "~/.ssh/config) and that the user may log in"),
    (lambda f: f.says("CERTIFICATE_VERIFY_FAILED") and f.says("mismatch"),
     lambda f: f"its TLS certificate is not issued for {f.address.hostname}. Use the name or "
               "address the certificate names (its subjectAltName)"),
    (lambda f: f.says("CERTIFICATE_VERIFY_FAILED"), _untrusted_ca),
    (lambda f: f.says("alert certificate required", "alert bad certificate", "alert unknown ca",
                      "alert handshake failure"), _refused_client_certificate),
    (lambda f: f.says("HTTP request to an HTTPS server"),
     lambda f: "the engine speaks TLS. Set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or "
               "-C tlscacert, tlscert and tlskey"),
    (lambda f: "WRONG_VERSION_NUMBER" in f.text.upper() or f.has(ssl.SSLError),
     lambda f: f"the TLS handshake failed ({f.last_line}). If the engine listens without TLS, "
               "drop the TLS settings"),
    (lambda f: f.has(TimeoutError, requests.Timeout),  # socket.timeout is TimeoutError
     lambda f: f"it did not answer within {f.timeout:g} s (config timeout). Check the address, "
               "that the engine runs and that no firewall drops the connection"),
    (lambda f: f.says("No route to host", "Network is unreachable"),
     lambda f: "this machine has no route to it: nothing answers at that address. Check the "
               "address, and the VPN or network that should reach it"),
    (lambda f: f.has(ConnectionRefusedError) or f.says("refused"),
     lambda f: "the connection was refused: nothing listens there. Check the address and "
               "port"),
    (lambda f: f.has(FileNotFoundError) and f.address.scheme == "unix",
     lambda f: "there is no engine socket there. Start the engine (on this project's machines "
               "`make engine`), or point DOCKER_HOST or the target URI elsewhere"),
    (lambda f: f.has(PermissionError),
     lambda f: "this user may not use the engine's socket. Join the docker group, or use an "
               "engine this user may reach"),
    (lambda f: f.address.scheme == "ssh",
     lambda f: f"{f.last_line}. Over ssh the remote user needs the docker CLI (it runs `docker "
               "system dial-stdio`) and access to the engine's socket"),
    (lambda f: True,
     lambda f: f"{f.last_line}. Check that the engine is running and that this user may use "
               "it, or point DOCKER_HOST or the target URI at another engine"),
)


def connection_error(address: Address, exc: BaseException, timeout: float) -> MlflowException:
    """An actionable message for a failure to reach or to authenticate with an engine."""
    failure = Failure(address, exc, timeout)
    reason = next(say(failure) for matches, say in CONNECTION_FAILURES if matches(failure))
    return MlflowException(f"Cannot reach the Docker engine at {address.url} (from "
                           f"{address.origin}): {reason}.")


def _explained(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


APIRow = tuple[Callable[[docker.errors.APIError], bool], Callable[[str, docker.errors.APIError],
                                                                   str]]

# What an engine's error answer means, and what to do; the first row that matches wins.
ENGINE_ANSWERS: tuple[APIRow, ...] = (
    (lambda e: e.status_code == 404,
     lambda url, e: f"the Docker engine at {url} no longer has what this command works on "
                    f"({_explained(e)}): another client changed it meanwhile. Run the command "
                    "again; `mlflow deployments list -t dockerhost` shows what is there"),
    (lambda e: e.status_code == 409 and "already" in _explained(e),
     lambda url, e: f"the Docker engine at {url} is busy with another operation "
                    f"({_explained(e)}); run the command again in a moment"),
    (lambda e: e.status_code == 409,
     lambda url, e: f"the Docker engine at {url} refused it: {_explained(e)}. Another client "
                    "may be changing the same objects; run the command again once it is done"),
    (lambda e: e.is_client_error(),
     lambda url, e: f"the Docker engine at {url} refused it ({e.status_code}): "
                    f"{_explained(e)}. An engine older than Docker 20.10, or one that limits "
                    "its API (an authorization plugin), may refuse what the plugin asks"),
    (lambda e: True,
     lambda url, e: f"the Docker engine at {url} failed ({e.status_code or 'no status'}): "
                    f"{_explained(e)}. Its own log (journalctl -u docker, or dockerd's "
                    "output) says why; run the command again once it is healthy"),
)


def engine_error(url: str, exc: docker.errors.APIError) -> MlflowException:
    """An actionable message for an error the engine answered."""
    reason = next(say(url, exc) for matches, say in ENGINE_ANSWERS if matches(exc))
    return MlflowException(f"A call to the engine failed: {reason}.")


@contextmanager
def talking_to(engine: _Engine) -> Iterator[None]:
    """Turn the engine lost mid-operation into an error that names it, not a stack trace."""
    import paramiko

    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as exc:
        request = getattr(exc, "request", None)
        if request is None or not str(request.url).startswith(engine.client.api.base_url):
            # some other server (the tracking server, say)
            where = request.url if request is not None else "a server"
            raise MlflowException(f"Could not reach {where}: {exc}") from exc
        raise MlflowException(f"Lost the Docker engine at {engine.url} mid-operation: {exc}. "
                              "`mlflow deployments list` shows what it holds now.") from None
    except paramiko.SSHException as exc:
        raise MlflowException(f"Lost the ssh connection to the Docker engine at {engine.url} "
                              f"mid-operation: {exc}.") from None
    except docker.errors.APIError as exc:
        raise engine_error(engine.url, exc) from exc
    except docker.errors.DockerException as exc:
        raise connection_error(engine.address, exc, engine.client.api.timeout) from None
