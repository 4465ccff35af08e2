"""The differential suite against older MLflow versions' own scoring servers.

tests/test_differential.py compares ours with MLflow 3.17's server in this virtualenv; here the
comparison runs inside a model-matrix virtualenv (tests/model_matrix.py) holding an older MLflow
and the libraries of its time, on models that version saved (tests/matrix/differential.py).
MLflow 2.16's server is a Flask app that hands its scoring function text; 2.22's a FastAPI one
that hands it bytes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.model_matrix import ROOT, saved, serving_venv

pytestmark = pytest.mark.venv  # each MLflow version in a virtualenv of its own

CASES = [pytest.param("2.16.2", "sklearn"), pytest.param("2.16.2", "pyfunc"),
         pytest.param("2.22.1", "sklearn", marks=pytest.mark.slow),
         pytest.param("2.22.1", "pyfunc", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("version", "flavor"), CASES)
def test_same_answers_as_the_models_own_mlflow(version: str, flavor: str) -> None:
    model = saved(version, flavor)
    python = serving_venv(version) / "bin" / "python"
    out = subprocess.run([str(python), str(ROOT / "tests" / "matrix" / "differential.py"),
                          str(model.path)], capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".state"),
                              "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout)
    assert found["mlflow"] == version
    different = [r for r in found["results"] if r["theirs"] != r["ours"]]
    assert different == []
    assert len(found["results"]) == 20
    assert {r["theirs"][0] for r in found["results"]} == {200, 400}  # answers and refusals
