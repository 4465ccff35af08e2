"""Canaries on one engine (``-C rollout=canary``): the new version serves its share of the
deployment's requests beside the current one, drawn per request by the front, until the
engine's controller judges it by both versions' metrics, or a user ends it; nothing is lost at
either end."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from tests.helpers.models import IRIS_INPUT, PREDICT_FAILS_CODE, register_code_model
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.waiting import until_get

BODY = {"dataframe_split": IRIS_INPUT}


def _share(load: SteadyLoad, version: str) -> float:
    return load.versions[version] / max(1, sum(load.versions.values()))


# the controller watches, but judges nothing before 100000 requests: ended by hand
BY_HAND = {"rollout": "canary", "canary_min_requests": "100000"}


def test_a_canary_takes_its_share_then_is_promoted_or_aborted_with_nothing_lost(
        iris_versions: dict[str, str], deployment_name: str,
        docker_client: docker.DockerClient, no_controller: None) -> None:
    name, client = deployment_name, get_deploy_client("dockerhost")
    url = client.create_deployment(name, iris_versions["v1"], config=BY_HAND)["endpoint"]
    first_image = client.get_deployment(name)["image"]

    with SteadyLoad(url, BODY, clients=2) as starting:
        started = client.update_deployment(name, iris_versions["v2"],
                                           config={"canary_traffic": "20"})
    canary = started["canary"]
    assert canary["traffic"] == {"current": 80, "canary": 20}, canary
    assert canary["model_version"] == "2" and canary["replicas"] == "1/1", canary
    assert started["model_version"] == "1" and started["endpoint"] == url  # the current one
    assert started["models_served"] == {iris_versions["v1"]: 1, iris_versions["v2"]: 1}
    assert starting.lost == 0, starting.failures[:3]

    # the share, drawn for each request whatever the concurrency (1 client, then 4)
    for clients in (1, 4):
        with SteadyLoad(url, BODY, clients=clients) as load:
            load.wait_for(600, timeout=120)
        share = _share(load, "2")
        print(f"measured: canary_traffic 20, {clients} client(s): {share:.1%} of "
              f"{sum(load.versions.values())} answers from the canary, {load.lost} lost")
        assert load.lost == 0, load.failures[:3]
        assert 0.14 <= share <= 0.26, dict(load.versions)  # 600 draws: within 4 sigma of 20%

    # while it runs, other changes wait for its end
    with pytest.raises(MlflowException, match="has a canary"):
        client.update_deployment(name, config={"replicas": "2"})

    with SteadyLoad(url, BODY, clients=4) as load:
        load.wait_for(50)
        started_at = time.monotonic()
        promoted = client.update_deployment(name, config={"canary": "promote"})
        took = time.monotonic() - started_at
        load.wait_for(load.sent + 50)
    print(f"measured: promote took {took:.1f} s; {load.sent} requests, {load.lost} lost")
    assert load.lost == 0, load.failures[:3]
    assert "canary" not in promoted and promoted["model_version"] == "2"
    assert promoted["models_served"] == {iris_versions["v2"]: 1}
    assert promoted["endpoint"] == url
    with pytest.raises(docker.errors.ImageNotFound):  # no replica serves it any more
        docker_client.images.get(first_image)

    # rollout=canary is recorded: the next update is a canary too, and this one is aborted
    client.update_deployment(name, iris_versions["v1"], config={"canary_traffic": "50"})
    aborted_image = client.get_deployment(name)["canary"]["image"]
    with SteadyLoad(url, BODY, clients=4) as load:
        load.wait_for(50)
        aborted = client.update_deployment(name, config={"canary": "abort"})
        load.wait_for(load.sent + 50)
    print(f"measured: abort; {load.sent} requests, {load.lost} lost, answers by version "
          f"{dict(load.versions)}")
    assert load.lost == 0, load.failures[:3]
    assert "canary" not in aborted and aborted["model_version"] == "2"
    assert aborted["models_served"] == {iris_versions["v2"]: 1}
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(aborted_image)
    client.delete_deployment(name)


def test_a_canary_on_a_shared_endpoint_takes_its_share_from_its_own_deployment(
        iris_versions: dict[str, str], endpoint_name: str, no_controller: None) -> None:
    client = get_deploy_client("dockerhost")
    url = client.create_endpoint(endpoint_name)["url"]
    for name in ("a", "b"):
        client.create_deployment(f"{endpoint_name}-{name}", iris_versions["v1"],
                                 endpoint=endpoint_name)
    a, b = f"{endpoint_name}-a", f"{endpoint_name}-b"
    client.update_endpoint(endpoint_name, config={"traffic": f"{a}:50,{b}:50"})
    client.update_deployment(a, iris_versions["v2"], endpoint=endpoint_name,
                             config={**BY_HAND, "canary_traffic": "40"})
    with SteadyLoad(url, BODY, clients=2) as load:
        load.wait_for(800, timeout=180)
    answers = sum(load.versions.values())
    by = {k: v / answers for k, v in load.served_by.items()}
    print(f"measured: shared endpoint, a:50 b:50, a's canary 40%: answers by deployment {by}, "
          f"by version {dict(load.versions)}")
    assert load.lost == 0, load.failures[:3]
    assert 0.43 <= by[b] <= 0.57, by  # b keeps its half (800 draws: within 4 sigma)
    assert 0.13 <= _share(load, "2") <= 0.27, dict(load.versions)  # 40% of a's half
    assert client.get_endpoint(endpoint_name)["traffic"] == {a: 50.0, b: 50.0}
    for name in (a, b):
        client.delete_deployment(name)
    client.delete_endpoint(endpoint_name)


def test_the_controller_aborts_a_canary_whose_predictions_fail_within_its_window(
        iris_versions: dict[str, str], deployment_name: str, no_controller: None,
        tmp_path: Path) -> None:
    name, client = deployment_name, get_deploy_client("dockerhost")
    failing = register_code_model(PREDICT_FAILS_CODE, "predict-fails", iris_versions["v1"],
                                  tmp_path)
    url = client.create_deployment(name, iris_versions["v1"], config={
        "rollout": "canary", "canary_traffic": "20", "canary_window": "120",
        "canary_min_requests": "50"})["endpoint"]
    with SteadyLoad(url, BODY, clients=4) as load:
        load.wait_for(50)
        sent = load.sent
        client.update_deployment(name, failing)
        started = time.monotonic()
        until_get(client, name, lambda d: "canary" not in d, "the canary aborted", 120)
        took = time.monotonic() - started
        during, failed = load.sent - sent, load.lost
        load.wait_for(load.sent + 50)
    ended = until_get(client, name, lambda d: "last_canary" in d, "the verdict recorded", 30)
    print(f"measured: canary of a version whose predictions fail (20%): aborted {took:.1f} s "
          f"after it served (window 120 s); {failed} of {during} requests failed meanwhile "
          f"({failed / max(1, during):.1%}); verdict: {ended.get('last_canary')}")
    assert took < 120
    assert ended["last_canary"]["state"] == "aborted", ended
    assert "error rate" in ended["last_canary"]["reason"]
    assert ended["model_version"] == "1" and ended["models_served"] == {iris_versions["v1"]: 1}
    assert failed <= 0.2 * during + 25, (failed, during)  # its share, and a little chance
    assert load.lost == failed  # none after the verdict
    assert load.statuses[200] > 0 and set(load.statuses) <= {200, 400}, load.statuses
    client.delete_deployment(name)


def test_the_controller_promotes_a_good_canary_after_its_window_with_nothing_lost(
        iris_versions: dict[str, str], deployment_name: str, no_controller: None) -> None:
    name, client = deployment_name, get_deploy_client("dockerhost")
    # p99 from a few hundred requests on two loaded cores is noisy: the latency bound is
    # loosened here, and judged on synthetic histograms in tests/test_canary_verdict.py
    url = client.create_deployment(name, iris_versions["v1"], config={
        "rollout": "canary", "canary_traffic": "30", "canary_window": "20",
        "canary_min_requests": "50", "canary_max_latency_ratio": "3"})["endpoint"]
    with SteadyLoad(url, BODY, clients=4) as load:
        load.wait_for(50)
        client.update_deployment(name, iris_versions["v2"])
        started = time.monotonic()
        watched = until_get(client, name, lambda d: d.get("canary", {}).get("judged", {}).get(
            "figures"), "the controller's figures", 60)
        until_get(client, name, lambda d: "canary" not in d, "the canary promoted", 180)
        took = time.monotonic() - started
        load.wait_for(load.sent + 50)
    ended = until_get(client, name, lambda d: "last_canary" in d, "the verdict recorded", 30)
    print(f"measured: good canary promoted {took:.1f} s after it served (window 20 s); "
          f"{load.sent} requests, {load.lost} lost; verdict: {ended.get('last_canary')}")
    assert load.lost == 0, load.failures[:3]
    assert watched["canary"]["judged"]["state"] == "watching"
    assert ended["last_canary"]["state"] == "promoted", ended
    assert ended["model_version"] == "2" and ended["models_served"] == {iris_versions["v2"]: 1}
    assert took >= 20
    client.delete_deployment(name)
