"""Streaming and the Open Inference Protocol on a real engine, through the endpoint's front."""

from __future__ import annotations

import time

import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from tests.helpers.models import (
    IRIS_INPUT,
    STREAMING_MODEL,
    STREAMING_SIGNATURE,
    register_code_model,
)

V2_BODY = {"inputs": [
    {"name": column, "shape": [len(IRIS_INPUT["data"])], "datatype": "FP64",
     "data": [row[i] for row in IRIS_INPUT["data"]]}
    for i, column in enumerate(IRIS_INPUT["columns"])]}


@pytest.fixture(scope="module")
def streaming_model(iris_versions, tmp_path_factory) -> str:
    return register_code_model(STREAMING_MODEL, "streamer", iris_versions["v1"],
                               tmp_path_factory.mktemp("streamer"), STREAMING_SIGNATURE)


def test_chunks_stream_through_the_front(streaming_model, deployment_name) -> None:
    """The front passes each chunk on as the model yields it, not buffered to the end."""
    client = get_deploy_client("dockerhost")
    client.create_deployment(deployment_name, streaming_model,
                             config={"workers": "1", "request_timeout": "5"})
    started = time.monotonic()
    chunks = client.predict_stream(deployment_name, {"prompt": "hello", "delay": 0.4})
    first = next(chunks)
    took_first = time.monotonic() - started
    rest = list(chunks)
    took_all = time.monotonic() - started
    assert first == {"index": 0, "prompt": "hello"}
    assert [c["index"] for c in rest] == [1, 2, 3, 4]
    # 4 more chunks 0.4 s apart follow the first: buffered, they would all come at once
    assert took_all - took_first > 1.2 and took_all > 1.6, (took_first, took_all)
    with pytest.raises(MlflowException, match="failed at chunk 2"):
        list(client.predict_stream(deployment_name, {"prompt": "x", "fail_at": 2,
                                                     "delay": 0}))


def test_v2_by_deployment_and_by_endpoint_name(iris_versions, endpoint_name,
                                               deployment_name) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       endpoint=endpoint_name,
                                       config={"auth_token": "v2-token"})
    url, token = created["endpoint"], {"Authorization": "Bearer v2-token"}
    for probe in ("/v2/health/live", "/v2/health/ready"):  # open, as orchestrators probe
        assert requests.get(url + probe, timeout=30).status_code == 200
    assert requests.post(f"{url}/v2/models/{deployment_name}/infer", json=V2_BODY,
                         timeout=30).status_code == 401
    for name in (deployment_name, endpoint_name):
        answer = requests.post(f"{url}/v2/models/{name}/infer", json=V2_BODY, headers={
            **token, "x-mlflow-deployment": deployment_name}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_name"] == name
        assert answer.json()["outputs"][0]["data"] == [0, 2, 1]
    metadata = requests.get(f"{url}/v2/models/{endpoint_name}/versions/1", headers=token,
                            timeout=30).json()
    assert [i["name"] for i in metadata["inputs"]] == IRIS_INPUT["columns"]
    missing = requests.get(f"{url}/v2/models/nope", headers=token, timeout=30)
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    client.delete_deployment(deployment_name)
    client.delete_endpoint(endpoint_name)
