"""Model URIs resolve to a concrete version through MLflow's registry and artifact APIs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_docker_target.image_build.model_fetch import check_flavor, fetch, resolve


@pytest.fixture(scope="module")
def versions(registry: str, iris_versions: dict[str, str]) -> dict[str, str]:
    return iris_versions


def test_version_alias_latest_and_stage(versions) -> None:
    assert resolve("models:/iris/1").resolved_uri == "models:/iris/1"
    champion = resolve("models:/iris@champion")
    assert (champion.resolved_uri, champion.version, champion.name) == ("models:/iris/2", "2",
                                                                        "iris")
    assert champion.run_id
    assert resolve("models:/iris/latest").version == "2"
    MlflowClient().transition_model_version_stage("iris", "1", "Production")
    assert resolve("models:/iris/Production").version == "1"


def test_runs_and_local_paths(versions, tmp_path: Path) -> None:
    run_id = resolve("models:/iris/1").run_id
    ref = resolve(f"runs:/{run_id}/model")
    assert ref.run_id == run_id
    fetched = fetch(ref, tmp_path / "a")
    assert (fetched.path / "MLmodel").is_file()
    assert fetched.python_version.startswith("3.")
    local = fetch(resolve(str(fetched.path)), tmp_path / "b")
    assert local.ref.run_id == run_id  # read from the MLmodel file


@pytest.mark.parametrize("uri", ["models:/nope/1", "models:/iris/99", "models:/iris@nope",
                                 "models:/nope/latest"])
def test_missing_models_are_clear(versions, uri: str) -> None:
    with pytest.raises(MlflowException, match="Cannot resolve model") as err:
        resolve(uri)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(MlflowException, match="no MLmodel file"):
        fetch(resolve(str(tmp_path)), tmp_path / "out")


def test_only_pyfunc_flavor() -> None:
    assert check_flavor(None) == check_flavor("python_function") == "python_function"
    with pytest.raises(MlflowException, match="Omit --flavor"):
        check_flavor("sklearn")
