"""Bad input never takes the server down, and it fails the way MLflow's own server does.

Hypothesis sends protocol-shaped and malformed bodies to both servers (in-process); ours must
answer every one with JSON and the same status as MLflow's. Failing inputs that hypothesis finds
go into the differential corpus (tests/test_differential.py) as regression cases.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.models import IRIS_COLS, MIXED_COLS

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False), st.text(max_size=5))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


def _split_bodies(columns: list[str]) -> st.SearchStrategy[dict]:
    names = st.lists(st.sampled_from([*columns, "x"]), min_size=0, max_size=len(columns) + 1)
    return names.flatmap(lambda cols: st.fixed_dictionaries({
        "dataframe_split": st.fixed_dictionaries({
            "columns": st.just(cols),
            "data": st.lists(st.lists(values, min_size=len(cols), max_size=len(cols)),
                             max_size=3)}),
    }, optional={"params": st.dictionaries(st.text(max_size=5), scalars, max_size=2)}))


def _records(columns: list[str]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"dataframe_records": st.lists(
        st.dictionaries(st.sampled_from([*columns, "x"]), values, max_size=len(columns) + 1),
        max_size=3)})


anything = st.one_of(
    st.dictionaries(st.sampled_from(["dataframe_split", "dataframe_records", "inputs",
                                     "instances", "params", "data"]), values, max_size=3),
    values,
)


def _check(reference_servers, model: str, body: bytes) -> None:
    theirs, ours = reference_servers[model]
    headers = {"Content-Type": "application/json"}
    expected = theirs.post("/invocations", content=body, headers=headers)
    actual = ours.post("/invocations", content=body, headers=headers)  # raises if we crash
    assert actual.status_code == expected.status_code, (body, expected.text, actual.text)
    answer = actual.json()
    if actual.status_code != 200:
        assert set(answer) >= {"error_code", "message"}


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize(("model", "columns"), [("iris", IRIS_COLS), ("mixed", MIXED_COLS)])
def test_fuzz_protocol_shaped_bodies(reference_servers, model: str, columns: list[str]) -> None:
    @FUZZ
    @given(st.one_of(_split_bodies(columns), _records(columns), anything))
    def run(payload: object) -> None:
        _check(reference_servers, model, json.dumps(payload).encode())

    run()


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_raw_bytes(reference_servers, body: bytes) -> None:
    _check(reference_servers, "iris", body)
    assert reference_servers["iris"][1].get("/ping").status_code == 200
