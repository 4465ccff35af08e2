"""HTTPS at the front on a real engine: a certificate from a CA made in the test (openssl), TLS
only on the endpoint's port with Mozilla's intermediate profile, predictions through the plugin
verified with REQUESTS_CA_BUNDLE, the key readable by the front's user alone, a certificate
changed under load, and bad files refused before anything is made."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
from urllib.parse import urlsplit

import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from tests.helpers.engine import front_of, servers
from tests.helpers.models import IRIS_INPUT
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.tls_files import Pair, make_ca, make_cert, make_expired

BODY = {"dataframe_split": IRIS_INPUT}
HOST = "127.0.0.1"  # the host in a local engine's endpoint URLs


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory)
    return {"ca": ca, "first": make_cert(directory, ca, "first", HOST),
            "second": make_cert(directory, ca, "second", HOST),
            "other": make_cert(directory, ca, "other", "other.example"),
            "expired": make_expired(directory, HOST)}


def _https(pair: Pair) -> dict[str, str]:
    return {"https_cert": str(pair.cert), "https_key": str(pair.key)}


def _served_sha256(url: str) -> str:
    parts = urlsplit(url)
    pem = ssl.get_server_certificate((str(parts.hostname), int(parts.port or 443)))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_an_https_endpoint(iris_versions, deployment_name, docker_client, files,
                           monkeypatch) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={**_https(files["first"]), "replicas": "2"})
    url = created["endpoint"]
    assert url.startswith(f"https://{HOST}:"), url
    port = int(str(urlsplit(url).port))

    # curl, trusting the test's CA, gets 200 over HTTPS
    for path, extra in (("/ping", []), ("/invocations", [
            "-H", "Content-Type: application/json", "--data", json.dumps(BODY)])):
        answer = subprocess.run(["curl", "-sS", "--cacert", str(files["ca"].cert), "-o",
                                 "/dev/null", "-w", "%{http_code}", *extra, f"{url}{path}"],
                                capture_output=True, text=True, timeout=30)
        assert answer.stdout == "200", (path, answer.stdout, answer.stderr)

    # plain HTTP to the same port gets no answer in clear
    with socket.create_connection((HOST, port), timeout=10) as plain:
        plain.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            heard = plain.recv(4096)
        except (ConnectionResetError, TimeoutError):
            heard = b""
    assert not heard.startswith(b"HTTP/"), heard

    # TLS 1.2 with a cipher of the profile is served; a CBC cipher (HAProxy's default list
    # has them) is not
    for ciphers, served in (("ECDHE-RSA-AES128-GCM-SHA256", True),
                            ("ECDHE-RSA-AES128-SHA", False)):
        context = ssl.create_default_context(cafile=str(files["ca"].cert))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
        try:
            with socket.create_connection((HOST, port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=HOST) as tls:
                assert tls.version() == "TLSv1.2"
            handshake = True
        except ssl.SSLError:
            handshake = False
        assert handshake is served, ciphers

    # predict through the plugin verifies: with REQUESTS_CA_BUNDLE it works, without it the
    # error says what to set
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(files["ca"].cert))
    assert len(client.predict(deployment_name, BODY)["predictions"]) == len(IRIS_INPUT["data"])
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(MlflowException, match="set REQUESTS_CA_BUNDLE"):
        client.predict(deployment_name, BODY)

    # the key: a file of the front's user alone, never in a label or get
    front = front_of(docker_client, deployment_name)
    owner = front.exec_run(["stat", "-c", "%u %a", "/etc/mlflow-dockerhost/tls.pem"])
    assert owner.output.decode().strip() == "99 600"
    assert front.exec_run(["id", "-u"]).output.decode().strip() == "99"
    key = files["first"].key.read_text().strip().splitlines()[1]
    labels = [front.labels, *(c.labels for c in servers(docker_client, deployment_name))]
    assert key not in json.dumps(labels) and key not in json.dumps(client.get_deployment(
        deployment_name))
    assert client.get_deployment(deployment_name)["certificate"]["sha256"] == _served_sha256(url)

    # a new certificate under steady load: a hitless reload, nothing lost, no replica restarted
    before = {c.id for c in servers(docker_client, deployment_name)}
    with SteadyLoad(url, BODY, verify=str(files["ca"].cert)) as load:
        load.wait_for(50)
        client.update_deployment(deployment_name, config=_https(files["second"]))
        load.wait_for(load.sent + 50)
    print(f"measured: certificate changed under load: {load.summary()}")
    assert load.lost == 0, load.summary()
    assert {c.id for c in servers(docker_client, deployment_name)} == before
    shown = client.get_deployment(deployment_name)["certificate"]["sha256"]
    assert shown == _served_sha256(url) != hashlib.sha256(ssl.PEM_cert_to_DER_cert(
        files["first"].cert.read_text())).hexdigest()

    # HTTPS stays: turning it off would change the URL
    with pytest.raises(MlflowException, match="cannot turn it off"):
        client.update_deployment(deployment_name, config={"https_cert": "", "https_key": ""})


def test_a_shared_https_endpoint(iris_versions, deployment_name, endpoint_name, files,
                                 monkeypatch) -> None:
    client = get_deploy_client("dockerhost")
    made = client.create_endpoint(endpoint_name, config=_https(files["first"]))
    assert made["url"].startswith("https://")
    client.create_deployment(deployment_name, iris_versions["v1"], endpoint=endpoint_name)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(files["ca"].cert))
    assert client.predict(endpoint=endpoint_name, inputs=BODY)["predictions"]
    client.update_endpoint(endpoint_name, config=_https(files["second"]))
    assert client.get_endpoint(endpoint_name)["certificate"]["sha256"] == _served_sha256(
        made["url"])
    answer = requests.post(f"{made['url']}/invocations", json=BODY, timeout=30,
                           verify=str(files["ca"].cert))
    assert answer.status_code == 200
    client.delete_deployment(deployment_name)
    client.delete_endpoint(endpoint_name)


@pytest.mark.parametrize(("cert", "key", "says"), [
    ("first", "second", "does not match the key"),
    ("expired", "expired", "expired on"),
    ("other", "other", "does not name 127.0.0.1"),
    ("first", "unreadable", "Cannot read -C https_key"),
])
def test_bad_certificates_fail_before_anything_is_made(iris_versions, deployment_name,
                                                       endpoint_name, docker_client, files,
                                                       tmp_path, cert, key, says) -> None:
    def path(name: str, part: str) -> str:
        return str(tmp_path) if name == "unreadable" else str(getattr(files[name], part))

    config = {"https_cert": path(cert, "cert"), "https_key": path(key, "key")}
    images = {i.id for i in docker_client.images.list(all=True)}
    volumes = {v.name for v in docker_client.volumes.list()}
    client = get_deploy_client("dockerhost")
    with pytest.raises(MlflowException, match=says):
        client.create_deployment(deployment_name, iris_versions["v1"], config=config)
    with pytest.raises(MlflowException, match=says):
        client.create_endpoint(endpoint_name, config=config)
    assert docker_client.containers.list(all=True, filters={"name": deployment_name}) == []
    assert docker_client.containers.list(all=True, filters={"name": endpoint_name}) == []
    assert docker_client.networks.list(names=[f"mlflow-{deployment_name}-front"]) == []
    assert {i.id for i in docker_client.images.list(all=True)} == images
    assert {v.name for v in docker_client.volumes.list()} == volumes
