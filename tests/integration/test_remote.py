"""Every command against a second engine that is remote in every way that matters here.

The engine runs in its own network namespace with its own address (tests/remote_engine.py): the
client reaches it over tcp with mutual TLS or over ssh, and reaches the containers it publishes
only through that address, as it would another machine. The tests skip (under CI=true: fail)
only where this machine cannot make a network namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from mlflow_docker_target import record
from mlflow_docker_target.controller import lifecycle
from mlflow_docker_target.controller.watch import STARTED
from mlflow_docker_target.demo import register_demo_model
from tests.helpers.ci import skip_or_fail
from tests.helpers.cli import mlflow_cli, mlflow_cli_background, wait_for_output
from tests.helpers.engine import LABEL, front_of, servers
from tests.helpers.models import IRIS_COLUMNS, IRIS_INPUT
from tests.helpers.remote_engine import RemoteEngine, cannot_make_namespaces, remote_engine
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.tracking_server import tracking, tracking_server
from tests.helpers.waiting import until_get

EXPECTED = [0, 2, 1]


@pytest.fixture(scope="session")
def remote(docker_client: docker.DockerClient) -> Iterator[RemoteEngine]:
    reason = cannot_make_namespaces()
    if reason:
        skip_or_fail(f"no remote test engine: {reason}")
    with remote_engine([os.environ["MLFLOW_DOCKERHOST_BASE_IMAGE"],
                        os.environ["MLFLOW_DOCKERHOST_PROXY_IMAGE"],
                        os.environ["MLFLOW_DOCKERHOST_STRIP_IMAGE"]]) as engine:
        yield engine


@pytest.fixture
def remote_name(remote: RemoteEngine, deployment_name: str) -> Iterator[str]:
    """A deployment name whose containers and images on the remote engine are removed after."""
    yield deployment_name
    client = remote.client()
    for container in client.containers.list(all=True,
                                            filters={"label": f"{LABEL}={deployment_name}"}):
        container.remove(force=True)
    for image in client.images.list(f"mlflow-dockerhost/{deployment_name}"):
        client.images.remove(image.id, force=True)


@pytest.fixture
def controlled(remote: RemoteEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A client of the remote engine over TLS, for deployments that need its controller
    (removed after the test, whatever became of it)."""
    for variable, value in tls_env(remote).items():
        monkeypatch.setenv(variable, value)
    # the engine's socket on its host is not the usual one: the controller mounts this
    monkeypatch.setenv(lifecycle.SOCKET_ENV, remote.socket[len("unix://"):])
    yield get_deploy_client(f"dockerhost:/{remote.tcp_url}")
    for container in remote.client().containers.list(
            all=True, filters={"label": f"{record.ROLE}={record.CONTROLLER}"}):
        container.remove(force=True)


def tls_env(remote: RemoteEngine) -> dict[str, str]:
    """Docker's own TLS variables, and the CA bundle variable that breaks private CAs."""
    return {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(remote.certs),
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}


def ssh_env(remote: RemoteEngine, home: Path | None = None) -> dict[str, str]:
    """A HOME whose ~/.ssh has the client key and knows the engine's host key."""
    return {"HOME": str(home or remote.ssh_home),
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR")
            or str(Path("~/.cache/pip").expanduser())}


def _containers(client: docker.DockerClient, name: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})


def _curl(endpoint: str) -> list:
    """The endpoint as a user's curl sees it."""
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--noproxy", "*", "-H",
         "Content-Type: application/json", "-d", json.dumps({"dataframe_split": IRIS_INPUT}),
         f"{endpoint}/invocations"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)["predictions"]


def _get(target: str, name: str, env: dict[str, str]) -> dict[str, str]:
    out = mlflow_cli("deployments", "get", "-t", target, "--name", name, env=env).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


