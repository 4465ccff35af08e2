"""The ``dockerhost`` deployment client: MLflow's deployment and endpoint API on a Docker engine.

This module holds the rules users see (names, config, what may change, errors); what runs where
is the runtime's business (``runtime.Runtime``: containers on the engine, or services on the
swarm it manages; ``runtimes`` says which holds what).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)

from mlflow_docker_target import config as config_module
from mlflow_docker_target import record, runtimes
from mlflow_docker_target.build import model_fetch
from mlflow_docker_target.build.images import ensure_image, serving_image
from mlflow_docker_target.build.model_fetch import check_flavor
from mlflow_docker_target.config import Settings, normalize, parse_config
from mlflow_docker_target.engine.address import Address, engine_from_target, resolve
from mlflow_docker_target.engine.connection import Engine, connect_to, talking_to
from mlflow_docker_target.runtimes.container import gpus
from mlflow_docker_target.runtimes.container.containers import check_name
from mlflow_docker_target.runtimes.haproxy import DEPLOYMENT_HEADER
from mlflow_docker_target.runtimes.interface import Deployment, Endpoint, Runtime, Version
from mlflow_docker_target.scoring_client import invoke, invoke_stream

log = logging.getLogger(__name__)


class DockerHostDeploymentClient(BaseDeploymentClient):
    """Deploys MLflow models behind stable endpoints on the Docker engine the target URI names.

    Nothing is stored outside the engine: containers carry labels that describe their deployment,
    and an endpoint's front holds its traffic shares.
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

    # -----------------------------------------------------------------------------------------
    # Deployments

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        check_name(name)
        settings = parse_config(config, "create")
        flavor = check_flavor(flavor)
        if endpoint is not None:
            check_name(endpoint, "endpoint")
            if settings.port is not None:
                raise MlflowException(
                    f"The port belongs to endpoint {endpoint!r}, not to a deployment on it: "
                    "give -C endpoint_port when create makes the endpoint, or -C port to "
                    "create-endpoint.", INVALID_PARAMETER_VALUE)
        elif settings.endpoint_port is not None:
            raise MlflowException("-C endpoint_port applies only with --endpoint; a "
                                  "deployment's own port is -C port.", INVALID_PARAMETER_VALUE)
        engine = self._connect(settings)
        with talking_to(engine):
            shared = _holding_endpoint(engine, endpoint) if endpoint is not None else None
            # a deployment goes where its endpoint is
            runtime = shared[0] if shared else runtimes.chosen(engine, settings)
            runtime.check(replace(settings, port=settings.endpoint_port) if endpoint
                          else settings, makes_front=shared is None)
            proxy = ensure_image(engine, settings.resolved_proxy_image(), settings.pull_base,
                                 "proxy")
            if settings.gpus:  # before anything is built
                gpus.check(engine, proxy, settings.gpus)
            with runtime.claim("deployment", name, "create", proxy):
                if _holding(engine, name) is not None:
                    raise MlflowException(
                        f"A deployment named {name!r} already exists on {engine.url}; update "
                        "it, or delete it first.", RESOURCE_ALREADY_EXISTS)
                made = None
                if endpoint is not None and runtime.endpoint(endpoint) is None:
                    made = self._make_endpoint(runtime, endpoint,
                                               replace(settings, port=settings.endpoint_port),
                                               proxy, exists_ok=True)
                try:
                    image, ref = serving_image(engine, name, model_fetch.resolve(model_uri),
                                               settings)
                    version = Version(name, image, ref, normalize(config), settings, endpoint)
                    try:
                        deployed = runtime.roll_out(version, None)
                    except BaseException:
                        runtime.remove_images({image})
                        raise
                except BaseException:
                    if made is not None:
                        runtime.remove_endpoint(made)
                    raise
            log.info("Deployment %s serves %s at %s", name, ref.resolved_uri, deployed.url)
            return {**deployed.describe(), "flavor": flavor}

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        check_name(name)
        flavor = check_flavor(flavor)
        given = normalize(config)
        engine = self._connect(parse_config(given, "update"))
        with talking_to(engine):
            runtime, current = _find(engine, name, endpoint)
            with runtime.claim("deployment", name, "update", _image_of(current)):
                runtime, current = _find(engine, name, endpoint)
                recorded = dict(current.config)
                if current.legacy and "port" not in given:
                    # its port is held by the old container until the new front serves
                    recorded.pop("port", None)
                elif "port" in given and recorded.get("port") != given["port"]:
                    raise MlflowException(
                        f"The endpoint of {name!r} keeps its port for its life "
                        f"({current.url}); delete and create the deployment to change it.",
                        INVALID_PARAMETER_VALUE)
                # `-C key=` and `-C env.NAME=` drop what was recorded: back to the default
                raw = {k: v for k, v in {**recorded, **given}.items() if v.strip()}
                settings = parse_config(raw, "update")
                runtime.check(settings, makes_front=False)
                if settings.gpus and "gpus" in given:  # before anything is built
                    gpus.check(engine, ensure_image(engine, settings.resolved_proxy_image(),
                                                    settings.pull_base, "proxy"), settings.gpus)
                if _only_scales(model_uri, current, given):
                    version = Version(name, current.labels[record.IMAGE], current.model, raw,
                                      settings, current.endpoint)
                    described = runtime.scale(version, current).describe()
                    log.info("Deployment %s now has %s replicas ready", name,
                             described["replicas"])
                    return {**described, "flavor": flavor}
                ref = model_fetch.resolve(model_uri) if model_uri else current.model
                image, ref = serving_image(engine, name, ref, settings)
                version = Version(name, image, ref, raw, settings, current.endpoint)
                old_images = {r.image for r in current.replicas if r.image} - {image}
                try:
                    updated = runtime.roll_out(version, current)
                except BaseException:
                    runtime.remove_images({image} - {r.image for r in current.replicas
                                                     if r.image})
                    raise
            runtime.remove_images(old_images)  # once the claim, made from one, is gone
            if current.legacy and current.url != updated.url:
                log.warning("Deployment %s moved to the new layout: its endpoint is now %s "
                            "(was %s) and stays there from now on.", name, updated.url,
                            current.url)
            log.info("Deployment %s now serves %s at %s", name, ref.resolved_uri, updated.url)
            return {**updated.describe(), "flavor": flavor}

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> None:
        check_name(name)
        settings = parse_config(config, "delete")
        engine = self._connect(settings)
        with talking_to(engine):
            held = _holding(engine, name)
            if held is None:
                return
            runtime, found = held
            _check_on(found, endpoint)
            with runtime.claim("deployment", name, "delete", _image_of(found)):
                images = runtime.remove(found, settings.stop_timeout)
            if settings.remove_image:  # once the claim, made from the same image, is gone
                runtime.remove_images(images)

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        engine = self._connect()
        with talking_to(engine):
            if endpoint is not None:
                return [d.describe() for d in _endpoint(engine, endpoint)[0].deployments(endpoint)]
            return [d.describe() for runtime in runtimes.every(engine)
                    for d in runtime.deployments()]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        engine = self._connect()
        with talking_to(engine):
            return _find(engine, check_name(name), endpoint)[1].describe()

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        """Through the endpoint's front: with a deployment name, that deployment answers;
        with only an endpoint, the endpoint's traffic split decides."""
        url, token, headers = self._route(deployment_name, endpoint)
        return invoke(url, inputs, token=token, headers=headers)

    def _route(self, deployment_name: str | None,
               endpoint: str | None) -> tuple[str, str | None, dict[str, str]]:
        """Where predictions for a deployment (or an endpoint's split) go: the URL, the bearer
        token, and the header that picks the deployment behind a shared front."""
        if not deployment_name and not endpoint:
            raise MlflowException("predict needs a deployment name or an endpoint.",
                                  INVALID_PARAMETER_VALUE)
        engine = self._connect()
        with talking_to(engine):
            if deployment_name:
                found = _find(engine, deployment_name, endpoint)[1]
                url, on = found.url, [found]
            else:
                runtime, shared = _endpoint(engine, str(endpoint))
                url, on = shared.url, runtime.deployments(shared.name)
        if url is None:
            raise MlflowException(f"{deployment_name or endpoint!r} publishes no port; is it "
                                  "running? `mlflow deployments get` shows its status.")
        tokens = {d.config.get("auth_token") for d in on}
        headers = {DEPLOYMENT_HEADER: deployment_name} if deployment_name else {}
        return url, tokens.pop() if len(tokens) == 1 else None, headers

    def predict_stream(self, deployment_name: str | None = None, inputs: Any = None,
                       endpoint: str | None = None) -> Iterator[dict[str, Any]]:
        """Chunks of the model's ``predict_stream``, as dicts, as they come (Server-Sent Events
        through the endpoint's front); routed as :meth:`predict` routes."""
        url, token, headers = self._route(deployment_name, endpoint)
        return invoke_stream(url, inputs, token=token, headers=headers)

    def explain(self, deployment_name: str | None = None, df: Any = None,
                endpoint: str | None = None) -> Any:
        raise MlflowException(
            "The dockerhost target does not compute explanations; call predict instead.",
            INVALID_PARAMETER_VALUE)

    # -----------------------------------------------------------------------------------------
    # Endpoints

    def create_endpoint(self, name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        check_name(name, "endpoint")
        settings = parse_config(config, "create_endpoint")
        engine = self._connect(settings)
        with talking_to(engine):
            runtime = runtimes.chosen(engine, settings)
            runtime.check(settings, makes_front=True)
            proxy = ensure_image(engine, settings.resolved_proxy_image(), settings.pull_base,
                                 "proxy")
            if _holding_endpoint(engine, name) is not None:
                raise MlflowException(f"An endpoint named {name!r} already exists on "
                                      f"{runtime.url}.", RESOURCE_ALREADY_EXISTS)
            return self._make_endpoint(runtime, name, settings, proxy).describe()

    @staticmethod
    def _make_endpoint(runtime: Runtime, name: str, settings: Settings, proxy: str,
                       exists_ok: bool = False) -> Endpoint:
        with runtime.claim("endpoint", name, "create", proxy):
            found = runtime.endpoint(name)
            if found is not None:
                if exists_ok:
                    return found
                raise MlflowException(f"An endpoint named {name!r} already exists on "
                                      f"{runtime.url}.", RESOURCE_ALREADY_EXISTS)
            return runtime.create_endpoint(name, settings)

    def update_endpoint(self, endpoint: str, config: dict[str, Any] | None = None) -> None:
        settings = parse_config(config, "update_endpoint")
        if settings.traffic is None:
            raise MlflowException(
                "update-endpoint changes the traffic split: give -C traffic=<deployment>:"
                "<weight>,... with weights that sum to 100.", INVALID_PARAMETER_VALUE)
        engine = self._connect(settings)
        with talking_to(engine):
            runtime, found = _endpoint(engine, endpoint)
            unknown = sorted(set(settings.traffic) - set(found.deployments))
            if unknown:
                raise MlflowException(
                    f"Not on endpoint {endpoint!r}: {', '.join(unknown)}. Its deployments: "
                    f"{', '.join(found.deployments) or 'none'}.", INVALID_PARAMETER_VALUE)
            with runtime.claim("endpoint", endpoint, "update", found.image, wait=60):
                updated = runtime.set_traffic(found, settings.traffic)
            log.info("Endpoint %s now splits traffic %s", endpoint,
                     updated.describe()["traffic"])

    def delete_endpoint(self, endpoint: str) -> None:
        engine = self._connect()
        with talking_to(engine):
            held = _holding_endpoint(engine, check_name(endpoint, "endpoint"))
            if held is None:
                return
            runtime, found = held
            if found.deployments:
                raise MlflowException(
                    f"Endpoint {endpoint!r} still has deployments: "
                    f"{', '.join(found.deployments)}. Delete them first "
                    "(mlflow deployments delete -t dockerhost --name <deployment>).",
                    INVALID_PARAMETER_VALUE)
            with runtime.claim("endpoint", endpoint, "delete", found.image):
                runtime.remove_endpoint(found)

    def list_endpoints(self) -> list[dict[str, Any]]:
        engine = self._connect()
        with talking_to(engine):
            return [e.describe() for runtime in runtimes.every(engine)
                    for e in runtime.endpoints()]

    def get_endpoint(self, endpoint: str) -> dict[str, Any]:
        engine = self._connect()
        with talking_to(engine):
            return _endpoint(engine, check_name(endpoint, "endpoint"))[1].describe()

    # -----------------------------------------------------------------------------------------


def _holding(engine: Engine, name: str) -> tuple[Runtime, Deployment] | None:
    """The runtime that holds deployment ``name``, and the deployment."""
    for runtime in runtimes.every(engine):
        found = runtime.find(name)
        if found is not None:
            return runtime, found
    return None


def _find(engine: Engine, name: str, endpoint: str | None) -> tuple[Runtime, Deployment]:
    held = _holding(engine, name)
    if held is None:
        raise MlflowException(f"No deployment named {name!r} on {engine.url}.",
                              RESOURCE_DOES_NOT_EXIST)
    _check_on(held[1], endpoint)
    return held


def _holding_endpoint(engine: Engine, name: str) -> tuple[Runtime, Endpoint] | None:
    for runtime in runtimes.every(engine):
        found = runtime.endpoint(name)
        if found is not None:
            return runtime, found
    return None


def _endpoint(engine: Engine, name: str) -> tuple[Runtime, Endpoint]:
    held = _holding_endpoint(engine, name)
    if held is None:
        raise MlflowException(f"No endpoint named {name!r} on {engine.url}.",
                              RESOURCE_DOES_NOT_EXIST)
    return held


def _check_on(found: Deployment, endpoint: str | None) -> None:
    """``endpoint=`` given with a deployment must be the one it is attached to."""
    if endpoint is not None and found.endpoint != endpoint:
        where = f"endpoint {found.endpoint!r}" if found.endpoint else "its own endpoint"
        raise MlflowException(
            f"Deployment {found.name!r} is on {where}, not on endpoint {endpoint!r}; a "
            "deployment stays on the endpoint it was created on.", INVALID_PARAMETER_VALUE)


def _only_scales(model_uri: str | None, current: Deployment, given: dict[str, str]) -> bool:
    """Whether an update changes the number of replicas and nothing else, so the replicas
    that serve keep serving instead of being rolled over."""
    changed = {k for k, v in given.items()
               if k not in record.NOT_RECORDED and current.config.get(k, "") != v.strip()}
    return (model_uri is None and not current.legacy and changed == {"replicas"}
            and record.IMAGE in current.labels)


def _image_of(found: Deployment) -> str:
    """An image the engine surely has, for claim containers: the deployment's own."""
    return next(r.image for r in found.replicas if r.image)


def target_help() -> str:
    return f"""\
Target 'dockerhost': serve MLflow models as containers on a Docker engine, or as services on
the Docker Swarm it manages.

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
${{{config_module.BASE_IMAGE_ENV}}}, else python:<model's major.minor>-slim. Proxy image:
-C proxy_image, else ${{{config_module.PROXY_IMAGE_ENV}}}, else {config_module.DEFAULT_PROXY_IMAGE}.
Debug symbols leave the environment's shared objects in a build step on an image with GNU
binutils: -C strip_image, else ${{{config_module.STRIP_IMAGE_ENV}}}, else the base image (if it has
binutils). Each is pulled, with a log line, only if the engine lacks it.

Config (-C key=value)
{config_module.help_text()}

Examples
  mlflow deployments create -t dockerhost --name iris -m models:/iris@champion -C port=8080
  mlflow deployments update -t dockerhost --name iris -m models:/iris/3 -C replicas=2
  mlflow deployments get -t dockerhost --name iris
  mlflow deployments list -t dockerhost
  mlflow deployments predict -t dockerhost --name iris --input-path input.json
  mlflow deployments delete -t dockerhost --name iris -C remove_image=true
  mlflow deployments run-local -t dockerhost --name try -m runs:/<run id>/model -C port=5001

Endpoints that stay put
  Every deployment is served through a front (HAProxy in its own container) that owns the
  endpoint's host port for its whole life: updates, engine restarts and replicas come and go
  behind it. An update starts the new replicas, proves them ready, lets the front take them in,
  then stops the old ones, which drain; a failed update removes what it started and the current
  version keeps serving. An update that changes only -C replicas scales instead: new replicas
  join once ready, or the oldest drain and go. A request a vanishing replica could not answer is
  retried on another (bodies up to HAProxy's buffer, 16 kB).
  Several deployments can share an endpoint, with weighted traffic:
    mlflow deployments create -t dockerhost --name fraud-v3 -m models:/fraud/3 \\
        --endpoint fraud -C endpoint_port=8080      # makes the endpoint if it is missing
    mlflow deployments create -t dockerhost --name fraud-v4 -m models:/fraud/4 --endpoint fraud
    mlflow deployments update-endpoint -t dockerhost --endpoint fraud \\
        -C traffic=fraud-v3:90,fraud-v4:10
    mlflow deployments get-endpoint -t dockerhost --endpoint fraud
    mlflow deployments predict -t dockerhost --endpoint fraud --input-path in.json  # the split
    mlflow deployments predict -t dockerhost --name fraud-v4 --input-path in.json   # just v4
  A request with the header 'x-mlflow-deployment: <name>' goes to that deployment; others are
  drawn by weight, and a deployment with no ready replica hands its share to the others.
  MLflow's 'create-endpoint' command fails before reaching any plugin (its --endpoint option
  does not match the function's argument); use create --endpoint as above, or
  get_deploy_client("dockerhost").create_endpoint(name, config).

Docker Swarm: on an engine that is an active Swarm manager, deployments and endpoints are
services (-C runtime=container|swarm overrides): one replicated service per deployment
(endpoint_mode=dnsrr, so no IPVS is needed) and the front as a global service publishing the
port in host mode on every node, so any node answers. The build runs on the manager; the
image (and a local proxy image) is pushed to -C registry=host:port[/prefix] for the nodes to
pull (required with more than one node; credentials from docker login). The port must be
given. update is Swarm's rolling update (start-first, rolled back by Swarm when the new
version never gets ready); a change of an endpoint's deployments or weights restarts its
fronts one node at a time. Pushed images stay in the registry after delete. How each key
behaves on a swarm: 'on a swarm' under each key below.

GPUs: -C gpus=all|N|device=0,1 (as docker run --gpus); 1 worker unless -C workers says
otherwise. The engine needs the NVIDIA Container Toolkit (checked before anything is built).
CUDA wheels the model requires are installed; PyTorch and XGBoost wheels bring their CUDA
libraries and run on python:X.Y-slim; for a system CUDA use -C base_image=nvidia/cuda:...
with python3 and venv added.

Server routes: POST /invocations (MLflow scoring protocol), GET /ping (ready), GET /health
(alive), GET /version, GET /metrics, GET /docs, /redoc and /openapi.json (served offline), and
the Open Inference Protocol (V2, as MLServer's MLflow runtime speaks it): /v2/health/live,
/v2/health/ready, /v2/models/<deployment or endpoint name>[/versions/<v>][/ready|/infer].
Streaming: {{..., "stream": true}} on /invocations answers Server-Sent Events from the model's
predict_stream ('data: <json>' lines, then 'data: [DONE]'); from Python,
client.predict_stream(name, {{"messages": [...]}}) yields the chunks as dicts. At most
-C max_streams streams per worker.
Answers carry x-mlflow-deployment and x-mlflow-model-version. With -C auth_token every
route but the health probes (/ping, /health, /v2/health/*) needs 'Authorization: Bearer
<token>'. Every prediction request answers 504 at -C request_timeout; the model runs on
-C predict_threads threads per worker, so the probes answer meanwhile.

Update: -C key= (empty) puts a key back to its default (auth_token= turns auth off, memory=
lifts the limit, env.NAME= removes NAME); port= is refused. Secrets (auth_token, env.* names
with KEY, SECRET, TOKEN, PASSWORD, CREDENTIAL) show as *** and live only in the containers'
environment, which anyone with access to the engine can read.

predict --input-path: MLflow reads the file with pandas.read_json; a scoring-protocol body as
curl sends it ({{"dataframe_split": ...}}, {{"inputs": ...}}, ...) is passed on unchanged, and a
table as records or columns is sent as dataframe_split.

Deployments made by versions without fronts stay visible; their first update moves them behind
a front, on a new port unless -C port is given."""
