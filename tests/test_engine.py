"""Which engine a target names, with which TLS material, and how failing to reach it reads.

No engine is needed here: addresses are resolved from files and variables, and the connection
tests talk to sockets that never answer or refuse.
"""

import hashlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import paramiko
import pytest
import requests
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import parse_config
from mlflow_docker_target.engine.address import Address, TLSFiles, engine_from_target, resolve
from mlflow_docker_target.engine.connection import _APIClient, connect
from mlflow_docker_target.engine.errors import connection_error


@pytest.mark.parametrize(("target", "engine"), [
    ("dockerhost", None),
    ("dockerhost:/", None),
    ("dockerhost://", None),
    ("dockerhost:/unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("dockerhost:/tcp://10.0.0.5:2376", "tcp://10.0.0.5:2376"),
    ("dockerhost:/ssh://deploy@gpu-box", "ssh://deploy@gpu-box"),
    ("dockerhost:/my-context", "my-context"),
    ("DOCKERHOST:/my-context", "my-context"),
])
def test_engine_from_target(target: str, engine: str | None) -> None:
    assert engine_from_target(target) == engine


@pytest.mark.parametrize("target", ["sagemaker", "dockerhost:/ftp://host", "other:/x"])
def test_bad_targets_say_what_works(target: str) -> None:
    with pytest.raises(MlflowException, match="dockerhost:/tcp://host:2376"):
        engine_from_target(target)


# ---------------------------------------------------------------------------------------------
# Precedence: target, DOCKER_HOST, DOCKER_CONTEXT, current context, local socket


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME: no Docker CLI config, no ssh config, no engine variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY",
                 "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write_context(home: Path, name: str, host: str, tls: dict[str, str] | None = None,
                  skip_verify: bool = False) -> None:
    """A context as `docker context create` writes it (no config.json)."""
    context_id = hashlib.sha256(name.encode()).hexdigest()
    meta = home / ".docker" / "contexts" / "meta" / context_id
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": skip_verify}
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    for part, text in (tls or {}).items():
        folder = home / ".docker" / "contexts" / "tls" / context_id / "docker"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{part}.pem").write_text(text)


def test_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_context(home, "current", "tcp://10.0.0.1:2376")
    write_context(home, "by-env", "ssh://deploy@10.0.0.2")
    write_context(home, "named", "tcp://10.0.0.3:2376")

    assert resolve(None).url == "unix:///var/run/docker.sock"
    assert resolve(None).origin == "the local socket"
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "current"}))
    assert resolve(None).url == "tcp://10.0.0.1:2376"
    monkeypatch.setenv("DOCKER_CONTEXT", "by-env")
    assert resolve(None).url == "ssh://deploy@10.0.0.2"
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.4:2375")
    assert (resolve(None).url, resolve(None).origin) == ("tcp://10.0.0.4:2375", "DOCKER_HOST")
    assert resolve("named").url == "tcp://10.0.0.3:2376"
    assert resolve("unix:///x.sock").url == "unix:///x.sock"
    assert resolve("default").url == "unix:///var/run/docker.sock"
    with pytest.raises(MlflowException, match=r"No Docker context named 'nope'.*docker context ls"):
        resolve("nope")


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_context_made_by_the_docker_cli(home: Path, tmp_path: Path) -> None:
    """docker-py's own reader misses these when there is no config.json; ours does not."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=test", "-days", "1",
                    "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem"],
                   check=True, capture_output=True)
    shutil.copy(tmp_path / "cert.pem", tmp_path / "ca.pem")
    subprocess.run(["docker", "context", "create", "remote", "--docker",
                    f"host=tcp://10.0.0.9:2376,ca={tmp_path}/ca.pem,cert={tmp_path}/cert.pem,"
                    f"key={tmp_path}/key.pem"], check=True, capture_output=True)
    address = resolve("remote")
    assert address.url == "tcp://10.0.0.9:2376"
    assert address.tls is not None and address.tls.verify
    assert Path(address.tls.ca or "").read_text() == (tmp_path / "ca.pem").read_text()
    assert Path(address.tls.key or "").read_text() == (tmp_path / "key.pem").read_text()


# ---------------------------------------------------------------------------------------------
# TLS material


def test_tls_from_docker_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2376")
    assert resolve(None).tls is None
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", "/certs")
    tls = resolve(None).tls
    assert tls is not None and tls.verify and tls.ca == "/certs/ca.pem"
    assert "DOCKER_CERT_PATH" in tls.origin
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "")  # empty means off, as in the Docker CLI
    monkeypatch.delenv("DOCKER_CERT_PATH")
    assert resolve(None).tls is None


def test_tls_config_keys_win_and_name_missing_files(home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = parse_config({"tlscacert": str(ca), "tlscert": "~/nope/cert.pem",
                             "tlskey": "~/nope/key.pem"}, "create")
    tls = resolve("tcp://10.0.0.5:2376", settings).tls
    assert tls is not None and tls.ca == str(ca) and tls.cert == str(home / "nope/cert.pem")
    with pytest.raises(MlflowException, match=r"client certificate .*nope/cert.pem .*does not "
                                              r"exist.*-C tlscacert/tlscert/tlskey"):
        tls.config()
    with pytest.raises(MlflowException, match="apply to tcp:// engines"):
        resolve("ssh://deploy@gpu-box", settings)


def test_context_tls_and_skip_verify(home: Path) -> None:
    write_context(home, "secure", "tcp://10.0.0.6:2376", {"ca": "c", "cert": "c", "key": "k"})
    write_context(home, "lax", "tcp://10.0.0.7:2376", skip_verify=True)
    secure, lax = resolve("secure").tls, resolve("lax").tls
    assert secure is not None and secure.verify and secure.origin == "Docker context 'secure'"
    assert lax is not None and not lax.verify and lax.ca is None


def test_engine_ca_survives_requests_ca_bundle(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUESTS_CA_BUNDLE would replace the engine's private CA (set on these machines)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    tls = docker.tls.TLSConfig(ca_cert=str(ca), verify=True)
    api = _APIClient(base_url="tcp://10.0.0.5:2376", tls=tls, version="1.41")
    assert api.merge_environment_settings("https://10.0.0.5:2376/v1.41/info", {}, False, None,
                                          None)["verify"] == str(ca)
    plain = docker.APIClient(base_url="tcp://10.0.0.5:2376", tls=tls, version="1.41")
    assert plain.merge_environment_settings("https://10.0.0.5:2376/v1.41/info", {}, False,
                                            None, None)["verify"] != str(ca)


# ---------------------------------------------------------------------------------------------
# Where published ports are reached


@pytest.fixture
def ssh_alias(home: Path) -> str:
    """An alias in the user's ~/.ssh/config, with its own HostName, Port and User."""
    (home / ".ssh").mkdir()
    (home / ".ssh" / "config").write_text(
        "Host gpu-box\n  HostName 10.20.30.40\n  Port 2200\n  User deploy\n")
    return "gpu-box"


