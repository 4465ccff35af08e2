"""The client's own rules, on an in-memory runtime (tests/helpers/fake_runtime.py): what an
update keeps, resets and rolls out, when it only scales, endpoints made and taken back, how
predictions are routed, and what is refused. No engine."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

from mlflow_docker_target import client as client_module
from tests.helpers.fake_runtime import installed, recorded

MODEL = "runs:/0123456789abcdef/model"
OTHER_MODEL = "runs:/fedcba9876543210/model"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    with installed(monkeypatch) as pair:
        yield pair


def _code(exc: pytest.ExceptionInfo[MlflowException]) -> str:
    return ErrorCode.Name(exc.value.error_code) if isinstance(exc.value.error_code, int) \
        else str(exc.value.error_code)


def test_update_builds_on_what_was_recorded_and_empty_values_reset(fake) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL, config={
        "workers": "2", "memory": "1g", "env.GREETING": "hi", "auth_token": "s3cret"})
    client.update_deployment("d", config={"memory": "", "env.GREETING": "", "log_level": "debug"})
    version, current = runtime.called("roll_out")[-1]
    assert current.name == "d"
    assert dict(version.config) == {"workers": "2", "auth_token": "s3cret", "log_level": "debug"}
    settings = version.settings
    assert (settings.workers, settings.memory, settings.env) == (2, None, {})
    assert settings.auth_token == "s3cret"  # restored from the server's environment
    assert recorded(runtime.find("d"))["auth_token"] == "***"  # never in a label


def test_an_update_of_replicas_alone_scales_without_a_build(fake) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL)
    answer = client.update_deployment("d", config={"replicas": "3"})
    assert answer["replicas"] == "3/3" and answer["flavor"] == "python_function"
    assert len(runtime.called("scale")) == 1
    assert len(runtime.called("build")) == len(runtime.called("roll_out")) == 1  # create's
    client.update_deployment("d", config={"replicas": "3"})  # unchanged: a rollout, as asked
    client.update_deployment("d", config={"replicas": "1", "workers": "2"})  # more than replicas
    assert len(runtime.called("scale")) == 1
    assert len(runtime.called("roll_out")) == 3


def test_a_change_of_the_front_limits_alone_keeps_the_replicas(fake) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL, config={"rate_limit": "50"})
    answer = client.update_deployment("d", config={"rate_limit": "", "max_connections": "4"})
    version, _ = runtime.called("scale")[-1]
    assert (version.settings.rate_limit, version.settings.max_connections) == (None, 4)
    assert answer["config"] == {"max_connections": "4"}
    assert len(runtime.called("roll_out")) == 1  # create's


def test_update_endpoint_changes_the_limits_given_and_keeps_the_rest(fake) -> None:
    client, runtime = fake
    client.create_endpoint("ep", config={"rate_limit": "50", "trusted_proxies": "10.1.2.3"})
    client.create_deployment("e1", MODEL, endpoint="ep")
    client.update_endpoint("ep", config={"traffic": "e1:100"})
    client.update_endpoint("ep", config={"max_connections": "8", "rate_limit": ""})
    name, traffic, limits = runtime.called("reconfigure")[-1]
    assert (name, traffic) == ("ep", {"e1": 100})  # the split stays
    assert (limits.rate_limit, limits.trusted_proxies, limits.max_connections) == (
        None, ("10.1.2.3/32",), 8)
    assert client.get_endpoint("ep")["limits"] == {"trusted_proxies": ["10.1.2.3/32"],
                                                   "max_connections": 8}


def test_a_new_model_rolls_out_and_the_old_image_goes(fake) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL)
    old = runtime.find("d").replicas[0].image
    client.update_deployment("d", model_uri=OTHER_MODEL)
    new = runtime.find("d")
    assert new.model.uri == OTHER_MODEL and new.replicas[0].image != old
    assert runtime.called("remove_images")[-1] == {old}
    assert old not in runtime.images


def test_a_failed_rollout_keeps_the_current_version_and_drops_the_new_image(fake) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL)
    before = runtime.find("d")
    runtime.fail.add("roll_out")
    with pytest.raises(MlflowException, match="roll_out failed"):
        client.update_deployment("d", model_uri=OTHER_MODEL)
    assert runtime.find("d") == before
    new_image = f"mlflow-dockerhost/d:{runtime.builds}"
    assert runtime.called("remove_images")[-1] == {new_image}
    assert before.replicas[0].image in runtime.images


def test_create_on_a_missing_endpoint_makes_it_with_endpoint_port(fake) -> None:
    client, runtime = fake
    answer = client.create_deployment("v1", MODEL, endpoint="fraud",
                                      config={"endpoint_port": "8080"})
    settings, makes_front = runtime.called("prepare")[0]
    assert settings.port == 8080 and makes_front
    assert runtime.endpoint("fraud").port == 8080
    assert answer["endpoint_name"] == "fraud" and answer["endpoint"] == "http://fake:8080"
    client.create_deployment("v2", MODEL, endpoint="fraud")  # the endpoint exists now
    assert len(runtime.called("create_endpoint")) == 1
    assert runtime.called("prepare")[-1][1] is False  # makes no front


def test_an_endpoint_made_for_a_failed_create_is_taken_back(fake) -> None:
    client, runtime = fake
    runtime.fail.add("roll_out")
    with pytest.raises(MlflowException, match="roll_out failed"):
        client.create_deployment("v1", MODEL, endpoint="fraud", config={"endpoint_port": "8080"})
    assert runtime.endpoint("fraud") is None
    assert runtime.called("remove_endpoint") == ["fraud"]
    assert runtime.images == set()  # the image built for it went too


def test_an_endpoint_that_existed_stays_when_a_create_on_it_fails(fake) -> None:
    client, runtime = fake
    client.create_endpoint("fraud", config={"port": "8080"})
    runtime.fail.add("build")
    with pytest.raises(MlflowException, match="build failed"):
        client.create_deployment("v1", MODEL, endpoint="fraud")
    assert runtime.endpoint("fraud") is not None and runtime.called("remove_endpoint") == []


def test_predictions_are_routed_by_name_through_the_front(fake, monkeypatch) -> None:
    client, _ = fake
    sent: list[tuple[str, Any, Any, Any]] = []
    monkeypatch.setattr(client_module, "invoke",
                        lambda url, inputs, token=None, headers=None: sent.append(
                            (url, inputs, token, headers)) or {"predictions": [1]})
    client.create_deployment("v1", MODEL, endpoint="fraud",
                             config={"endpoint_port": "8080", "auth_token": "t"})
    client.create_deployment("v2", MODEL, endpoint="fraud", config={"auth_token": "t"})
    client.create_deployment("alone", MODEL, config={"port": "9000"})
    client.predict("v2", {"inputs": [1]})
    client.predict(None, {"inputs": [1]}, endpoint="fraud")
    client.predict("alone", {"inputs": [1]})
    assert sent == [
        ("http://fake:8080", {"inputs": [1]}, "t", {"x-mlflow-deployment": "v2"}),
        ("http://fake:8080", {"inputs": [1]}, "t", {}),  # the endpoint's split decides
        ("http://fake:9000", {"inputs": [1]}, None, {"x-mlflow-deployment": "alone"}),
    ]
    client.update_deployment("v2", config={"auth_token": "other"})
    client.predict(None, {"inputs": [1]}, endpoint="fraud")
    assert sent[-1][2] is None  # no one token for the whole endpoint: none is sent
    with pytest.raises(MlflowException, match="needs a deployment name or an endpoint"):
        client.predict(None, {"inputs": [1]})
    with pytest.raises(MlflowException, match="is on endpoint 'fraud', not on endpoint 'x'"):
        client.predict("v1", {"inputs": [1]}, endpoint="x")


def test_one_writer_per_name(fake) -> None:
    client, runtime = fake
    runtime.held.add("deployment:busy")
    with pytest.raises(MlflowException, match="being changed by another client") as refused:
        client.create_deployment("busy", MODEL)
    assert _code(refused) == "RESOURCE_ALREADY_EXISTS" and runtime.called("build") == []
    client.create_deployment("d", MODEL)
    with pytest.raises(MlflowException, match="already exists") as twice:
        client.create_deployment("d", MODEL)
    assert _code(twice) == "RESOURCE_ALREADY_EXISTS"
    assert [doing for (key, doing, wait) in runtime.called("lease")] == ["create"] * 3
    runtime.held.add("deployment:d")
    with pytest.raises(MlflowException, match="another client") as busy:
        client.update_deployment("d", config={"replicas": "2"})
    assert _code(busy) == "INVALID_STATE"
    runtime.held.clear()
    client.create_endpoint("ep", config={"port": "8081"})
    client.create_deployment("e1", MODEL, endpoint="ep")
    client.update_endpoint("ep", config={"traffic": "e1:100"})
    assert runtime.called("lease")[-1] == ("endpoint:ep", "update", 60)  # it waits its turn


@pytest.mark.parametrize(("call", "says"), [
    (lambda c: c.update_deployment("d", config={"port": "9999"}), "keeps its ports"),
    (lambda c: c.update_deployment("d", config={"runtime": "other"}),
     "runs on runtime 'fake' and stays there"),
    (lambda c: c.update_deployment("d", config={"runtime": "k8s"}), "Invalid value 'k8s'"),
    (lambda c: c.update_deployment("d", config={"nope": "1"}), "Unknown config key 'nope'"),
    (lambda c: c.update_deployment("missing"), "No deployment named 'missing'"),
    (lambda c: c.update_deployment("d", endpoint="ep"), "not on endpoint 'ep'"),
    (lambda c: c.create_deployment("x", MODEL, config={"endpoint_port": "1"}),
     "endpoint_port applies only with --endpoint"),
    (lambda c: c.create_deployment("x", MODEL, endpoint="ep", config={"port": "1"}),
     "The port belongs to endpoint"),
    (lambda c: c.create_deployment("bad name", MODEL), "Invalid deployment name"),
    (lambda c: c.update_endpoint("ep", config={"traffic": "d:100"}), "Not on endpoint 'ep'"),
    (lambda c: c.update_endpoint("ep", config={}), "give -C traffic="),
    (lambda c: c.create_deployment("x", MODEL, endpoint="ep", config={"rate_limit": "5"}),
     "update-endpoint -t dockerhost --endpoint ep -C rate_limit"),
    (lambda c: c.update_deployment("e1", config={"max_connections": "5"}),
     "belongs to endpoint 'ep'"),
    (lambda c: c.update_endpoint("ep", config={"trusted_proxies": "10.0.0.0/99"}),
     "Invalid value '10.0.0.0/99' for config key 'trusted_proxies'"),
    (lambda c: c.delete_endpoint("ep"), "still has deployments: e1"),
    (lambda c: c.create_endpoint("ep"), "already exists"),
    (lambda c: c.create_endpoint("new", config={"runtime": "other"}), "other is not here"),
])
def test_refusals_change_nothing(fake, call, says) -> None:
    """Each refusal comes before anything changes: no build, rollout or removal."""
    client, runtime = fake
    client.create_deployment("d", MODEL, config={"port": "9000"})
    client.create_endpoint("ep", config={"port": "8081"})
    client.create_deployment("e1", MODEL, endpoint="ep")
    before = (dict(runtime.deployments_), dict(runtime.endpoints_), set(runtime.images))
    calls = len(runtime.calls)
    with pytest.raises(MlflowException, match=says):
        call(client)
    assert (dict(runtime.deployments_), dict(runtime.endpoints_), set(runtime.images)) == before
    assert not [c for c, _ in runtime.calls[calls:] if c not in ("lease", "prepare")]


def test_delete_is_idempotent_and_takes_the_image_only_when_asked(fake) -> None:
    client, runtime = fake
    assert client.delete_deployment("missing") is None
    client.create_deployment("d", MODEL)
    image = runtime.find("d").replicas[0].image
    client.delete_deployment("d", config={"remove_image": "false"})
    assert runtime.find("d") is None and image in runtime.images
    client.create_deployment("d", MODEL)
    client.delete_deployment("d")  # the image goes by default
    assert runtime.called("remove_images")[-1] == {f"mlflow-dockerhost/d:{runtime.builds}"}
    assert client.list_deployments() == []


def test_keys_of_following_that_conflict_fail_before_anything_is_built(fake) -> None:
    client, runtime = fake
    with pytest.raises(MlflowException, match="names none"):
        client.create_deployment("d", MODEL, config={"follow_alias": "true"})
    client.create_deployment("d", MODEL)
    with pytest.raises(MlflowException, match="applies only to a deployment that follows"):
        client.update_deployment("d", config={"follow_interval": "5"})
    with pytest.raises(MlflowException, match="names none"):
        client.update_deployment("d", config={"follow_alias": "true"})
    assert len(runtime.called("build")) == len(runtime.called("roll_out")) == 1  # create's


def test_a_canary_starts_beside_the_current_version_and_is_ended_alone(fake) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL, config={"rollout": "canary"})  # nothing to compare
    assert "canary" not in client.get_deployment("d")
    first = runtime.find("d").replicas[0].image
    started = client.update_deployment("d", OTHER_MODEL, config={"canary_traffic": "20"})
    assert started["canary"]["traffic"] == {"current": 80, "canary": 20}
    assert started["model_uri"] == MODEL and started["canary"]["model_uri"] == OTHER_MODEL
    assert first in runtime.images  # it serves on
    second = runtime.find("d").canary.replicas[0].image
    for refused, says in (({"replicas": "2"}, "has a canary"),
                          ({"canary": "promote", "replicas": "2"}, "given alone")):
        with pytest.raises(MlflowException, match=says):
            client.update_deployment("d", config=refused)
    with pytest.raises(MlflowException, match="given alone"):
        client.update_deployment("d", MODEL, config={"canary": "abort"})
    promoted = client.update_deployment("d", config={"canary": "promote"})
    assert promoted["model_uri"] == OTHER_MODEL and "canary" not in promoted
    assert runtime.called("remove_images")[-1] == {first}
    assert recorded(runtime.find("d"))["rollout"] == "canary"  # later updates use it
    with pytest.raises(MlflowException, match="no canary to abort"):
        client.update_deployment("d", config={"canary": "abort"})

    client.update_deployment("d", MODEL)  # a canary again, aborted: its image goes
    third = runtime.find("d").canary.replicas[0].image
    aborted = client.update_deployment("d", config={"canary": "abort"})
    assert aborted["model_uri"] == OTHER_MODEL and "canary" not in aborted
    assert runtime.called("remove_images")[-1] == {third} and second in runtime.images


def test_keys_of_canaries_that_conflict_fail_before_anything_is_built(fake) -> None:
    client, runtime = fake
    with pytest.raises(MlflowException, match="give -C rollout=canary with"):
        client.create_deployment("d", MODEL, config={"canary_traffic": "20"})
    for wrong in ("0", "51", "ten"):
        with pytest.raises(MlflowException, match="an integer percent 1-50"):
            client.create_deployment("d", MODEL, config={"rollout": "canary",
                                                         "canary_traffic": wrong})
    with pytest.raises(MlflowException, match="does not apply to create"):
        client.create_deployment("d", MODEL, config={"canary": "promote"})
    assert runtime.called("build") == []
    with pytest.raises(MlflowException, match="canary_min_requests, canary_window describe"):
        client.create_deployment("d", MODEL, config={"canary_window": "60",
                                                     "canary_min_requests": "10"})
    assert runtime.called("build") == []
    # the controller judges canaries: it starts with the first deployment that needs it
    client.create_deployment("d", MODEL, config={"rollout": "canary", "canary_traffic": "20",
                                                 "canary_window": "60"})
    assert runtime.called("controller_ensure") == [None]
    client.update_deployment("d", config={"rollout": "rolling"})  # its keys go with it
    assert not {"canary_traffic", "canary_window"} & set(recorded(runtime.find("d")))
    assert runtime.called("controller_release") == [False]  # no deployment needs it
    with pytest.raises(MlflowException, match="give -C rollout=canary with"):
        client.update_deployment("d", config={"canary_traffic": "20"})
