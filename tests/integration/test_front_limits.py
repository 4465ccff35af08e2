"""Limits at the front on a real engine: a rate limit per client address (clients in network
namespaces of their own), X-Forwarded-For from a trusted proxy, connections per replica, and
changes of limits by a hitless reload."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from tests.helpers.client_namespaces import client_namespaces, result
from tests.helpers.engine import servers
from tests.helpers.models import IRIS_INPUT, SLEEPY_MODEL, register_code_model
from tests.helpers.networks import gateway
from tests.helpers.remote_engine import cannot_make_namespaces
from tests.helpers.servers import free_port
from tests.helpers.steady_load import SteadyLoad

BODY = {"dataframe_split": IRIS_INPUT}


@pytest.fixture(scope="module")
def sleepy_model(iris_versions, tmp_path_factory) -> str:
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    return register_code_model(SLEEPY_MODEL, "sleepy-limits", iris_versions["v1"],
                               tmp_path_factory.mktemp("sleepy"), signature)


def test_rate_limit_per_client_address(iris_versions, deployment_name, docker_client) -> None:
    """The issue's case: rate_limit=50; a client sending 200 requests in a second gets at least
    100 answers of 429 (JSON, Retry-After), while one at 10 per second from another address
    gets none. Probes are never limited."""
    why = cannot_make_namespaces()
    if why:
        pytest.fail(f"the rate limit test needs network namespaces: {why}")
    port = free_port()
    client = get_deploy_client("dockerhost")
    client.create_deployment(deployment_name, iris_versions["v1"], config={
        "rate_limit": "50", "bind_address": "0.0.0.0", "port": str(port), "workers": "2"})
    with client_namespaces(2) as (noisy, calm):
        url = f"http://{noisy.host}:{port}/invocations"
        started = [noisy.post(url, BODY, 200, 200), calm.post(url, BODY, 20, 10)]
        loud, quiet = (result(c) for c in started)
    print(f"measured: noisy client {loud}, calm client {quiet}")
    assert loud["statuses"].get("429", 0) >= 100 and loud["well_formed"], loud
    assert set(quiet["statuses"]) == {"200"}, quiet

    # health probes pass whatever the rate; predictions over it get 429
    url = f"http://127.0.0.1:{port}"
    probes = [requests.get(f"{url}/ping", timeout=10).status_code for _ in range(120)]
    assert set(probes) == {200}
    assert client.get_deployment(deployment_name)["config"]["rate_limit"] == "50"


def _behind_a_trusted_proxy(client, name: str, model_uri: str, docker_client) -> str:
    """A deployment limited to 2 requests a second per client, that trusts Docker's userland
    proxy of a loopback port (it connects from the front network's gateway); its scoring URL."""
    created = client.create_deployment(name, model_uri, config={"rate_limit": "2"})
    proxy = gateway(docker_client.networks.get(f"mlflow-{name}-front"))
    client.update_deployment(name, config={"trusted_proxies": proxy})
    return f"{created['endpoint']}/invocations"


def test_trusted_proxies_name_the_client(iris_versions, deployment_name,
                                         docker_client) -> None:
    """From a trusted proxy (here: Docker's userland proxy of a loopback port, which connects
    from the front network's gateway), the last X-Forwarded-For address is the client: two
    clients behind it are limited apart. Once the proxy is not trusted, a forged header gains
    nothing."""
    client = get_deploy_client("dockerhost")
    url = _behind_a_trusted_proxy(client, deployment_name, iris_versions["v1"], docker_client)

    def burst(forwarded_for: str) -> list[int]:
        return [requests.post(url, json=BODY, timeout=10,
                              headers={"X-Forwarded-For": forwarded_for}).status_code
                for _ in range(10)]

    # limits low enough that a loaded machine's slow requests still exceed them
    first, second = burst("192.0.2.1"), burst("192.0.2.2")
    assert first.count(429) >= 5 and second[:2] == [200, 200], (first, second)
    client.update_deployment(deployment_name, config={"trusted_proxies": "192.0.2.0/24"})
    time.sleep(1.1)
    # the userland proxy is no longer trusted: every request counts against its address
    third, fourth = burst("192.0.2.3"), burst("192.0.2.4")
    assert fourth.count(429) == 10, (third, fourth)


def test_after_an_update_kept_connections_count_against_their_own_clients(
        iris_versions, deployment_name, docker_client) -> None:
    """A reload's retiring worker hands each kept connection's next request to its successor,
    which must still see that request's client: six clients behind a trusted proxy, limited
    to 2 requests a second each, each send one request on a connection kept through an update,
    all within a second. Counted against the handoff's own address, most would get 429."""
    client = get_deploy_client("dockerhost")
    url = _behind_a_trusted_proxy(client, deployment_name, iris_versions["v1"], docker_client)
    kept = {f"192.0.2.{n}": requests.Session() for n in range(1, 7)}
    for address, session in kept.items():
        headers = {"X-Forwarded-For": address}
        assert session.post(url, json=BODY, headers=headers, timeout=10).status_code == 200
    client.update_deployment(deployment_name, iris_versions["v2"])
    answers = [session.post(url, json=BODY, headers={"X-Forwarded-For": address}, timeout=10)
               for address, session in kept.items()]
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert {a.headers["x-mlflow-model-version"] for a in answers} == {"2"}


def test_max_connections_queues_at_the_front(sleepy_model, deployment_name) -> None:
    """max_connections=1: four 1 s predictions at once are served one after another (the
    others wait in the front's queue); one that waits past the queue's 10 s gets 503 JSON."""
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, sleepy_model, config={
        "max_connections": "1", "workers": "1", "predict_threads": "4"})
    url = f"{created['endpoint']}/invocations"

    def predict(seconds: float, answers: list[requests.Response]) -> None:
        answers.append(requests.post(url, json={"inputs": [{"x": seconds}]}, timeout=60))

    def at_once(seconds: list[float]) -> tuple[list[requests.Response], float]:
        answers: list[requests.Response] = []
        threads = [threading.Thread(target=predict, args=(s, answers)) for s in seconds]
        started = time.monotonic()
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        return answers, time.monotonic() - started

    answers, took = at_once([1.0] * 4)
    print(f"measured: four 1 s predictions with max_connections=1 took {took:.1f} s")
    assert [a.status_code for a in answers] == [200] * 4 and took >= 3.9

    answers, took = at_once([12.0, 0.1])
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 503], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["content-type"] == "application/json"
    assert "max_connections" in refused.json()["message"]
    assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_a_change_of_limits_reloads_the_front_and_loses_nothing(iris_versions,
                                                                 deployment_name,
                                                                 endpoint_name,
                                                                 docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"replicas": "2"})
    before = {c.id for c in servers(docker_client, deployment_name)}
    with SteadyLoad(created["endpoint"], BODY) as load:
        load.wait_for(50)
        client.update_deployment(deployment_name, config={"max_connections": "32",
                                                          "rate_limit": "100000"})
        load.wait_for(load.sent + 50)
    print(f"measured: limits changed under load: {load.summary()}")
    assert load.lost == 0, load.summary()
    assert {c.id for c in servers(docker_client, deployment_name)} == before  # no rollout
    config = client.get_deployment(deployment_name)["config"]
    assert (config["max_connections"], config["rate_limit"]) == ("32", "100000")

    # a shared endpoint's limits belong to it: update-endpoint sets them, traffic kept
    client.create_endpoint(endpoint_name, config={"rate_limit": "2"})
    made = client.create_deployment(f"{deployment_name}-e", iris_versions["v1"],
                                    endpoint=endpoint_name)
    statuses = [requests.post(f"{made['endpoint']}/invocations", json=BODY,
                              timeout=10).status_code for _ in range(8)]
    assert statuses.count(429) >= 4, statuses
    client.update_endpoint(endpoint_name, config={"rate_limit": ""})
    time.sleep(1.1)
    statuses = [requests.post(f"{made['endpoint']}/invocations", json=BODY,
                              timeout=10).status_code for _ in range(8)]
    assert statuses == [200] * 8
    assert client.get_endpoint(endpoint_name)["limits"] == {}
    client.delete_deployment(f"{deployment_name}-e")
    client.delete_endpoint(endpoint_name)


