"""The scratch MLflow registry that the deployment benchmarks register their models in."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow


def scratch_registry(prefix: str) -> Path:
    """A new working directory holding a SQLite tracking store, made current for this process
    and, through ``MLFLOW_TRACKING_URI``, for the plugin and anything it starts."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.chdir(work)
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    return work
