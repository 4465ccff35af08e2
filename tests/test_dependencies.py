"""What goes into a serving environment, and pip's target options."""

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.image_build.environment import check_python
from mlflow_docker_target.image_build.model_fetch import FetchedModel
from mlflow_docker_target.image_build.requirements import (
    Platform,
    also_downloaded,
    download_wheels,
    environment_requirements,
    server_requirements,
)
from mlflow_docker_target.record import ModelRef


def _model(tmp_path: Path, requirements: str | None, mlflow_version: str = "3.17.2",
           constraints: str | None = None) -> FetchedModel:
    if requirements is not None:
        (tmp_path / "requirements.txt").write_text(requirements)
    if constraints is not None:
        (tmp_path / "constraints.txt").write_text(constraints)
    return FetchedModel(ModelRef("m", "m"), tmp_path, "3.11.7", mlflow_version)


def test_mlflow_pin_becomes_skinny(tmp_path: Path) -> None:
    reqs = environment_requirements(_model(tmp_path, "mlflow==3.17.2\nscikit-learn==1.9.1\n"),
                                    "auto")
    assert reqs.lines[:2] == ("mlflow-skinny==3.17.2", "scikit-learn==1.9.1")
    assert reqs.skinny_swap == "3.17.2"
    assert "mlflow==3.17.2" in reqs.with_full_mlflow().lines
    for server_req in server_requirements():
        assert server_req in reqs.lines


def test_full_keeps_mlflow_and_extras(tmp_path: Path) -> None:
    reqs = environment_requirements(_model(tmp_path, "mlflow[gateway]==3.1.0\n"), "full")
    assert reqs.lines[0] == "mlflow[gateway]==3.1.0"
    assert reqs.skinny_swap is None


def test_model_without_requirements_gets_its_mlflow_version(tmp_path: Path) -> None:
    reqs = environment_requirements(_model(tmp_path, None, mlflow_version="2.20.0"), "auto")
    assert reqs.lines[0] == "mlflow-skinny==2.20.0"


@pytest.mark.parametrize(("requirement", "flask"), [
    ("mlflow==2.16.2", True),  # mlflow-skinny before 2.21: its scoring module imports Flask
    ("mlflow==2.20.3", True),
    ("mlflow==2.21.0", False),
    ("mlflow==3.17.2", False),
    ("mlflow<2.20", True),  # -C mlflow_package=skinny: may resolve to such a version
    ("mlflow>=2.15", False),  # resolves to the newest
])
def test_skinny_before_2_21_gets_flask_not_full_mlflow(tmp_path: Path, requirement: str,
                                                       flask: bool) -> None:
    reqs = environment_requirements(_model(tmp_path, requirement + "\n"), "skinny")
    assert reqs.lines[0].startswith("mlflow-skinny")
    assert ("flask" in reqs.lines) is flask
    assert "flask" not in environment_requirements(_model(tmp_path, requirement + "\n"),
                                                   "full").lines


def test_cpu_deployments_get_xgboost_cpu_gpu_ones_keep_xgboost(tmp_path: Path) -> None:
    model = _model(tmp_path, "mlflow==3.17.2\nxgboost==3.2.0\nscikit-learn==1.9.1\n")
    cpu = environment_requirements(model, "auto")
    assert "xgboost-cpu==3.2.0" in cpu.lines and "xgboost==3.2.0" not in cpu.lines
    assert cpu.without_cpu_builds().lines == environment_requirements(model, "auto",
                                                                      gpus=True).lines
    assert "xgboost==3.2.0" in environment_requirements(model, "auto", gpus=True).lines
    # before xgboost-cpu existed, or not an exact pin: the model's own line
    for line in ("xgboost==2.0.3", "xgboost>=2.1"):
        assert line in environment_requirements(_model(tmp_path, line + "\n"), "auto").lines


def test_a_cpu_build_pulled_in_beside_the_full_package_is_noticed(tmp_path: Path) -> None:
    reqs = environment_requirements(_model(tmp_path, "mlflow==3.17.2\nxgboost==3.2.0\n"),
                                    "auto")
    (tmp_path / "xgboost_cpu-3.2.0-py3-none-manylinux_2_28_x86_64.whl").touch()
    assert not also_downloaded(reqs, tmp_path)
    (tmp_path / "xgboost-3.2.0-py3-none-manylinux_2_28_x86_64.whl").touch()  # a dependency's
    assert also_downloaded(reqs, tmp_path)


def test_constraints_and_comments(tmp_path: Path) -> None:
    model = _model(tmp_path, "# logged by mlflow\nmlflow==3.17.2\n-c constraints.txt\nnumpy  # x\n",
                   constraints="numpy<3\n")
    reqs = environment_requirements(model, "auto")
    assert "numpy" in reqs.lines
    assert reqs.constraints == ("numpy<3",)
    assert not any(line.startswith("-") for line in reqs.lines)


def test_requirements_text_is_stable(tmp_path: Path) -> None:
    a = environment_requirements(_model(tmp_path, "mlflow==3.17.2\npandas\n"), "auto")
    b = environment_requirements(_model(tmp_path, "mlflow==3.17.2\npandas\n"), "auto")
    assert a.text() == b.text()


@pytest.mark.parametrize(("machine", "glibc", "first"), [
    ("x86_64", "2.36", "manylinux_2_36_x86_64"),
    ("aarch64", "2.31", "manylinux_2_31_aarch64"),
])
def test_platform_lists_every_manylinux_tag_newest_first(machine: str, glibc: str,
                                                         first: str) -> None:
    args = Platform("3.11", machine, glibc).pip_args()
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms[0] == first  # pip prefers earlier tags: the base's own glibc first
    assert platforms[-2:] == [f"manylinux_2_17_{machine}", f"manylinux2014_{machine}"]
    assert args[args.index("--python-version") + 1] == "3.11"
    assert args[args.index("--abi") + 1] == "cp311"


@pytest.mark.index
def test_wheels_for_an_arm64_engine_from_an_x86_client(tmp_path: Path) -> None:
    """The demo model's whole environment resolves to aarch64 (or pure-Python) wheels."""
    model = _model(tmp_path, "mlflow==3.17.2\nscikit-learn\nnumpy\npandas\nscipy\n")
    requirements = environment_requirements(model, "auto")
    wheelhouse = tmp_path / "wheels"
    download_wheels(requirements, Platform("3.11", "aarch64", "2.36"), wheelhouse)
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert any(name.startswith("numpy-") for name in wheels)
    binary = [name for name in wheels if not name.endswith("-none-any.whl")]
    assert binary and all(name.endswith("_aarch64.whl") for name in binary), binary


@pytest.mark.parametrize("python", ["3.8", "3.9"])
def test_a_python_older_than_the_server_is_refused_naming_both(python: str) -> None:
    with pytest.raises(MlflowException) as err:
        check_python(Platform(python, "x86_64", "2.36"), f"python:{python}-slim", python)
    assert (f"logged with Python {python} and the base image python:{python}-slim has Python "
            f"{python}; the scoring server needs Python 3.10 or newer") in err.value.message
    check_python(Platform("3.10", "x86_64", "2.36"), "python:3.10-slim", python)  # accepted
