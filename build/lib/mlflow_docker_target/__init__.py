"""MLflow deployment plugin ``dockerhost``: serve MLflow models as containers on Docker engines.

MLflow loads this module through the ``mlflow.deployments`` entry point and requires exactly one
``BaseDeploymentClient`` subclass here, plus ``run_local`` and ``target_help``.
"""

import logging
import os
import sys

from mlflow_docker_target.client import DockerHostDeploymentClient
from mlflow_docker_target.help_text import target_help
from mlflow_docker_target.local_run import run_local
from serving_image.contract import VERSION as __version__


def _configure_logging() -> None:
    """Progress goes to stderr, as MLflow's own does, unless the application set up logging."""
    logger = logging.getLogger(__name__)
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[dockerhost] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("MLFLOW_DOCKERHOST_LOG_LEVEL", "INFO").upper())
    logger.propagate = False


_configure_logging()

__all__ = ["DockerHostDeploymentClient", "__version__", "run_local", "target_help"]