# Over ssh, the whole session is make test-all's (50-95 s); make test reaches the engine over
# ssh in test_ssh_alias_from_the_users_ssh_config and test_ssh_unknown_host_key_and_refused_login.
@pytest.mark.parametrize("transport", ["tcp+tls", pytest.param("ssh", marks=pytest.mark.slow)])
def test_cli_session_on_the_remote_engine(remote, remote_name, iris_versions, docker_client,
                                          tmp_path: Path, transport: str) -> None:
    name = remote_name
    if transport == "ssh":
        target, env = f"dockerhost:/{remote.ssh_url}", ssh_env(remote)
    else:
        target, env = f"dockerhost:/{remote.tcp_url}", tls_env(remote)

    mlflow_cli("deployments", "create", "-t", target, "--name", name, "-m", iris_versions["v1"],
               env=env)
    assert _containers(docker_client, name) == []  # nothing on the local engine
    binding = front_of(remote.client(), name).attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
    assert binding["HostIp"] == "0.0.0.0"  # published where this machine can reach it

    listed = mlflow_cli("deployments", "list", "-t", target, env=env).stdout
    assert f"'name': '{name}'" in listed
    info = _get(target, name, env)
    assert info["endpoint"] == f"http://{remote.address}:{binding['HostPort']}"
    with pytest.raises(requests.ConnectionError):  # the engine's loopback is not ours
        requests.get(f"http://127.0.0.1:{binding['HostPort']}/ping", timeout=5)

    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps(IRIS_COLUMNS))
    predicted = mlflow_cli("deployments", "predict", "-t", target, "--name", name,
                           "--input-path", str(input_path), env=env).stdout
    assert json.loads(predicted)["predictions"] == _curl(info["endpoint"]) == EXPECTED

    mlflow_cli("deployments", "update", "-t", target, "--name", name, "-m", iris_versions["v2"],
               env=env)
    before = info["endpoint"]
    info = _get(target, name, env)
    assert info["model_version"] == "2"
    assert info["endpoint"] == before  # the endpoint stays put
    assert _curl(info["endpoint"]) != EXPECTED
    assert len(servers(remote.client(), name)) == 1

    mlflow_cli("deployments", "delete", "-t", target, "--name", name, "-C", "remove_image=true",
               env=env)
    assert _containers(remote.client(), name) == []
    assert remote.client().images.list(f"mlflow-dockerhost/{name}") == []


def test_tls_config_keys_and_a_docker_context(remote, remote_name, iris_versions,
                                              tmp_path: Path, monkeypatch) -> None:
    """-C tlscacert/tlscert/tlskey for the commands that take config; a context for the rest."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    tls = {"tlscacert": str(remote.certs / "ca.pem"), "tlscert": str(remote.certs / "cert.pem"),
           "tlskey": str(remote.certs / "key.pem")}
    client = get_deploy_client(f"dockerhost:/{remote.tcp_url}")
    created = client.create_deployment(remote_name, iris_versions["v1"], config=tls)
    assert created["endpoint"].startswith(f"http://{remote.address}:")
    assert "tlscacert" not in created["config"]  # how this client connects is not recorded

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    subprocess.run(["docker", "context", "create", "far-away", "--docker",
                    f"host={remote.tcp_url},ca={tls['tlscacert']},cert={tls['tlscert']},"
                    f"key={tls['tlskey']}"], check=True, capture_output=True)
    by_context = get_deploy_client("dockerhost:/far-away")
    assert by_context.get_deployment(remote_name)["endpoint"] == created["endpoint"]
    assert by_context.predict(remote_name, IRIS_COLUMNS)["predictions"] == EXPECTED
    subprocess.run(["docker", "context", "use", "far-away"], check=True, capture_output=True)
    current = get_deploy_client("dockerhost")  # the current context
    assert remote_name in [d["name"] for d in current.list_deployments()]

    client.delete_deployment(remote_name, config=tls)
    assert _containers(remote.client(), remote_name) == []


def _assert_nothing_made(remote: RemoteEngine, docker_client, name: str) -> None:
    assert _containers(remote.client(), name) == []
    assert _containers(docker_client, name) == []
    assert remote.client().images.list(f"mlflow-dockerhost/{name}") == []


def test_system_packages_on_an_engine_without_network(remote, remote_name, iris_versions,
                                                      docker_client, monkeypatch) -> None:
    """The test engine's namespace has no route out: the one networked build step says so."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    for name, value in tls_env(remote).items():
        monkeypatch.setenv(name, value)
    client = get_deploy_client(f"dockerhost:/{remote.tcp_url}")
    with pytest.raises(MlflowException) as err:
        client.create_deployment(remote_name, iris_versions["v1"],
                                 config={"system_packages": "libgomp1"})
    message = err.value.message
    assert ("Installing system packages (libgomp1) on the base image failed: the engine at "
            f"{remote.tcp_url} could not reach the package archive. This is the one build step "
            "that uses the network") in message, message
    assert "-C base_image=<image>" in message
    _assert_nothing_made(remote, docker_client, remote_name)
    assert remote.client().images.list("mlflow-dockerhost/system") == []


