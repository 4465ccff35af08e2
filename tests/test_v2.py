"""The Open Inference Protocol (V2): ours against MLServer's own MLflow runtime.

MLServer (``mlserver`` and ``mlserver-mlflow`` from PyPI, with the same MLflow, NumPy, pandas and
scikit-learn as ours) runs in its own virtualenv (``make test`` makes it in
``.state/mlserver-venv``) and serves the same model directories as ours. For every request the
status and the outputs must be equal; where MLServer fails with a bare 500 or FastAPI's 422,
ours answers a V2 error (``{"error": ...}``) with a 4xx, and the case says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from fastapi.testclient import TestClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from serving_image.app import create_app
from serving_image.settings import ServerSettings
from tests.helpers.ci import skip_or_fail
from tests.helpers.models import HOST_ONLY
from tests.helpers.servers import count_batches, free_port

MLSERVER_PYTHON = Path(os.environ.get(
    "MLSERVER_PYTHON", Path(__file__).parents[1] / ".state/mlserver-venv/bin/python")).absolute()

MIXED_MODEL = """
import mlflow
import pandas as pd


class Mixed(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        if (params or {}).get("label"):  # a string column out
            return pd.DataFrame({"label": model_input["city"].str.upper()})
        return pd.DataFrame({"score": model_input["amount"] * scale + model_input["count"],
                             "flag": ~model_input["active"]})


mlflow.models.set_model(Mixed())
"""
TENSOR_MODEL = """
import mlflow
import numpy as np


class Tensor(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input).sum(axis=-1)


mlflow.models.set_model(Tensor())
"""
WORDS_MODEL = """
import mlflow


class Words(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [str(text).upper() for text in model_input["text"]]


mlflow.models.set_model(Words())
"""


def _code_model(path: Path, code: str, signature: ModelSignature) -> None:
    source = path.parent / f"{path.name}.py"
    source.write_text(code)
    mlflow.pyfunc.save_model(path, python_model=str(source), signature=signature,
                             pip_requirements=HOST_ONLY)


def _iris(path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(features, target), path,
                              input_example=features.head(2), pip_requirements=HOST_ONLY)


def _regression(path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.5, 2.0]})
    mlflow.sklearn.save_model(LinearRegression().fit(frame, [0.5, 1.0, 2.5, 3.0]), path,
                              input_example=frame.head(1), pip_requirements=HOST_ONLY)


def _mixed(path: Path) -> None:
    _code_model(path, MIXED_MODEL, ModelSignature(
        inputs=Schema([ColSpec("string", "city"), ColSpec("long", "count"),
                       ColSpec("double", "amount"), ColSpec("boolean", "active")]),
        outputs=Schema([ColSpec("double", "score"), ColSpec("boolean", "flag")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0),
                            ParamSpec("label", "boolean", False)])))


def _tensor(path: Path) -> None:
    _code_model(path, TENSOR_MODEL, ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))]),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))])))


def _words(path: Path) -> None:
    # MLServer cannot load a model whose signature has no outputs: every one here has some
    _code_model(path, WORDS_MODEL, ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                                                  outputs=Schema([ColSpec("string")])))


MODELS = {"iris": _iris, "regression": _regression, "mixed": _mixed, "tensor": _tensor,
          "words": _words}
IRIS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _column(name: str, values: list, datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values, **extra}


def _iris_inputs(datatype: str = "FP64", shape: list[int] | None = None) -> list[dict]:
    return [{**_column(c, [r[i] for r in ROWS], datatype), **({"shape": shape} if shape else {})}
            for i, c in enumerate(IRIS)]


@dataclass(frozen=True)
class Case:
    model: str
    name: str
    body: Any
    path: str = "/infer"
    mlserver_fails: bool = False  # MLServer: a bare 500 or a 422; ours: a V2 error, 4xx
    ours_status: int = 200
    extra: dict[str, Any] = field(default_factory=dict)


CORPUS = [
    Case("iris", "columns, no content type", {"inputs": _iris_inputs()}),
    Case("iris", "columns as [N, 1]", {"inputs": _iris_inputs(shape=[2, 1])}),
    Case("iris", "pd named", {"inputs": _iris_inputs(), "parameters": {"content_type": "pd"}}),
    Case("iris", "FP32 columns", {"inputs": _iris_inputs("FP32")}),
    Case("iris", "INT64 for double columns", {"inputs": [_column(c, [5, 6], "INT64")
                                                         for c in IRIS]},
         mlserver_fails=True, ours_status=400),  # MLflow refuses int64 for double
    Case("iris", "np per input", {"inputs": [
        {**i, "parameters": {"content_type": "np"}} for i in _iris_inputs()]}),
    Case("iris", "a null in a column", {"inputs": [
        _column(IRIS[0], [None, 6.7]), *_iris_inputs()[1:]]},
         mlserver_fails=True, ours_status=500),  # the model itself refuses NaN
    Case("iris", "booleans in an FP64 column", {"inputs": [
        _column(IRIS[0], [True, False]), *_iris_inputs()[1:]]}),
    Case("iris", "a string in an FP64 column", {"inputs": [
        _column(IRIS[0], ["x", 6.7]), *_iris_inputs()[1:]]}, mlserver_fails=True,
         ours_status=400),
    Case("iris", "request id echoed", {"id": "req-7", "inputs": _iris_inputs()}),
    Case("iris", "versioned path", {"inputs": _iris_inputs()}, path="/versions/3/infer"),
    Case("iris", "wrong version", {"inputs": _iris_inputs()}, path="/versions/9/infer",
         ours_status=404),
    Case("iris", "missing column", {"inputs": _iris_inputs()[:3]}, mlserver_fails=True,
         ours_status=400),
    Case("iris", "np request with 4 inputs", {"inputs": _iris_inputs(),
                                              "parameters": {"content_type": "np"}},
         ours_status=400),
    Case("iris", "not JSON", "{bad", mlserver_fails=True, ours_status=400),
    Case("regression", "floats out", {"inputs": [_column("a", [0.5, 2.0]),
                                                 _column("b", [1.0, 0.0])]}),
    Case("mixed", "strings, longs, doubles, bools", {"inputs": [
        _column("city", ["paris", "rome"], "BYTES", parameters={"content_type": "str"}),
        _column("count", [2, 1], "INT64"), _column("amount", [1.5, 0.25]),
        _column("active", [True, False], "BOOL")]}),
    Case("mixed", "strings without content type", {"inputs": [
        _column("city", ["oslo"], "BYTES"), _column("count", [3], "INT64"),
        _column("amount", [2.0]), _column("active", [False], "BOOL")]}),
    Case("mixed", "params", {"inputs": [
        _column("city", ["oslo"], "BYTES"), _column("count", [3], "INT64"),
        _column("amount", [2.0]), _column("active", [False], "BOOL")],
        "parameters": {"scale": 3.0}}),
    # MLServer 1.7.1 cannot encode pandas 3's string columns (KeyError 'O' in to_datatype)
    Case("mixed", "a string column out", {"inputs": [
        _column("city", ["oslo"], "BYTES"), _column("count", [3], "INT64"),
        _column("amount", [2.0]), _column("active", [False], "BOOL")],
        "parameters": {"label": True}}, mlserver_fails=True),
    Case("tensor", "a tensor", {"inputs": [{"name": "input-0", "shape": [2, 3],
                                            "datatype": "FP64",
                                            "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}]}),
    Case("words", "strings out", {"inputs": [_column("text", ["a b", "c"], "BYTES")]}),
    Case("iris", "unknown model", {"inputs": _iris_inputs()}, ours_status=404,
         extra={"model": "nope"}),
]



class _Saved(dict):
    """Each model saved (as an MLServer model repository entry) the first time it is asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        (self.root / name).mkdir()
        MODELS[name](self.root / name / "model")
        (self.root / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": "./model", "version": "3"}}))
        self[name] = self.root / name / "model"
        return self[name]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> _Saved:
    return _Saved(tmp_path_factory.mktemp("v2models"))


@pytest.fixture(scope="module")
def mlserver(models: dict[str, Path]) -> Iterator[str]:
    if not MLSERVER_PYTHON.is_file():
        skip_or_fail(f"MLServer's virtualenv is missing ({MLSERVER_PYTHON}); `make test` makes it")
    for name in MODELS:  # MLServer loads the whole repository at start
        models[name]
    root = models.root
    port = free_port()
    # parallel_workers=0: MLServer's worker pool does not start under the uvloop it installs
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0}))
    log = (root / "mlserver.log").open("w")
    process = subprocess.Popen([str(MLSERVER_PYTHON.parent / "mlserver"), "start", str(root)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            try:
                if all(requests.get(f"{url}/v2/models/{m}/ready", timeout=2).status_code == 200
                       for m in models):
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, (root / "mlserver.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError("MLServer did not get ready")
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def ours(models: _Saved) -> Iterator[dict[str, TestClient]]:
    class Started(dict):
        def __missing__(self, name: str) -> TestClient:
            app = create_app(ServerSettings(model_path=str(models[name]), deployment=name,
                                            model_version="3"))
            client = TestClient(app)
            client.__enter__()
            assert app.state.model_state.ready.wait(120)
            self[name] = client
            return client

    clients = Started()
    yield clients
    for client in clients.values():
        client.__exit__(None, None, None)


def _send(post: Any, case: Case) -> tuple[int, Any]:
    name = case.extra.get("model", case.model)
    path = f"/v2/models/{name}{case.path}"
    body = case.body if isinstance(case.body, str) else json.dumps(case.body)
    answer = post(path, body)
    try:
        content = answer.json()
    except ValueError:
        content = answer.text
    if isinstance(content, dict):
        content.pop("id", None) if "id" not in (case.body if isinstance(case.body, dict)
                                                else {}) else None
    return answer.status_code, content


@pytest.mark.venv  # MLServer, in a virtualenv of its own
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.model}: {c.name}")
def test_same_answer_as_mlserver(mlserver: str, ours: dict[str, TestClient], case: Case) -> None:
    headers = {"Content-Type": "application/json"}
    theirs = _send(lambda p, b: requests.post(mlserver + p, data=b, headers=headers,
                                              timeout=30), case)
    mine = _send(lambda p, b: ours[case.model].post(p, content=b, headers=headers), case)
    assert mine[0] == case.ours_status, mine
    if case.mlserver_fails:
        assert theirs[0] in (422, 500), theirs
        assert isinstance(mine[1], dict)
        assert set(mine[1]) == {"error"} if mine[0] != 200 else mine[1]["outputs"]
        return
    assert theirs[0] == mine[0], (theirs, mine)
    if mine[0] != 200:
        assert set(mine[1]) == {"error"} and "error" in theirs[1]
        return
    assert mine[1] == theirs[1]


@pytest.mark.venv  # MLServer, in a virtualenv of its own
@pytest.mark.parametrize("model", list(MODELS))
def test_same_metadata_as_mlserver(mlserver: str, ours: dict[str, TestClient],
                                   model: str) -> None:
    theirs = requests.get(f"{mlserver}/v2/models/{model}", timeout=30).json()
    mine = ours[model].get(f"/v2/models/{model}").json()
    assert mine.pop("versions") == ["3"]  # MLServer lists none, though it has one
    theirs.pop("versions")
    assert mine == theirs


def test_health_and_readiness(ours: dict[str, TestClient]) -> None:
    client = ours["iris"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/iris/ready").status_code == 200
    assert client.get("/v2/models/iris/versions/3/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_v2_takes_the_fast_path_and_batches(models: dict[str, Path]) -> None:
    """A numeric pd request takes the fast path (no MLflow schema enforcement), batched like
    /invocations when batching is on; its answer is MLflow's own."""
    app = create_app(ServerSettings(model_path=str(models["iris"]), deployment="iris",
                                    batch_max_size=8))
    with TestClient(app) as client:
        state = app.state.model_state
        assert state.ready.wait(120) and state.fast_path is not None
        calls = count_batches(state.batcher)
        answer = client.post("/v2/models/iris/infer", json={"inputs": _iris_inputs()})
        assert answer.status_code == 200 and calls == [2]
        assert answer.json()["outputs"][0]["data"] == [0, 2]
        assert answer.headers["x-mlflow-deployment"] == "iris"


def test_v2_body_limit_time_limit_and_metrics(models: dict[str, Path]) -> None:
    """V2 answers are bounded like /invocations: the body limit (413) and the request time
    limit (504, through the sleepy model), as V2 errors; and /metrics counts them."""
    from tests.helpers.models import save_sleepy

    app = create_app(ServerSettings(model_path=str(models["iris"]), deployment="iris",
                                    max_body_size=200))
    with TestClient(app) as client:
        assert app.state.model_state.ready.wait(120)
        big = client.post("/v2/models/iris/infer", json={"inputs": _iris_inputs()})
        assert big.status_code == 413 and set(big.json()) == {"error"}
        metrics = client.get("/metrics").text
        assert 'route="/v2/models/{name}/infer"' in metrics and 'status="413"' in metrics
    sleepy = save_sleepy(models["iris"].parents[1] / "sleepy", models["iris"].parents[1],
                         with_params=False)
    app = create_app(ServerSettings(model_path=str(sleepy), deployment="sleepy",
                                    request_timeout=0.5))
    with TestClient(app) as client:
        assert app.state.model_state.ready.wait(120)
        started = time.monotonic()
        late = client.post("/v2/models/sleepy/infer", json={"inputs": [
            _column("x", [2.0])]})
        assert late.status_code == 504 and set(late.json()) == {"error"}
        assert time.monotonic() - started < 1.5