def test_published_host(ssh_alias: str) -> None:
    assert Address("ssh://gpu-box", "test").published_host == "10.20.30.40"
    assert Address("ssh://other@10.1.1.1:2222", "test").published_host == "10.1.1.1"
    assert Address("tcp://engine.example:2376", "test").published_host == "engine.example"
    assert Address("unix:///var/run/docker.sock", "test").published_host == "127.0.0.1"
    assert Address("tcp://[::1]:2375", "test").published_host == "::1"
    assert Address("tcp://127.0.0.1:2375", "test").is_local
    assert Address("ssh://localhost", "test").is_local
    assert not Address("ssh://gpu-box", "test").is_local
    assert not Address("tcp://10.0.0.5:2376", "test").is_local


def test_ports_filled_in_as_docker_and_ssh_would(ssh_alias: str) -> None:
    assert Address("ssh://deploy@gpu-box", "t").client_url == "ssh://deploy@gpu-box:2200"
    assert Address("ssh://other-box", "t").client_url == "ssh://other-box:22"
    assert Address("ssh://gpu-box:2222", "t").client_url == "ssh://gpu-box:2222"
    tls = TLSFiles(None, None, None, True, "t")
    assert Address("tcp://10.0.0.5", "t", tls).client_url == "tcp://10.0.0.5:2376"
    assert Address("tcp://10.0.0.5", "t").client_url == "tcp://10.0.0.5:2375"
    assert Address("unix:///var/run/docker.sock", "t").client_url == "unix:///var/run/docker.sock"


# ---------------------------------------------------------------------------------------------
# Failing to connect: bounded, and the message says what to fix


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
def test_an_engine_that_does_not_answer_fails_within_timeout(home: Path, silent_server: int,
                                                             scheme: str) -> None:
    settings = parse_config({"timeout": "1.5"}, "create")
    started = time.monotonic()
    with pytest.raises(MlflowException, match=rf"{scheme}://127.0.0.1:{silent_server} .*did "
                                              r"not answer within 1.5 s \(config timeout\)"):
        connect(f"{scheme}://127.0.0.1:{silent_server}", settings)
    assert time.monotonic() - started < 10


def test_refused_connection(home: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MlflowException, match=f"127.0.0.1:{port} .*refused"):
        connect(f"tcp://127.0.0.1:{port}")


def test_missing_socket(home: Path, tmp_path: Path) -> None:
    with pytest.raises(MlflowException, match=r"no engine socket there.*make engine"):
        connect(f"unix://{tmp_path}/docker.sock")


def _wrapped(cause: BaseException) -> docker.errors.DockerException:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {exc}") from exc
    except docker.errors.DockerException as outer:
        return outer


@pytest.mark.parametrize(("url", "cause", "expected"), [
    ("ssh://deploy@10.0.0.5:2222",
     paramiko.SSHException("Server '[10.0.0.5]:2222' not found in known_hosts"),
     r"host key of 10.0.0.5 is unknown.*ssh-keyscan -p 2222 10.0.0.5 >> ~/.ssh/known_hosts"),
    ("ssh://deploy@10.0.0.5", paramiko.AuthenticationException("Authentication failed."),
     r"ssh login as deploy was refused"),
    ("tcp://10.0.0.5:2376", requests.exceptions.SSLError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"),
     r"not signed by the CA in /certs/ca.pem"),
    ("tcp://10.0.0.5:2376", requests.exceptions.SSLError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch"),
     r"not issued for 10.0.0.5"),
    ("tcp://10.0.0.5:2376", requests.exceptions.SSLError(
        "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
     r"refused this client's TLS certificate \(none was given\)"),
    ("tcp://10.0.0.5:2376", requests.exceptions.HTTPError(
        "400 Client Error: Client sent an HTTP request to an HTTPS server."),
     r"the engine speaks TLS. Set DOCKER_TLS_VERIFY=1"),
])
def test_connection_errors_say_what_to_fix(url: str, cause: BaseException,
                                           expected: str) -> None:
    tls = None
    if "CERTIFICATE" in str(cause):
        tls = TLSFiles("/certs/ca.pem", None, None, True, "DOCKER_CERT_PATH (/certs)")
    message = connection_error(Address(url, "the target URI", tls), _wrapped(cause), 60).message
    assert message.startswith(f"Cannot reach the Docker engine at {url} (from the target URI)")
    assert re.search(expected, message), message
