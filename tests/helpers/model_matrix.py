"""Models saved by several MLflow versions, each in its own virtualenv, cached between runs.

Registries hold models logged over years; these are what the matrix tests deploy. Each MLflow
version gets a virtualenv under ``.state/model-venvs/`` with the libraries of its time, and
``matrix/save_models.py`` saves every flavor with it, along with the model's own predictions
(loaded back by that same MLflow) for the rows in ``input.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".state"
SAVER = Path(__file__).parents[1] / "matrix" / "save_models.py"
FLAVORS = ("sklearn", "lightgbm", "xgboost", "pyfunc")

# The libraries of each MLflow version's time; the newest follows what resolves today.
PINS = {
    "2.16.2": ("mlflow-skinny==2.16.2", "numpy==1.26.4", "pandas==2.2.3", "scipy==1.14.1",
               "scikit-learn==1.5.2", "lightgbm==4.5.0", "xgboost==2.1.1",
               "cloudpickle==3.0.0"),
    "2.22.1": ("mlflow-skinny==2.22.1", "numpy==2.2.6", "pandas==2.2.3", "scipy==1.15.3",
               "scikit-learn==1.6.1", "lightgbm==4.6.0", "xgboost==3.0.2",
               "cloudpickle==3.1.1", "fastapi==0.115.12"),  # its scoring app predates Starlette 1
    "3.17.2": ("mlflow-skinny==3.17.2", "pandas", "scikit-learn", "skops", "lightgbm==4.7.0",
               "xgboost==3.2.0"),
}


@dataclass(frozen=True)
class SavedModel:
    mlflow_version: str
    flavor: str
    path: Path
    rows: dict  # the request body: {"dataframe_split": ...}
    expected: list  # the model's own predictions for those rows

    @property
    def frame(self) -> pd.DataFrame:
        split = self.rows["dataframe_split"]
        return pd.DataFrame(split["data"], columns=split["columns"])


def values(predictions: list) -> list:
    """Predictions as plain values: MLflow 2.x's scoring server answers a pandas Series from
    a pyfunc as one-column records (``[{"0": 1.5}, ...]``), as the model's own MLflow does."""
    if predictions and all(isinstance(p, dict) and len(p) == 1 for p in predictions):
        return [next(iter(p.values())) for p in predictions]
    return predictions


def _install(venv: Path, *requirements: str) -> None:
    """Install into ``venv`` with uv: a fresh machine makes these virtualenvs in each CI run,
    and pip took 57 s for MLflow 2.16.2's where uv takes 8. The bytecode is compiled at install,
    as pip does: where PYTHONDONTWRITEBYTECODE is set, each use would compile it again."""
    subprocess.run([sys.executable, "-m", "uv", "pip", "install", "-q", "--compile-bytecode",
                    "--python", str(venv / "bin" / "python"), *requirements], check=True)


@contextlib.contextmanager
def _locked(venv: Path) -> Iterator[None]:
    """One maker of ``venv`` at a time: parallel test workers may each need it."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _venv(version: str) -> Path:
    venv = STATE / "model-venvs" / version
    marker = venv / ".installed"
    with _locked(venv):
        if not marker.is_file():
            # seeded with pip, as ``python -m venv`` makes it: MLflow records pip's version
            subprocess.run([sys.executable, "-m", "uv", "venv", "-q", "--seed", "--clear",
                            "--python", sys.executable, str(venv)], check=True)
            _install(venv, *PINS[version])
            marker.write_text("\n".join(PINS[version]))
    return venv


def serving_venv(version: str) -> Path:
    """The version's virtualenv plus what our server and MLflow's need (Flask before 3.x),
    its libraries held at their pins: for the differential suite against that MLflow."""
    venv = _venv(version)
    marker = venv / ".serve-installed"
    with _locked(venv):
        if not marker.is_file():
            pins = venv / "pins.txt"
            pins.write_text("\n".join(PINS[version]) + "\n")
            server = (ROOT / "serving_image" / "requirements.txt").read_text().splitlines()
            _install(venv, "-c", str(pins), "flask", "httpx",
                     *[line.split(" #")[0].strip() for line in server
                       if line.strip() and not line.startswith("#")])
            marker.touch()
    return venv


def saved(version: str, flavor: str) -> SavedModel:
    """The model of ``flavor`` saved by MLflow ``version``, saving it first when missing."""
    out = STATE / "models" / version
    if not (out / flavor / "expected.json").is_file():
        python = _venv(version) / "bin" / "python"
        subprocess.run([str(python), str(SAVER), str(out), flavor], check=True,
                       cwd=STATE, env={"PATH": "/usr/bin:/bin", "HOME": str(STATE)})
    return SavedModel(version, flavor, out / flavor,
                      json.loads((out / "input.json").read_text()),
                      json.loads((out / flavor / "expected.json").read_text()))
