"""Which Docker engine a target means, and the TLS material to reach it with.

Precedence follows Docker's own: the engine named in the target URI (an engine URL such as
``unix:///var/run/docker.sock``, ``tcp://host:2376`` or ``ssh://user@host``, or a Docker context
name), then ``DOCKER_HOST`` / ``DOCKER_CONTEXT``, then the current Docker context, then the local
socket. TLS comes from ``-C tls*`` config, else ``DOCKER_TLS_VERIFY`` / ``DOCKER_CERT_PATH``, and a
context brings its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from docker.tls import TLSConfig
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.config import Settings

TARGET_NAME = "dockerhost"
LOCAL_SOCKET = "unix:///var/run/docker.sock"
_ENGINE_SCHEMES = ("unix", "tcp", "ssh", "npipe", "http", "https")


def engine_from_target(target_uri: str) -> str | None:
    """The engine part of ``dockerhost``, ``dockerhost:/`` or ``dockerhost:/<engine>``.

    Returns ``None`` when the target names no engine, so the environment decides.
    """
    parsed = urlparse(target_uri)
    if not parsed.scheme:
        if target_uri.strip() != TARGET_NAME:
            raise _bad_target(target_uri)
        return None
    if parsed.scheme != TARGET_NAME:
        raise _bad_target(target_uri)
    suffix = target_uri.split(":", 1)[1].lstrip("/")
    if not suffix:
        return None
    if "://" in suffix:
        scheme = suffix.split("://", 1)[0].lower()
        if scheme not in _ENGINE_SCHEMES:
            raise _bad_target(target_uri)
    return suffix


def _bad_target(target_uri: str) -> MlflowException:
    return MlflowException(
        f"Not a dockerhost target: {target_uri!r}. Use 'dockerhost' (DOCKER_HOST or the current "
        "Docker context), 'dockerhost:/unix:///var/run/docker.sock', "
        "'dockerhost:/tcp://host:2376', 'dockerhost:/ssh://user@host' or "
        "'dockerhost:/<docker context name>'.",
        INVALID_PARAMETER_VALUE,
    )


# ---------------------------------------------------------------------------------------------
# Where the engine is


@dataclass(frozen=True)
class TLSFiles:
    """Client-side TLS material for a tcp:// engine, and where it came from (for messages)."""

    ca: str | None
    cert: str | None
    key: str | None
    verify: bool
    origin: str

    def config(self) -> TLSConfig:
        for what, path in (("CA certificate", self.ca), ("client certificate", self.cert),
                           ("client key", self.key)):
            if path and not os.access(path, os.R_OK):
                raise MlflowException(
                    f"The TLS {what} {path} (from {self.origin}) "
                    f"{'cannot be read' if os.path.exists(path) else 'does not exist'}. Point "
                    f"{self.origin} at the right file.", INVALID_PARAMETER_VALUE)
        if bool(self.cert) != bool(self.key):
            raise MlflowException(
                f"A TLS client certificate needs its key and the other way round (from "
                f"{self.origin}): give both tlscert and tlskey.", INVALID_PARAMETER_VALUE)
        return TLSConfig(client_cert=(self.cert, self.key) if self.cert else None,
                         ca_cert=self.ca, verify=self.verify)


@dataclass(frozen=True)
class Address:
    """An engine URL, where it came from, and the TLS material to use with it."""

    url: str
    origin: str
    tls: TLSFiles | None = None

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme.lower()

    @property
    def hostname(self) -> str | None:
        return urlparse(self.url).hostname

    @cached_property
    def ssh_options(self) -> dict[str, Any]:
        """What ``~/.ssh/config`` says of an ssh:// host (read once per address)."""
        return _ssh_config(self.hostname or "") if self.scheme == "ssh" else {}

    @property
    def client_url(self) -> str:
        """The URL for docker-py, with the port filled in as the Docker CLI and ssh would.

        docker-py refuses tcp:// without a port, and gives ssh:// port 22 before its paramiko
        transport reads ~/.ssh/config, so an alias's ``Port`` would be ignored.
        """
        parsed = urlparse(self.url)
        if parsed.port or self.scheme not in ("ssh", "tcp"):
            return self.url
        if self.scheme == "ssh":
            port = int(self.ssh_options.get("port", 22))
        else:
            port = 2376 if self.tls else 2375
        return self.url.replace(parsed.netloc, f"{parsed.netloc}:{port}", 1)

    @property
    def is_local(self) -> bool:
        """A socket, named pipe or loopback address: the engine runs on this machine."""
        if self.scheme in ("unix", "npipe"):
            return True
        return _is_loopback(self.published_host)

    @property
    def published_host(self) -> str:
        """The name this machine reaches the engine's published ports by.

        For ssh:// that is the ``HostName`` the user's ssh config maps the alias to.
        """
        if self.scheme in ("unix", "npipe"):
            return "127.0.0.1"
        host = self.hostname or "127.0.0.1"
        return str(self.ssh_options.get("hostname", host))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssh_config(host: str) -> dict[str, Any]:
    """What ``~/.ssh/config`` says of ``host``, read as docker-py's paramiko transport reads it."""
    import paramiko

    path = Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return {}
    config = paramiko.SSHConfig.from_path(str(path))
    return dict(config.lookup(host))


