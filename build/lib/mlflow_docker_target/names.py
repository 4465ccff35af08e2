"""The names users give deployments and endpoints, checked once for every command."""

from __future__ import annotations

import re

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str, what: str = "deployment") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise MlflowException(
            f"Invalid {what} name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit.", INVALID_PARAMETER_VALUE)
    return name


