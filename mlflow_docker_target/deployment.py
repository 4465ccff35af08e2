"""The ``dockerhost`` deployment client: MLflow's deployment API on a Docker engine."""

from __future__ import annotations

import logging
from typing import Any

import docker.errors
from docker.models.containers import Container
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from mlflow_docker_target import config as config_module
from mlflow_docker_target import containers, model_fetch
from mlflow_docker_target.config import Settings, normalize, parse_config
from mlflow_docker_target.containers import Spec, check_name
from mlflow_docker_target.endpoint import invoke
from mlflow_docker_target.engine import Engine, connect_to, talking_to
from mlflow_docker_target.engine_address import Address, engine_from_target, resolve
from mlflow_docker_target.image_build import LABEL, serving_image
from mlflow_docker_target.model_fetch import ModelRef, check_flavor
from mlflow_docker_target.version import __version__

log = logging.getLogger(__name__)


class DockerHostDeploymentClient(BaseDeploymentClient):
    """Deploys MLflow models as containers on the Docker engine the target URI names.

    Nothing is stored outside the engine: containers carry labels that describe their deployment.
    """

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.engine_ref = engine_from_target(target_uri)
        self._engines: dict[tuple[Address, float], Engine] = {}

    def _connect(self, settings: Settings | None = None) -> Engine:
        """The engine, connected once per address and timeout for this client's lifetime.

        A client that calls ``predict`` in a loop would otherwise open a connection (over ssh,
        a login: half a second) for every call.
        """
        settings = settings or Settings()
        key = (resolve(self.engine_ref, settings), settings.timeout)
        if key not in self._engines:
            self._engines[key] = connect_to(*key)
        return self._engines[key]

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        check_name(name)
        settings = parse_config(config, "create")
        flavor = check_flavor(flavor)
        engine = self._connect(settings)
        with talking_to(engine):
            if containers.find(engine, name):
                raise MlflowException(
                    f"A deployment named {name!r} already exists on {engine.url}; update it, "
                    "or delete it first.", RESOURCE_ALREADY_EXISTS)
            image, ref = serving_image(engine, name, model_fetch.resolve(model_uri), settings)
            spec = Spec(name, image, ref, normalize(config), settings, __version__)
            container = _start_ready(engine, spec, settings.port, settings)
            log.info("Deployment %s serves %s at %s", name, ref.resolved_uri,
                     containers.endpoint_url(engine, container))
            return {**containers.describe(engine, container), "flavor": flavor}

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        check_name(name)
        flavor = check_flavor(flavor)
        engine = self._connect(parse_config(config, "update"))
        with talking_to(engine):
            return {**_update(engine, name, model_uri, config), "flavor": flavor}

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> None:
        check_name(name)
        settings = parse_config(config, "delete")
        engine = self._connect(settings)
        with talking_to(engine):
            found = containers.find(engine, name)
            for container in found:
                containers.remove(container, settings.stop_timeout)
            if settings.remove_image:
                _remove_images(engine, {c.labels.get(f"{LABEL}.image") for c in found})

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        engine = self._connect()
        newest: dict[str, Container] = {}
        with talking_to(engine):
            for container in containers.find(engine):
                name = container.labels[containers.DEPLOYMENT]
                if name not in newest or (container.status == "running"
                                          and newest[name].status != "running"):
                    newest[name] = container
            return [containers.describe(engine, c) for _, c in sorted(newest.items())]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        engine = self._connect()
        with talking_to(engine):
            return containers.describe(engine, _current(engine, name))

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        if not deployment_name:
            raise MlflowException("predict needs a deployment name.", INVALID_PARAMETER_VALUE)
        engine = self._connect()
        with talking_to(engine):
            container = _current(engine, deployment_name)
        url = containers.endpoint_url(engine, container)
        if url is None:
            raise MlflowException(f"Deployment {deployment_name!r} publishes no port; is it "
                                  "running? `mlflow deployments get` shows its status.")
        return invoke(url, inputs, token=containers.auth_token(container))

    def explain(self, deployment_name: str | None = None, df: Any = None,
                endpoint: str | None = None) -> Any:
        raise MlflowException(
            "The dockerhost target does not compute explanations; call predict instead.",
            INVALID_PARAMETER_VALUE)


def _update(engine: Engine, name: str, model_uri: str | None,
            config: dict[str, Any] | None) -> dict[str, Any]:
    """Start the new container, prove it, then retire the old ones and their images."""
    current = _current(engine, name)
    raw = {**containers.recorded_config(current), **normalize(config)}
    settings = parse_config(raw, "update")
    if model_uri:
        ref = model_fetch.resolve(model_uri)
    else:
        labels = current.labels
        ref = ModelRef(labels[f"{LABEL}.model-uri"], labels[f"{LABEL}.model-resolved-uri"],
                       labels.get(f"{LABEL}.model-name") or None,
                       labels.get(f"{LABEL}.model-version") or None,
                       labels.get(f"{LABEL}.run-id") or None)
    image, ref = serving_image(engine, name, ref, settings)
    spec = Spec(name, image, ref, raw, settings, __version__)
    old = containers.find(engine, name)
    port_taken = settings.port is not None and settings.port == containers.host_port(current)
    if port_taken:
        new = _replace_on_same_port(engine, spec, current, settings)
    else:
        new = _start_ready(engine, spec, settings.port, settings, replacing=current)
    old_images = {c.labels.get(f"{LABEL}.image") for c in old} - {image}
    for container in old:
        if container.id != new.id:
            containers.remove(container, settings.stop_timeout)
    _remove_images(engine, old_images)
    log.info("Deployment %s now serves %s at %s", name, ref.resolved_uri,
             containers.endpoint_url(engine, new))
    return containers.describe(engine, new)