def test_wrong_ca_names_host_and_file(remote, remote_name, iris_versions, docker_client,
                                      tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=another CA", "-days", "1",
                    "-keyout", tmp_path / "other-key.pem", "-out", other_ca], check=True,
                   capture_output=True)
    env = {**tls_env(remote), "DOCKER_CERT_PATH": str(tmp_path / "certs")}
    shutil.copytree(remote.certs, tmp_path / "certs")
    shutil.copy(other_ca, tmp_path / "certs" / "ca.pem")
    result = mlflow_cli("deployments", "create", "-t", f"dockerhost:/{remote.tcp_url}",
                        "--name", remote_name, "-m", iris_versions["v1"], env=env, check=False)
    assert result.returncode != 0
    assert (f"Cannot reach the Docker engine at {remote.tcp_url}" in result.stderr
            and f"not signed by the CA in {tmp_path}/certs/ca.pem" in result.stderr), \
        result.stderr
    assert "During handling of the above exception" not in result.stderr  # one clear error

    client = get_deploy_client(f"dockerhost:/{remote.tcp_url}")
    with pytest.raises(MlflowException, match="refused this client's TLS certificate"):
        client.create_deployment(remote_name, iris_versions["v1"],
                                 config={"tlscacert": str(remote.certs / "ca.pem")})
    _assert_nothing_made(remote, docker_client, remote_name)