def _tls_from_settings(settings: Settings) -> TLSFiles | None:
    given = (settings.tlscacert, settings.tlscert, settings.tlskey, settings.tlsverify)
    if all(value is None for value in given):
        return None
    verify = settings.tlsverify if settings.tlsverify is not None else True
    return TLSFiles(settings.tlscacert, settings.tlscert, settings.tlskey, verify,
                    "-C tlscacert/tlscert/tlskey")


def _tls_from_env(environ: Mapping[str, str]) -> TLSFiles | None:
    """``DOCKER_TLS_VERIFY`` / ``DOCKER_CERT_PATH`` as the Docker CLI and docker-py read them.

    Any non-empty ``DOCKER_TLS_VERIFY`` means verify, even "0", as in the Docker CLI.
    """
    verify = bool(environ.get("DOCKER_TLS_VERIFY"))
    cert_path = environ.get("DOCKER_CERT_PATH") or None
    if not verify and not cert_path:
        return None
    folder = Path(cert_path or "~/.docker").expanduser()
    origin = f"DOCKER_CERT_PATH ({folder})" if cert_path else f"{folder} (DOCKER_CERT_PATH unset)"
    key, cert = folder / "key.pem", folder / "cert.pem"
    has_client_cert = key.exists() or cert.exists()
    return TLSFiles(str(folder / "ca.pem") if verify else None,
                    str(cert) if has_client_cert else None,
                    str(key) if has_client_cert else None, verify, origin)


def _docker_config_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("DOCKER_CONFIG") or "~/.docker").expanduser()


def current_context_name(environ: Mapping[str, str]) -> str:
    """``currentContext`` of the Docker CLI's config.json, else "default"."""
    try:
        config = json.loads((_docker_config_dir(environ) / "config.json").read_text())
    except (OSError, ValueError):
        return "default"
    return str(config.get("currentContext") or "default")


def _from_context(name: str, origin: str, environ: Mapping[str, str]) -> Address | None:
    """The engine a Docker CLI context names; ``None`` for the built-in default context.

    Read from the CLI's own files (contexts/meta/<sha256 of name>/meta.json and the TLS files
    beside it). docker-py's reader looks for them only where a config.json exists, and
    ``docker context create`` writes none.
    """
    if name == "default":
        return None
    context_id = hashlib.sha256(name.encode()).hexdigest()
    contexts = _docker_config_dir(environ) / "contexts"
    try:
        meta = json.loads((contexts / "meta" / context_id / "meta.json").read_text())
    except FileNotFoundError:
        raise MlflowException(
            f"No Docker context named {name!r} ({origin}) in {contexts}; `docker context ls` "
            "lists the ones there are.", INVALID_PARAMETER_VALUE) from None
    except (OSError, ValueError) as exc:
        raise MlflowException(f"Cannot read Docker context {name!r} ({origin}): {exc}",
                              INVALID_PARAMETER_VALUE) from None
    endpoint = (meta.get("Endpoints") or {}).get("docker") or {}
    host = endpoint.get("Host")
    if not host:
        return None
    tls_dir = contexts / "tls" / context_id / "docker"
    files = {part: str(tls_dir / f"{part}.pem") for part in ("ca", "cert", "key")
             if (tls_dir / f"{part}.pem").is_file()}
    tls = None
    if files or endpoint.get("SkipTLSVerify"):
        tls = TLSFiles(files.get("ca"), files.get("cert"), files.get("key"),
                       not endpoint.get("SkipTLSVerify"), f"Docker context {name!r}")
    return Address(host, f"Docker context {name!r}", tls)


def resolve(engine: str | None, settings: Settings | None = None,
            environ: Mapping[str, str] | None = None) -> Address:
    """The engine ``engine`` (a URL, a context name, or ``None`` for the environment's) means."""
    settings = settings or Settings()
    environ = os.environ if environ is None else environ
    # DOCKER_TLS_VERIFY / DOCKER_CERT_PATH go with a URL given as such; a context has its own.
    if engine and "://" in engine:
        address = Address(engine, "the target URI", _tls_from_env(environ))
    elif engine:
        address = (_from_context(engine, "the target URI", environ)
                   or Address(LOCAL_SOCKET, "context 'default'"))
    elif environ.get("DOCKER_HOST"):
        address = Address(environ["DOCKER_HOST"], "DOCKER_HOST", _tls_from_env(environ))
    elif environ.get("DOCKER_CONTEXT"):
        address = (_from_context(environ["DOCKER_CONTEXT"], "DOCKER_CONTEXT", environ)
                   or Address(LOCAL_SOCKET, "context 'default'"))
    else:
        name = current_context_name(environ)
        address = (_from_context(name, "the current Docker context", environ)
                   or Address(LOCAL_SOCKET, "the local socket"))

    tls = _tls_from_settings(settings)
    if address.scheme not in ("tcp", "https"):
        if tls is not None:
            raise MlflowException(
                f"The tls* config keys apply to tcp:// engines; {address.url} (from "
                f"{address.origin}) is reached over {address.scheme}.", INVALID_PARAMETER_VALUE)
        return Address(address.url, address.origin)
    return Address(address.url, address.origin, tls or address.tls)