def test_the_fronts_own_metrics(iris_versions, deployment_name, tmp_path) -> None:
    """front_metrics_port publishes HAProxy's exporter: requests per deployment (the backend
    is named as it), and the endpoint's 429s as denied requests; promtool accepts the text."""
    metrics_port = free_port()
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"], config={
        "rate_limit": "2", "front_metrics_port": str(metrics_port)})
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    def value(text: str, name: str, proxy: str, extra: str = "") -> float:
        found = re.search(rf'^{name}{{proxy="{re.escape(proxy)}"{extra}}} (\S+)$', text, re.M)
        assert found, f"{name} for {proxy} not in the front's metrics"
        return float(found.group(1))

    before = requests.get(url, timeout=10).text
    statuses = [requests.post(f"{created['endpoint']}/invocations", json=BODY,
                              timeout=10).status_code for _ in range(12)]
    refused = statuses.count(429)
    assert refused >= 6 and statuses.count(200) == 12 - refused, statuses
    text = requests.get(url, timeout=10).text
    denied, served = "haproxy_frontend_requests_denied_total", "haproxy_backend_http_requests_total"
    assert value(text, denied, "endpoint") - value(before, denied, "endpoint") == refused
    assert value(text, served, deployment_name) - value(before, served, deployment_name) == (
        12 - refused)
    assert value(text, "haproxy_backend_http_responses_total", deployment_name,
                 ',code="5xx"') == 0
    value(text, "haproxy_backend_current_queue", deployment_name)
    value(text, "haproxy_backend_retry_warnings_total", deployment_name)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the port is the endpoint's for its life
    with pytest.raises(MlflowException, match="keeps its ports"):
        client.update_deployment(deployment_name, config={"front_metrics_port": "1"})