def test_ssh_unknown_host_key_and_refused_login(remote, remote_name, iris_versions,
                                                docker_client, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(remote.ssh_home, home)
    (home / ".ssh" / "known_hosts").write_text("")
    target = f"dockerhost:/{remote.ssh_url}"
    result = mlflow_cli("deployments", "create", "-t", target, "--name", remote_name, "-m",
                        iris_versions["v1"], env=ssh_env(remote, home), check=False)
    assert result.returncode != 0
    assert f"the ssh host key of {remote.address} is unknown" in result.stderr, result.stderr
    assert f"ssh-keyscan -p 2222 {remote.address}" in result.stderr

    shutil.copy(remote.ssh_home / ".ssh" / "known_hosts", home / ".ssh" / "known_hosts")
    for key in (home / ".ssh").glob("id_ed25519*"):
        key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    home / ".ssh" / "id_ed25519"], check=True)
    result = mlflow_cli("deployments", "list", "-t", target, env=ssh_env(remote, home),
                        check=False)
    assert result.returncode != 0
    assert "the ssh login as root was refused" in result.stderr, result.stderr
    _assert_nothing_made(remote, docker_client, remote_name)


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
def test_unreachable_address_fails_within_timeout(remote, remote_name, iris_versions,
                                                  docker_client, scheme: str) -> None:
    silent = remote.address.rsplit(".", 1)[0] + ".99"  # on the link, but nobody answers
    url = f"tcp://{silent}:2376" if scheme == "tcp" else f"ssh://root@{silent}:2222"
    started = time.monotonic()
    result = mlflow_cli("deployments", "create", "-t", f"dockerhost:/{url}", "--name",
                        remote_name, "-m", iris_versions["v1"], "-C", "timeout=3",
                        env={**tls_env(remote), **ssh_env(remote)}, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert f"Cannot reach the Docker engine at {url}" in result.stderr, result.stderr
    assert elapsed < 30, elapsed  # 3 s for the engine; the rest is the CLI starting
    _assert_nothing_made(remote, docker_client, remote_name)


def test_run_local_takes_the_engine_from_config(remote, remote_name, iris_versions) -> None:
    """MLflow gives run-local no target: -C docker_host (and the tls keys) choose the engine."""
    certs = remote.certs
    process, lines = mlflow_cli_background(
        "deployments", "run-local", "-t", "dockerhost", "--name", remote_name, "-m",
        iris_versions["v1"], "-C", f"docker_host={remote.tcp_url}", "-C",
        f"tlscacert={certs}/ca.pem", "-C", f"tlscert={certs}/cert.pem", "-C",
        f"tlskey={certs}/key.pem", "-C", "port=5055")
    endpoint = f"http://{remote.address}:5055"
    try:
        wait_for_output(process, lines, f"at {endpoint}")
        assert _curl(endpoint) == EXPECTED
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0, "".join(lines)
    assert _containers(remote.client(), remote_name) == []


def test_healthy_but_unreachable_port_is_its_own_error(remote, remote_name, iris_versions,
                                                       monkeypatch) -> None:
    """Published on the remote engine's loopback: healthy there, out of this machine's reach."""
    for name, value in tls_env(remote).items():
        monkeypatch.setenv(name, value)
    client = get_deploy_client(f"dockerhost:/{remote.tcp_url}")
    with pytest.raises(MlflowException, match=r"is ready on the engine, but http://"
                                              rf"{re.escape(remote.address)}:\d+ cannot be "
                                              r"reached from here.*bind_address"):
        client.create_deployment(remote_name, iris_versions["v1"],
                                 config={"bind_address": "127.0.0.1"})
    assert _containers(remote.client(), remote_name) == []


def test_ssh_alias_from_the_users_ssh_config(remote, remote_name, iris_versions,
                                             tmp_path: Path, monkeypatch) -> None:
    """An alias the ssh config maps: the endpoint URL uses its HostName, not the alias."""
    home = tmp_path / "home"
    shutil.copytree(remote.ssh_home, home)
    (home / ".ssh" / "config").write_text(
        f"Host model-box\n  HostName {remote.address}\n  Port 2222\n  User root\n")
    for name, value in ssh_env(remote, home).items():
        monkeypatch.setenv(name, value)
    client = get_deploy_client("dockerhost:/ssh://model-box")
    created = client.create_deployment(remote_name, iris_versions["v1"])
    assert created["endpoint"].startswith(f"http://{remote.address}:")
    assert client.predict(remote_name, IRIS_COLUMNS)["predictions"] == EXPECTED
    client.delete_deployment(remote_name)
    assert _containers(remote.client(), remote_name) == []


def test_endpoint_url_survives_an_engine_restart(remote, remote_name, iris_versions) -> None:
    target, env = f"dockerhost:/{remote.tcp_url}", tls_env(remote)
    mlflow_cli("deployments", "create", "-t", target, "--name", remote_name, "-m",
               iris_versions["v1"], env=env)
    before = _get(target, remote_name, env)["endpoint"]
    remote.restart_dockerd()
    deadline = time.monotonic() + 120
    while True:  # the engine restarts the front and the replica by their restart policy
        with contextlib.suppress(requests.RequestException):
            answer = requests.post(f"{before}/invocations", json={"dataframe_split": IRIS_INPUT},
                                   timeout=5)
            if answer.status_code == 200:
                break
        assert time.monotonic() < deadline, "the endpoint did not come back after the restart"
        time.sleep(1)
    after = _get(target, remote_name, env)["endpoint"]
    print(f"URL before the engine restart {before}, after {after}")
    assert after == before
    assert answer.json()["predictions"] == EXPECTED


@pytest.mark.slow  # 87 s; make test restarts an engine under a controller in the canary test
def test_the_controller_comes_back_with_its_engine(remote, remote_name, controlled,
                                                   tmp_path: Path) -> None:
    """A deployment that follows an alias on an engine that restarts (its containers stop with
    it, as in a reboot): the same controller comes back by its restart policy and follows on.
    Its tracking server listens on this host's end of the engine's link, which the controller
    (on the engine's host network) reaches."""
    client = controlled
    host = remote.address.rsplit(".", 1)[0] + ".1"
    engine = remote.client()
    with tracking_server(host, tmp_path) as uri, tracking(uri):
        register_demo_model("followed")
        made = client.create_deployment(remote_name, "models:/followed@champion", config={
            "follow_alias": "true", "follow_interval": "2", "tracking_uri": uri})
        controller = _controller(engine)
        until_get(client, remote_name, lambda d: d["follow"].get("state") == "serving",
                  "the controller sees version 1 served", restarting=True)

        remote.restart_dockerd()
        engine = remote.client()
        until_get(client, remote_name, lambda d: d["follow"].get("controller") == "running",
                  "the controller back after the engine restart", restarting=True)
        second = register_demo_model("followed", c=0.001)
        got = until_get(client, remote_name, lambda d: d["models_served"] == {second: 1}
                        and d["follow"].get("version") == "2",  # its rollout has ended
                        "the moved alias's version served after the restart", restarting=True)
        assert got["endpoint"] == made["endpoint"]
        back = _controller(engine)
        assert back.id == controller.id  # the same container, restarted
        assert back.logs().decode().count(STARTED) == 2
        client.delete_deployment(remote_name)
        assert _controller(engine) is None


def _controller(engine: docker.DockerClient):
    found = engine.containers.list(all=True,
                                   filters={"label": f"{record.ROLE}={record.CONTROLLER}"})
    return found[0] if found else None


def test_a_canary_whose_controller_and_engine_went_down_ends_in_a_verdict(
        remote, remote_name, controlled, iris_versions) -> None:
    """The controller's process killed mid-canary, then the engine restarted: the controller
    comes back with what it had counted, the replicas count again from zero, and the canary
    ends in a recorded verdict; nothing of the other version is left."""
    client = controlled
    engine = remote.client()
    url = client.create_deployment(remote_name, iris_versions["v1"], config={
        "rollout": "canary", "canary_traffic": "30", "canary_window": "30",
        "canary_min_requests": "30", "canary_max_latency_ratio": "3"})["endpoint"]
    client.update_deployment(remote_name, iris_versions["v2"])
    with SteadyLoad(url, {"dataframe_split": IRIS_INPUT}, clients=2) as load:
        until_get(client, remote_name, lambda d: d["canary"].get("judged", {}).get(
            "figures", {}).get("requests", {}).get("canary"), "the canary counted", 120,
            restarting=True)
    assert load.lost == 0, load.failures[:3]
    # its process dies as in a crash (docker kill would count as stopped by hand, which
    # unless-stopped never restarts), then the engine goes down and comes back
    os.kill(_controller(engine).attrs["State"]["Pid"], signal.SIGKILL)
    remote.restart_dockerd()
    engine = remote.client()
    _serving(url)  # the replicas load their models again: an outage, as in any restart
    with SteadyLoad(url, {"dataframe_split": IRIS_INPUT}, clients=2) as load:
        ended = until_get(client, remote_name, lambda d: "last_canary" in d,
                          "the canary's verdict", 300, restarting=True)
    print(f"measured: canary across a controller kill and an engine restart: "
          f"{ended['last_canary']}; {load.sent} requests once it served again, "
          f"{load.lost} lost {load.failures[:3]}")
    assert load.lost == 0, load.failures[:3]
    assert ended["last_canary"]["state"] == "promoted", ended
    assert "canary" not in ended and ended["models_served"] == {iris_versions["v2"]: 1}
    servers = engine.containers.list(all=True, filters={
        "label": [f"{record.DEPLOYMENT}={remote_name}", f"{record.ROLE}={record.SERVER}"]})
    assert len(servers) == 1, [c.name for c in servers]  # no orphan of either version
    client.delete_deployment(remote_name)
    assert _controller(engine) is None


def _serving(url: str, seconds: float = 180) -> None:
    """Until the endpoint answers 20 predictions in a row (each version's replicas up)."""
    deadline, answered = time.monotonic() + seconds, 0
    while answered < 20:
        assert time.monotonic() < deadline, "the endpoint did not serve again"
        try:
            ok = requests.post(f"{url}/invocations", json={"dataframe_split": IRIS_INPUT},
                               timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        answered = answered + 1 if ok else 0
        time.sleep(0 if ok else 0.5)
