"""Resolve a model URI to a concrete version and fetch its files with MLflow's artifact API.

Aliases (``models:/fraud@champion``), ``latest`` and stages move over time, so a deployment records
the concrete version it was built from; everything else (tracking/registry URI, credentials,
artifact stores) is MLflow's own business and comes from the caller's MLflow environment.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from mlflow_docker_target.record import PYFUNC, ModelRef


@dataclass(frozen=True)
class FetchedModel:
    """A model's files on local disk, with what the image build needs from its metadata."""

    ref: ModelRef
    path: Path
    python_version: str
    mlflow_version: str | None


def resolve(model_uri: str, registry: str | None = None) -> ModelRef:
    """Pin ``models:/`` aliases, ``latest`` and stages to a concrete registered version; in
    the registry at ``registry`` (a tracking URI) when given, else the client's."""
    if not model_uri or not model_uri.strip():
        raise MlflowException("A model URI is required (-m/--model-uri).", INVALID_PARAMETER_VALUE)
    model_uri = model_uri.strip()
    if model_uri.startswith("runs:/"):
        run_id = model_uri[len("runs:/"):].split("/", 1)[0]
        return ModelRef(uri=model_uri, resolved_uri=model_uri, run_id=run_id or None)
    if not model_uri.startswith("models:/"):
        return ModelRef(uri=model_uri, resolved_uri=model_uri)

    spec = model_uri[len("models:/"):].strip("/")
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    try:
        if "@" in spec.split("/", 1)[0]:
            name, alias = spec.split("/", 1)[0].split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            parts = spec.split("/")
            if len(parts) == 1:  # models:/<logged model id>
                return ModelRef(uri=model_uri, resolved_uri=model_uri)
            name, selector = parts[0], parts[1]
            if selector.isdigit():
                version = client.get_model_version(name, selector)
            elif selector.lower() == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise MlflowException(
                        f"Registered model {name!r} has no versions.", RESOURCE_DOES_NOT_EXIST
                    )
                version = max(versions, key=lambda v: int(v.version))
            else:
                found = client.get_latest_versions(name, stages=[selector])
                if not found:
                    raise MlflowException(
                        f"Registered model {name!r} has no version in stage {selector!r}.",
                        RESOURCE_DOES_NOT_EXIST,
                    )
                version = found[0]
    except MlflowException as exc:
        where = "-C tracking_uri" if registry else "MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI"
        # The registry calls a missing alias an invalid parameter and a missing version a
        # missing resource; to a deployment both are a model that does not exist.
        missing = exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
        raise MlflowException(
            f"Cannot resolve model {model_uri!r} in the registry at "
            f"{registry or mlflow.get_registry_uri()}: {exc.message} Check the name, version or "
            f"alias, and {where}.",
            RESOURCE_DOES_NOT_EXIST if missing else ErrorCode.Value(exc.error_code),
        ) from None
    return ModelRef(
        uri=model_uri,
        resolved_uri=f"models:/{version.name}/{version.version}",
        name=version.name,
        version=str(version.version),
        run_id=version.run_id or None,
        registry=registry,
    )


def fetch(ref: ModelRef, dst: Path) -> FetchedModel:
    """Download the model into ``dst`` and check that it can be served as a pyfunc."""
    try:
        source, where = _source(ref)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                          **where))
    except MlflowException as exc:
        raise MlflowException(
            f"Cannot download model {ref.uri!r}: {exc.message}", RESOURCE_DOES_NOT_EXIST
        ) from None
    except OSError as exc:
        raise MlflowException(
            f"Cannot read model {ref.uri!r}: {exc}", RESOURCE_DOES_NOT_EXIST
        ) from None
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise MlflowException(
            f"{ref.uri!r} is not an MLflow model: it has no MLmodel file. Point -m at the model's "
            "directory (for a run: runs:/<run id>/<artifact path>).",
            INVALID_PARAMETER_VALUE,
        )
    model = Model.load(str(mlmodel))
    if PYFUNC not in model.flavors:
        raise MlflowException(
            f"Model {ref.uri!r} has no python_function flavor (it has: "
            f"{', '.join(model.flavors)}), so it cannot be served; log it with a flavor that "
            "supports pyfunc.",
            INVALID_PARAMETER_VALUE,
        )
    run_id = ref.run_id or model.run_id
    if run_id != ref.run_id:
        ref = replace(ref, run_id=run_id)
    return FetchedModel(
        ref=ref,
        path=local,
        python_version=_python_version(local, model),
        mlflow_version=model.mlflow_version,
    )


def _source(ref: ModelRef) -> tuple[str, dict[str, str]]:
    """Where the model's files are, and ``download_artifacts``'s arguments to reach them. In a
    registry other than the client's (a followed alias's), the version's own artifact URI is
    asked of that registry: MLflow resolves a ``models:/`` URI in the process's registry
    whatever registry it is given."""
    if ref.registry is None or ref.name is None or ref.version is None:
        return ref.resolved_uri, {}
    client = MlflowClient(tracking_uri=ref.registry, registry_uri=ref.registry)
    return (client.get_model_version_download_uri(ref.name, ref.version),
            {"tracking_uri": ref.registry})


def _python_version(path: Path, model: Model) -> str:
    """The model's Python: python_env.yaml, then the pyfunc flavor, then this interpreter."""
    env_file = path / "python_env.yaml"
    if env_file.is_file():
        python = (yaml.safe_load(env_file.read_text()) or {}).get("python")
        if python:
            return str(python)
    flavor_python = model.flavors[PYFUNC].get("python_version")
    return str(flavor_python) if flavor_python else platform.python_version()


def check_flavor(flavor: str | None) -> str:
    """Only the generic pyfunc flavor can be served; ``None`` picks it."""
    if flavor in (None, PYFUNC):
        return PYFUNC
    raise MlflowException(
        f"Flavor {flavor!r} is not supported by the dockerhost target; it serves models through "
        f"the {PYFUNC!r} flavor. Omit --flavor or pass --flavor {PYFUNC}.",
        INVALID_PARAMETER_VALUE,
    )
