"""The scoring server in-process: readiness, protocol and JSON errors."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving_image.app import create_app
from serving_image.settings import ServerSettings, available_cpus
from tests.helpers.models import HOST_ONLY

IRIS = {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                    "petal width (cm)"],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    path = tmp_path_factory.mktemp("model") / "iris"
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(features, target), path,
                              input_example=pd.DataFrame(features).head(2),
                              pip_requirements=HOST_ONLY)
    return path


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    settings = ServerSettings(model_path=str(model_dir), max_body_size=4096, model_name="iris",
                              model_version="3")
    app = create_app(settings)
    with TestClient(app) as test_client:
        assert app.state.model_state.ready.wait(120)
        yield test_client


def test_ping_health_version(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True}
    version = client.get("/version").json()
    assert version["model_name"] == "iris" and version["model_version"] == "3"
    assert version["mlflow"]


def test_not_ready_answers_503(model_dir: Path) -> None:
    app = create_app(ServerSettings(model_path=str(model_dir)))
    client = TestClient(app)  # no lifespan: the model never starts loading
    assert client.get("/ping").status_code == 503
    answer = client.post("/invocations", json={"dataframe_split": IRIS})
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("body", [
    {"dataframe_split": IRIS},
    {"dataframe_records": [dict(zip(IRIS["columns"], row, strict=True)) for row in IRIS["data"]]},
    {"inputs": {col: [row[i] for row in IRIS["data"]] for i, col in enumerate(IRIS["columns"])}},
])
def test_json_formats(client: TestClient, body: dict) -> None:
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [0, 2]}


def test_csv_with_charset(client: TestClient) -> None:
    csv = ",".join(IRIS["columns"]) + "\n" + "\n".join(",".join(map(str, r)) for r in IRIS["data"])
    answer = client.post("/invocations", content=csv,
                         headers={"Content-Type": "text/csv; charset=utf-8"})
    assert answer.json() == {"predictions": [0, 2]}


@pytest.mark.parametrize(("headers", "content", "status"), [
    ({}, b"{}", 415),
    ({"Content-Type": "text/plain"}, b"x", 415),
    ({"Content-Type": "application/json; format=pandas-split"}, b"{}", 415),
    ({"Content-Type": "application/json"}, b"[1, 2]", 400),
    ({"Content-Type": "application/json"}, b"{not json", 400),
    ({"Content-Type": "application/json"}, b'{"dataframe_split": {"columns": ["x"], '
                                           b'"data": [[1]]}}', 400),
    ({"Content-Type": "application/json"}, b"x" * 5000, 413),
])
def test_errors_are_json(client: TestClient, headers: dict, content: bytes, status: int) -> None:
    answer = client.post("/invocations", content=content, headers=headers)
    assert answer.status_code == status
    body = answer.json()
    assert set(body) >= {"error_code", "message"}


def test_available_cpus_is_positive() -> None:
    assert available_cpus() >= 1


def test_settings_round_trip_through_the_environment() -> None:
    settings = ServerSettings(model_path="/m", workers=3, request_timeout=5.0, access_log=False,
                              run_id="abc")
    assert ServerSettings.from_env(settings.to_env()) == settings


def test_metrics_count_requests_and_rows(client: TestClient) -> None:
    client.post("/invocations", json={"dataframe_split": IRIS})
    text = client.get("/metrics").text
    assert 'mlflow_server_requests_total{method="POST",route="/invocations",status="200"}' in text
    assert "mlflow_server_request_duration_seconds_bucket" in text
    assert "mlflow_server_requests_in_flight" in text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert float(samples["mlflow_server_rows_predicted_total"]) >= 2
    assert "mlflow_server_model_load_seconds" in text


def test_openapi_describes_the_signature(client: TestClient) -> None:
    body = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]["properties"]
    assert schema["dataframe_split"]["properties"]["columns"]["items"]["enum"] == IRIS["columns"]
    assert body["content"]["application/json"]["example"]["dataframe_split"]["columns"]
    answers = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]["responses"]
    assert {"200", "400", "413", "415", "503"} <= set(answers)
    assert "text/event-stream" in answers["200"]["content"]  # "stream": true
    assert client.get("/docs").status_code == 200


def test_openapi_describes_every_v2_route(client: TestClient) -> None:
    """Each V2 route the app serves is in the document, and nothing else under /v2."""
    from starlette.routing import Route

    paths = client.get("/openapi.json").json()["paths"]
    served = {route.path for route in client.app.routes
              if isinstance(route, Route) and route.path.startswith("/v2/")}
    assert served == {p for p in paths if p.startswith("/v2/")}
    assert len(served) == 8
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "inputs"]
    assert {"200", "400", "404", "504"} <= set(infer["responses"])


def test_openapi_before_the_model_loads(model_dir: Path) -> None:
    client = TestClient(create_app(ServerSettings(model_path=str(model_dir))))
    operation = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "text/csv"}
    assert client.get("/invocations").status_code == 405


def test_parquet_without_pyarrow_is_a_clean_415(client: TestClient, monkeypatch) -> None:
    import serving_image.scoring as scoring

    monkeypatch.setattr(scoring, "_has_pyarrow", lambda: False)
    answer = client.post("/invocations", content=b"PAR1",
                         headers={"Content-Type": "application/vnd.apache.parquet"})
    assert answer.status_code == 415
    assert "parquet=true" in answer.json()["message"]


OPENAI_PATHS = {"/responses", "/v1/responses", "/chat/completions", "/v1/chat/completions",
                "/models", "/v1/models"}


def test_bearer_token_guards_every_route_but_the_probes(model_dir: Path) -> None:
    """Every route the app has (read from the app, so a route added later is covered) answers
    401 without the token, except the health probes; with the token each answers."""
    app = create_app(ServerSettings(model_path=str(model_dir), auth_token="s3cret"))
    token = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as secured:
        assert app.state.model_state.ready.wait(120)
        routes = [(route.path, sorted(route.methods or {"GET"})[0])
                  for route in app.routes if hasattr(route, "methods")]
        routes += [("/static-offline-docs/swagger-ui.css", "GET"), ("/no/such/route", "GET")]
        assert {"/invocations", "/version", "/metrics", "/openapi.json", "/docs"} <= {
            path for path, _ in routes}
        for path, method in routes:
            path = path.replace("{path}", "swagger-ui.css").replace("{name}", "model")
            path = path.replace("{version}", "1")  # no such version: 404, after the token
            denied = secured.request(method, path)
            wrong = secured.request(method, path, headers={"Authorization": "Bearer nope"})
            if path in {"/ping", "/health", "/v2/health/live", "/v2/health/ready"}:
                assert denied.status_code == 200, path
                continue
            assert denied.status_code == wrong.status_code == 401, path
            refused = denied.json()  # OpenAI's shape on its routes, so its client raises
            code = (refused["error"]["code"].upper() if path in OPENAI_PATHS
                    else refused["error_code"])
            assert code == "UNAUTHENTICATED", path
            assert denied.headers["www-authenticate"] == "Bearer"
            if method == "GET" and path != "/no/such/route":
                expected = 404 if "/versions/" in path else 200
                assert secured.get(path, headers=token).status_code == expected, path
        assert {"/ping", "/health"} <= {path for path, _ in routes}
        allowed = secured.post("/invocations", json={"dataframe_split": IRIS}, headers=token)
        assert allowed.json() == {"predictions": [0, 2]}
        assert secured.get("/metrics", headers={"Authorization": "bearer s3cret"}).status_code \
            == 200  # the scheme is case-insensitive, as RFC 7235 says


def test_docs_load_swagger_ui_from_the_server(client: TestClient) -> None:
    """/docs works offline: every script and stylesheet it loads comes from this server."""
    import re

    page = client.get("/docs").text
    assets = re.findall(r"(?:src|href)=['\"]([^'\"]+\.(?:js|css))['\"]", page)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.content) > 10_000, asset
    assert "cdn" not in page.lower()
