"""Our server against the scoring server of this interpreter's own MLflow version.

Run in a model-matrix virtualenv (tests/model_matrix.py), which holds that MLflow version and
the libraries of its time, with this checkout's ``serving_image`` on the path:

    python differential.py MODEL_DIR  ->  JSON: [{"case", "theirs": [status, body], "ours": ...}]

MLflow 2.x's scoring server is a Flask app (its test client), 3.x's a FastAPI one; ours runs in
Starlette's test client. The comparison itself is in tests/test_differential_versions.py.
"""

import json
import sys

import mlflow
import mlflow.pyfunc
from mlflow.pyfunc import scoring_server
from starlette.testclient import TestClient

from serving_image.app import create_app
from serving_image.settings import ServerSettings

COLUMNS = ["a", "b", "c", "d"]
ROW = [0.9, 0.1, 0.3, 0.7]
RECORD = {"a": 0.9, "b": 0.1, "c": 0.3, "d": 0.7}
CSV = "text/csv"


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


def _split(columns: list, data: list, **extra: object) -> bytes:
    return _j({"dataframe_split": {"columns": columns, "data": data}, **extra})


CORPUS = [
    ("split one row", _split(COLUMNS, [ROW]), "application/json"),
    ("split 50 rows", _split(COLUMNS, [ROW] * 50), "application/json"),
    ("split ints for doubles", _split(COLUMNS, [[1, 0, 0, 1]]), "application/json"),
    ("split columns reordered", _split(COLUMNS[::-1], [ROW[::-1]]), "application/json"),
    ("split with index", _j({"dataframe_split": {"columns": COLUMNS, "data": [ROW, ROW],
                                                 "index": [7, 3]}}), "application/json"),
    ("split missing column", _split(COLUMNS[:3], [ROW[:3]]), "application/json"),
    ("split extra column", _split([*COLUMNS, "x"], [[*ROW, 1.0]]), "application/json"),
    ("split null value", _split(COLUMNS, [[None, 0.1, 0.3, 0.7]]), "application/json"),
    ("split string value", _split(COLUMNS, [["0.9", 0.1, 0.3, 0.7]]), "application/json"),
    ("split empty data", _split(COLUMNS, []), "application/json"),
    ("records", _j({"dataframe_records": [RECORD]}), "application/json"),
    ("records missing key", _j({"dataframe_records": [{"a": 1.0}]}), "application/json"),
    ("inputs as columns", _j({"inputs": {c: [v] for c, v in RECORD.items()}}),
     "application/json"),
    ("instances as records", _j({"instances": [RECORD]}), "application/json"),
    ("two formats", _j({"dataframe_split": {"columns": COLUMNS, "data": [ROW]},
                        "inputs": [ROW]}), "application/json"),
    ("no format key", _j({"data": [ROW]}), "application/json"),
    ("json list body", b"[1, 2, 3]", "application/json"),
    ("invalid json", b"{not json", "application/json"),
    ("csv", (",".join(COLUMNS) + "\n0.9,0.1,0.3,0.7\n").encode(), CSV),
    ("json with charset", _split(COLUMNS, [ROW]), "application/json; charset=utf-8"),
]


def _body(data: bytes) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


def main(model_path: str) -> None:
    model = mlflow.pyfunc.load_model(model_path)
    theirs = scoring_server.init(model)
    flask = hasattr(theirs, "test_client")
    their_client = theirs.test_client() if flask else TestClient(theirs,
                                                                 raise_server_exceptions=False)
    app = create_app(ServerSettings(model_path=model_path))
    results = []
    with TestClient(app) as ours:
        assert app.state.model_state.ready.wait(120)
        for name, body, content_type in CORPUS:
            headers = {"Content-Type": content_type}
            if flask:
                answer = their_client.post("/invocations", data=body, headers=headers)
                expected = [answer.status_code, _body(answer.get_data())]
            else:
                answer = their_client.post("/invocations", content=body, headers=headers)
                expected = [answer.status_code, _body(answer.content)]
            actual = ours.post("/invocations", content=body, headers=headers)
            results.append({"case": name, "theirs": expected,
                            "ours": [actual.status_code, _body(actual.content)]})
    print(json.dumps({"mlflow": mlflow.__version__, "results": results}))


if __name__ == "__main__":
    main(sys.argv[1])