def _current(engine: Engine, name: str) -> Container:
    """The container serving ``name``: the newest running one, else the newest."""
    found = containers.find(engine, check_name(name))
    if not found:
        raise MlflowException(f"No deployment named {name!r} on {engine.url}.",
                              RESOURCE_DOES_NOT_EXIST)
    running = [c for c in found if c.status == "running"]
    return (running or found)[0]


def _start_ready(engine: Engine, spec: Spec, port: int | None, settings: Settings,
                 replacing: Container | None = None) -> Container:
    """Start a container and wait until it serves; on any failure remove it and its new image."""
    container = containers.start(engine, spec, port)
    try:
        containers.wait_ready(engine, container, settings.ready_timeout)
    except BaseException as exc:
        containers.remove(container, stop_timeout=1)
        if replacing is None:
            _remove_images(engine, {spec.image})
        elif isinstance(exc, MlflowException):
            raise MlflowException(
                f"{exc.message}\nThe previous container {replacing.name} keeps serving.",
                ErrorCode.Value(exc.error_code)) from None
        raise
    container.reload()
    return container


def _replace_on_same_port(engine: Engine, spec: Spec, current: Container,
                          settings: Settings) -> Container:
    """Replace a container whose fixed host port the new one needs.

    The new image is first proven on a free port while the old container serves; only then is
    the old one stopped for the few seconds the final container needs to start on the port. If
    that fails, the old container is started again.
    """
    trial = _start_ready(engine, spec, None, settings, replacing=current)
    containers.remove(trial, stop_timeout=1)
    current.stop(timeout=settings.stop_timeout)
    try:
        return _start_ready(engine, spec, settings.port, settings, replacing=current)
    except BaseException:
        current.start()
        containers.wait_ready(engine, current, settings.ready_timeout)
        raise


def _remove_images(engine: Engine, images: set[str | None]) -> None:
    """Remove model images no container uses any more; one still in use is left alone."""
    for image in sorted(i for i in images if i):
        try:
            engine.client.images.remove(image)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            log.info("Keeping image %s: %s", image, exc.explanation or exc)


def target_help() -> str:
    return f"""\
Target 'dockerhost': serve MLflow models as containers on a Docker engine.

Target URIs (which engine, in this order)
  dockerhost:/unix:///var/run/docker.sock
  dockerhost:/tcp://host:2376          TLS from -C tlscacert/tlscert/tlskey, else
                                       DOCKER_TLS_VERIFY / DOCKER_CERT_PATH
  dockerhost:/ssh://user@host[:port]   ~/.ssh/config and known_hosts; the remote user needs
                                       the docker CLI
  dockerhost:/<docker context name>    the context's host and TLS files
  dockerhost  or  dockerhost:/         DOCKER_HOST, else DOCKER_CONTEXT, else the current
                                       Docker context, else the local socket
run-local gets no target from MLflow: it uses -C docker_host=..., else the environment.
list, get and predict take no config: for TLS use the DOCKER_* variables or a context.
On a remote engine the port is published on all interfaces and the endpoint URL uses the
engine's host name (-C host_address overrides it); builds run there, with wheels for its CPU.

Model URIs: models:/name/version, models:/name@alias, models:/name/latest, runs:/<id>/path, or a
local path. Aliases and 'latest' are resolved to a version, recorded on the deployment.

The image builds on the engine with no network: the client resolves wheels for the engine's
platform with its own pip settings. Base image: -C base_image, else
${{{config_module.BASE_IMAGE_ENV}}}, else python:<model's major.minor>-slim (pulled, with a log
line, only if missing).

Config (-C key=value)
{config_module.help_text()}

Examples
  mlflow deployments create -t dockerhost --name iris -m models:/iris@champion -C port=8080
  mlflow deployments update -t dockerhost --name iris -m models:/iris/3
  mlflow deployments get -t dockerhost --name iris
  mlflow deployments list -t dockerhost
  mlflow deployments predict -t dockerhost --name iris --input-path input.json
  mlflow deployments delete -t dockerhost --name iris -C remove_image=true
  mlflow deployments run-local -t dockerhost --name try -m runs:/<run id>/model -C port=5001

Endpoints: POST /invocations (MLflow scoring protocol), GET /ping (ready), GET /health (alive),
GET /version. An update starts the new container, waits until it is ready, then removes the old
one; with a fixed -C port the endpoint keeps its port and is down only while the proven new
image starts on it. A failed update leaves the old container serving."""
