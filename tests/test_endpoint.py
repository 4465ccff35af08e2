"""The client side of the scoring protocol: payloads and server errors."""

import http.server
import io
import json
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.scoring_client import invoke, payload


def test_dataframe_goes_as_dataframe_split() -> None:
    frame = pd.DataFrame({"a": [1.0, None], "b": ["x", "y"]})
    assert payload(frame) == {"dataframe_split": {
        "columns": ["a", "b"], "index": [0, 1], "data": [[1.0, "x"], [None, "y"]]}}


def test_arrays_lists_and_dicts_go_as_inputs() -> None:
    assert payload([[1, 2]]) == {"inputs": [[1, 2]]}
    array = np.zeros((2, 2))
    assert payload(array)["inputs"] is array
    columns = {"a": np.array([1, 2])}
    assert payload(columns) == {"inputs": columns}


def test_protocol_dict_is_sent_as_is() -> None:
    body = {"dataframe_records": [{"a": 1}], "params": {"k": 2}}
    assert payload(body) is body


def test_unknown_input_type() -> None:
    with pytest.raises(MlflowException, match="pandas DataFrame"):
        payload(object())


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("inputs") == ["bad"]:
            status, answer = 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "nope"}
        else:
            status, answer = 200, {"predictions": body["inputs"]}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_invoke_encodes_numpy_and_returns_predictions(server_url: str) -> None:
    response = invoke(server_url, {"x": np.array([1, 2]), "y": np.float32(0.5)})
    assert response["predictions"] == {"x": [1, 2], "y": 0.5}
    assert response.get_predictions().shape == (2, 2)


def test_server_error_becomes_mlflow_exception(server_url: str) -> None:
    with pytest.raises(MlflowException, match="answered 400: nope") as err:
        invoke(server_url, ["bad"])
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_unreachable_endpoint() -> None:
    with pytest.raises(MlflowException, match="Could not reach the deployment"):
        invoke("http://127.0.0.1:9", [[1]])


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
    {"dataframe_records": [{"a": 1, "b": 2}]},
    {"inputs": {"a": [1, 2], "b": [3, 4]}},
    {"inputs": [[1, 2], [3, 4]]},
    {"instances": [[1, 2]]},
    {"dataframe_split": {"columns": ["a"], "data": [[1]]}, "params": {"k": 1.5}},
])
def test_a_protocol_body_read_by_the_cli_is_sent_as_it_was(body: dict) -> None:
    """`mlflow deployments predict --input-path` reads the file with pandas.read_json: the
    curl body of the README must reach the server unchanged."""
    assert payload(pd.read_json(io.StringIO(json.dumps(body)))) == body


def test_a_column_named_inputs_is_still_a_column() -> None:
    frame = pd.DataFrame({"inputs": ["x", "y"]})
    assert payload(frame) == {"dataframe_split": {"columns": ["inputs"], "index": [0, 1],
                                                  "data": [["x"], ["y"]]}}
