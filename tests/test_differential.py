"""Differential suite: MLflow's own scoring server and ours answer the same corpus alike.

Both run in-process on the same loaded model. For every request the status must match, and
the body too: predictions exactly, errors by ``error_code`` and ``message``. Where MLflow answers
plain text or crashes, ours answers a JSON error; those cases say so in ``CORPUS``. When a
difference turns up, add the request here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.helpers.models import IRIS_COLS, MIXED_COLS, REFERENCE_MODELS, ROW

JSON = "application/json"
CSV = "text/csv"


@dataclass(frozen=True)
class Case:
    model: str
    name: str
    body: bytes
    content_type: str | None = JSON
    ours: int | None = None  # our status where MLflow answers plain text or crashes


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


def _split(columns: list, data: list, **extra: object) -> bytes:
    return _j({"dataframe_split": {"columns": columns, "data": data}, **extra})


def _record(columns: list, row: list) -> dict:
    return dict(zip(columns, row, strict=True))


CORPUS = [
    # iris: named double columns (the fast path's case, and every way out of it)
    Case("iris", "split one row", _split(IRIS_COLS, [ROW])),
    Case("iris", "split 100 rows", _split(IRIS_COLS, [ROW] * 100)),
    Case("iris", "split ints for doubles", _split(IRIS_COLS, [[5, 3, 1, 0]])),
    Case("iris", "split columns reordered", _split(IRIS_COLS[::-1], [ROW[::-1]])),
    Case("iris", "split with index", _j({"dataframe_split": {
        "columns": IRIS_COLS, "data": [ROW, ROW], "index": [0, 1]}})),
    Case("iris", "split with odd index", _j({"dataframe_split": {
        "columns": IRIS_COLS, "data": [ROW, ROW], "index": [7, 3]}})),
    Case("iris", "split missing column", _split(IRIS_COLS[:3], [ROW[:3]])),
    Case("iris", "split extra column", _split([*IRIS_COLS, "x"], [[*ROW, 1.0]])),
    Case("iris", "split duplicate column", _split([*IRIS_COLS[:3], IRIS_COLS[0]], [ROW])),
    Case("iris", "split null value", _split(IRIS_COLS, [[None, 3.5, 1.4, 0.2]])),
    Case("iris", "split string value", _split(IRIS_COLS, [["5.1", 3.5, 1.4, 0.2]])),
    Case("iris", "split bool value", _split(IRIS_COLS, [[True, 3.5, 1.4, 0.2]])),
    Case("iris", "split ragged rows", _split(IRIS_COLS, [ROW, ROW[:2]])),
    Case("iris", "split nested value", _split(IRIS_COLS, [[[5.1], 3.5, 1.4, 0.2]])),
    Case("iris", "split empty data", _split(IRIS_COLS, [])),
    Case("iris", "split huge int", _split(IRIS_COLS, [[10**30, 3.5, 1.4, 0.2]])),
    Case("iris", "split NaN literal", b'{"dataframe_split": {"columns": '
         + _j(IRIS_COLS) + b', "data": [[NaN, 3.5, 1.4, 0.2]]}}'),
    Case("iris", "split Infinity literal", b'{"dataframe_split": {"columns": '
         + _j(IRIS_COLS) + b', "data": [[-Infinity, 3.5, 1.4, 0.2]]}}'),
    Case("iris", "split number beyond double range", b'{"dataframe_split": {"columns": '
         + _j(IRIS_COLS) + b', "data": [[1e999, 3.5, 1.4, 0.2]]}}'),
    Case("iris", "records", _j({"dataframe_records": [_record(IRIS_COLS, ROW)]})),
    Case("iris", "records missing key", _j({"dataframe_records": [{"sepal length (cm)": 1.0}]})),
    Case("iris", "inputs as columns", _j({"inputs": {c: [v] for c, v in _record(IRIS_COLS, ROW)
                                                      .items()}})),
    Case("iris", "instances as records", _j({"instances": [_record(IRIS_COLS, ROW)]})),
    Case("iris", "two formats", _j({"dataframe_split": {"columns": IRIS_COLS, "data": [ROW]},
                                    "inputs": [ROW]})),
    Case("iris", "no format key", _j({"data": [ROW]})),
    Case("iris", "params to a model without params",
         _split(IRIS_COLS, [ROW], params={"k": 1})),
    Case("iris", "json list body", b"[1, 2, 3]"),
    Case("iris", "invalid json", b"{not json"),
    Case("iris", "empty body", b""),
    Case("iris", "csv", (",".join(IRIS_COLS) + "\n5.1,3.5,1.4,0.2\n").encode(), CSV),
    Case("iris", "csv with charset", (",".join(IRIS_COLS) + "\n5.1,3.5,1.4,0.2\n").encode(),
         "text/csv; charset=utf-8"),
    Case("iris", "json with charset", _split(IRIS_COLS, [ROW]), "application/json; charset=utf-8"),
    Case("iris", "json with upper-case charset", _split(IRIS_COLS, [ROW]),
         "application/json; charset=UTF-8"),
    Case("iris", "latin-1 charset", _split(IRIS_COLS, [ROW]), "application/json; charset=latin-1",
         ours=415),
    Case("iris", "pandas-split format parameter", _split(IRIS_COLS, [ROW]),
         "application/json; format=pandas-split", ours=415),
    Case("iris", "unsupported content type", b"x", "text/plain", ours=415),
    Case("iris", "missing content type", _split(IRIS_COLS, [ROW]), None, ours=415),
    # mixed: string, long, double and boolean columns, with params
    Case("mixed", "split", _split(MIXED_COLS, [["paris", 2, 1.5, True], ["rome", 1, 0.25, False]])),
    Case("mixed", "split with params", _split(MIXED_COLS, [["paris", 2, 1.5, True]],
                                              params={"scale": 2.0, "suffix": "!"})),
    Case("mixed", "unknown param", _split(MIXED_COLS, [["paris", 2, 1.5, True]],
                                          params={"nope": 1})),
    Case("mixed", "bad param type", _split(MIXED_COLS, [["paris", 2, 1.5, True]],
                                           params={"scale": "x"})),
    Case("mixed", "float for long", _split(MIXED_COLS, [["paris", 2.5, 1.5, True]])),
    Case("mixed", "string for bool", _split(MIXED_COLS, [["paris", 2, 1.5, "yes"]])),
    Case("mixed", "null string", _split(MIXED_COLS, [[None, 2, 1.5, True]])),
    Case("mixed", "records", _j({"dataframe_records": [_record(MIXED_COLS,
                                                               ["oslo", 3, 2.0, False])]})),
    Case("mixed", "csv", b"city,count,amount,active\nparis,2,1.5,true\n", CSV),
    # tensor input
    Case("tensor", "inputs", _j({"inputs": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})),
    Case("tensor", "instances", _j({"instances": [[1.0, 2.0, 3.0]]})),
    Case("tensor", "wrong shape", _j({"inputs": [[1.0, 2.0]]})),
    Case("tensor", "ints", _j({"inputs": [[1, 2, 3]]})),
    Case("tensor", "split", _split(["a", "b", "c"], [[1.0, 2.0, 3.0]])),
    # long and double columns (the fast path's mixed-type case)
    Case("long_double", "split", _split(["a", "b"], [[1, 0.5], [2, 1.5]])),
    Case("long_double", "split all ints", _split(["a", "b"], [[1, 2], [3, 4]])),
    Case("long_double", "float for long", _split(["a", "b"], [[1.5, 0.5]])),
    Case("long_double", "float with zero fraction for long", _split(["a", "b"], [[1.0, 0.5]])),
    Case("long_double", "records", _j({"dataframe_records": [{"a": 1, "b": 2.5}]})),
    # chat: MLflow 3's unified LLM input, answered without the "predictions" wrapper
    Case("chat", "messages", _j({"messages": [{"role": "user", "content": "hello there"}]})),
    Case("chat", "messages with chat params", _j({
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hi"}], "temperature": 0.5,
        "max_tokens": 20})),
    Case("chat", "messages, stream false", _j({"messages": [{"role": "user", "content": "a"}],
                                                "stream": False})),
    Case("chat", "message without a role", _j({"messages": [{"content": "x"}]})),
    Case("chat", "prompt to a chat model", _j({"prompt": "x"})),
    Case("chat", "messages not a list", _j({"messages": "hello"})),
    # a custom pyfunc with a params schema, whose predict answers a list: in the unified LLM
    # input, the schema's params are top-level keys, and the answer is the bare list
    Case("streamer", "prompt with a param", _j({"prompt": "hi", "count": 2})),
    Case("streamer", "prompt with nested params", _j({"prompt": "hi", "params": {"count": 2}})),
    Case("streamer", "inputs with params", _j({"inputs": {"prompt": ["hi"]},
                                               "params": {"count": 2}})),
    # agents (tests/helpers/agents.py): non-streamed GenAI requests answer as MLflow's do
    Case("responses_agent", "input items", _j({"input": [{"role": "user", "content": "hi"}]})),
    Case("responses_agent", "input with params", _j({
        "input": [{"role": "user", "content": "hi"}], "temperature": 0.5,
        "max_output_tokens": 9, "custom_inputs": {"k": 1}})),
    Case("responses_agent", "input as a string", _j({"input": "hi"})),
    Case("responses_agent", "agent raises", _j({"input": [{"role": "user",
                                                           "content": "fail"}]})),
    Case("chat_agent", "messages", _j({"messages": [{"role": "user", "content": "hi"}],
                                       "custom_inputs": {"k": 1}})),
    Case("chat_agent", "agent raises", _j({"messages": [{"role": "user", "content": "fail"}]})),
]


def _post(client: TestClient, case: Case):
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    return client.post("/invocations", content=case.body, headers=headers)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.model}: {c.name}")
def test_same_answer_as_mlflow(reference_servers, case: Case) -> None:
    theirs, ours = reference_servers[case.model]
    expected, actual = _post(theirs, case), _post(ours, case)
    body = actual.json()  # ours is always JSON
    if case.ours is not None:
        assert actual.status_code == case.ours
        assert set(body) >= {"error_code", "message"}
        assert expected.status_code != 200
        return
    assert actual.status_code == expected.status_code, (expected.text, actual.text)
    reference = expected.json()
    if expected.status_code == 200:
        assert body == reference
    else:
        assert body["error_code"] == reference["error_code"]
        assert body["message"] == reference["message"]


def test_fast_path_serves_the_common_case(reference_servers) -> None:
    _, ours = reference_servers["iris"]
    fast_path = ours.app.state.model_state.fast_path
    assert fast_path is not None
    assert fast_path.prepare(JSON, _split(IRIS_COLS, [ROW])) is not None
    assert fast_path.prepare(JSON, _split(IRIS_COLS, [ROW], params={"k": 1})) is None
    assert reference_servers["mixed"][1].app.state.model_state.fast_path is None  # has params


def test_corpus_covers_every_format_and_model() -> None:
    bodies = b" ".join(case.body for case in CORPUS)
    for key in (b"dataframe_split", b"dataframe_records", b"instances", b"inputs", b"params"):
        assert key in bodies
    assert {case.content_type for case in CORPUS} >= {JSON, CSV, None}
    assert {case.model for case in CORPUS} == set(REFERENCE_MODELS)


def test_a_chat_stream_yields_what_predict_stream_yields(reference_servers) -> None:
    """Streamed, the chunks are exactly the model's own predict_stream output, as dicts."""
    _, ours = reference_servers["chat"]
    model = ours.app.state.model_state.model
    request = {"messages": [{"role": "user", "content": "one two three"}]}
    expected = [json.loads(json.dumps(chunk)) for chunk in model.predict_stream(request)]
    answer = ours.post("/invocations", json={**request, "stream": True})
    assert answer.status_code == 200
    lines = [line for line in answer.text.splitlines() if line]
    assert lines[-1] == "data: [DONE]"
    assert [json.loads(line[len("data: "):]) for line in lines[:-1]] == expected
    assert len(expected) == 3
