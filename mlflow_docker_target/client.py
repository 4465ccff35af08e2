"""The ``dockerhost`` deployment client: MLflow's deployment and endpoint API on a Docker engine.

This module holds the rules users see (names, config, what may change, errors). What runs where,
and how, is a runtime's business: the client speaks only to ``runtimes.interface.Runtime``,
chosen from the table in ``runtimes`` (containers on the engine, or services on the swarm it
manages), and never to Docker itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)

from mlflow_docker_target import record, runtimes
from mlflow_docker_target.config import (
    FIXED_PORTS,
    FRONT_KEYS,
    HTTPS_KEYS,
    Settings,
    normalize,
    parse_config,
)
from mlflow_docker_target.controller import lifecycle, rules
from mlflow_docker_target.engine.address import Address, engine_from_target, resolve
from mlflow_docker_target.engine.connection import Engine, connect_to
from mlflow_docker_target.engine.errors import talking_to
from mlflow_docker_target.image_build import model_fetch
from mlflow_docker_target.image_build.model_fetch import check_flavor
from mlflow_docker_target.names import check_name
from mlflow_docker_target.runtimes import certificates, payload_log
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.fronts import limits_of
from mlflow_docker_target.runtimes.haproxy import Limits
from mlflow_docker_target.runtimes.interface import Deployment, Endpoint, Runtime, Version
from mlflow_docker_target.scoring_client import invoke, invoke_stream
from serving_image.contract import DEPLOYMENT_HEADER

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
        _check_ports(settings, endpoint)
        _check_front_keys(normalize(config), endpoint)
        _check_canary_keys(settings, normalize(config))
        recorded = {**normalize(config), **rules.follow_config(model_uri, settings,
                                                                normalize(config))}
        engine = self._connect(settings)
        with talking_to(engine):
            shared = _holding_endpoint(engine, endpoint) if endpoint is not None else None
            # a deployment goes where its endpoint is
            runtime = shared[0] if shared else runtimes.chosen(engine, settings)
            tls = _certificate(settings, normalize(config), lambda: runtime.host(settings), None)
            runtime.prepare(replace(settings, port=settings.endpoint_port) if endpoint
                            else settings, makes_front=shared is None)
            with runtime.lease("deployment", name, "create"):
                if _holding(engine, name) is not None:
                    raise MlflowException(
                        f"A deployment named {name!r} already exists on {engine.url}; update "
                        "it, or delete it first.", RESOURCE_ALREADY_EXISTS)
                _start_controller(engine, runtime, settings, recorded)
                made = None
                try:
                    if endpoint is not None and runtime.endpoint(endpoint) is None:
                        made = self._make_endpoint(
                            runtime, endpoint, replace(settings, port=settings.endpoint_port),
                            exists_ok=True)
                    ref = model_fetch.resolve(model_uri, recorded.get("tracking_uri"))
                    image, ref = runtime.build(name, ref, settings)
                    version = Version(name, image, ref, recorded, settings, endpoint, tls)
                    try:
                        deployed = runtime.roll_out(version, None)
                    except BaseException:
                        runtime.remove_images({image})
                        raise
                except BaseException:
                    if made is not None:
                        runtime.remove_endpoint(made)
                    if _needs_controller(recorded):
                        _release_controller(engine, runtime)
                    raise
            log.info("Deployment %s serves %s at %s", name, ref.resolved_uri, deployed.url)
            return {**deployed.describe(), "flavor": flavor}

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        check_name(name)
        flavor = check_flavor(flavor)
        given = normalize(config)
        asked = parse_config(given, "update")
        engine = self._connect(asked)
        with talking_to(engine):
            runtime, current = _find(engine, name, endpoint)
            with runtime.lease("deployment", name, "update"):
                runtime, current = _find(engine, name, endpoint)
                _check_front_keys(given, current.endpoint)
                raw = _merged(runtime, current, given)
                settings = parse_config(raw, "update")
                if settings.canary is not None:
                    ended = _end_canary(runtime, current, settings, given, model_uri)
                    log.info("Deployment %s: canary %s; it serves %s", name,
                             "promoted" if settings.canary == "promote" else "aborted",
                             ended.model.resolved_uri)
                    return {**ended.describe(), "flavor": flavor}
                if current.canary is not None:
                    raise _canary_running(current)
                if settings.rollout != "canary":  # its keys go with it
                    raw = {k: v for k, v in raw.items()
                           if not k.startswith(CANARY_KEYS) or k in given}
                _check_canary_keys(settings, given)
                if not settings.follow_alias:  # what following recorded goes with it
                    raw = {k: v for k, v in raw.items()
                           if k not in rules.FOLLOW_KEYS or k in given}
                raw.update(rules.follow_config(model_uri or current.model.uri, settings, raw))
                tls = _certificate(asked, given,
                                   lambda: _host(runtime, current.url, settings),
                                   _serves_https(current.url))
                runtime.prepare(settings, makes_front=False)
                _start_controller(engine, runtime, settings, raw)
                if _keeps_version(model_uri, current, given):
                    version = Version(name, current.labels[record.IMAGE], current.model, raw,
                                      settings, current.endpoint, tls)
                    described = runtime.scale(version, current).describe()
                    log.info("Deployment %s now has %s replicas ready, its front's limits %s%s",
                             name, described["replicas"], limits_of(settings),
                             ", a new certificate" if tls else "")
                    return {**described, "flavor": flavor}
                registry = raw.get("tracking_uri")  # a followed alias's registry
                ref = (model_fetch.resolve(model_uri, registry) if model_uri
                       else replace(current.model, registry=registry))
                image, ref = runtime.build(name, ref, settings)
                version = Version(name, image, ref, raw, settings, current.endpoint, tls)
                old_images = ({r.image for r in current.replicas if r.image} - {image}
                              if settings.rollout != "canary" else set())  # they serve on
                try:
                    updated = runtime.roll_out(version, current)
                except BaseException:
                    runtime.remove_images({image} - {r.image for r in current.replicas
                                                     if r.image})
                    raise
            runtime.remove_images(old_images)
            if _needs_controller(current.config) and not _needs_controller(raw):
                _release_controller(engine, runtime)
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
            with runtime.lease("deployment", name, "delete"):
                images = runtime.remove(found, settings.stop_timeout)
                if settings.remove_payload_log:
                    payload_log.remove_volume(engine, name)
            if _needs_controller(found.config):
                _release_controller(engine, runtime)
            if settings.remove_image:
                runtime.remove_images(images)

    def list_deployments(self, endpoint: str | None = None, *,
                         follow: bool = True) -> list[dict[str, Any]]:
        """``follow=False`` leaves out what the controller does about deployments that follow
        an alias (read from its ledger): the controller itself lists so, as it holds that."""
        engine = self._connect()
        with talking_to(engine):
            if endpoint is not None:
                found = _endpoint(engine, endpoint)[0].deployments(endpoint)
            else:
                found = [d for runtime in runtimes.every(engine) for d in runtime.deployments()]
            return _described(engine, found) if follow else [d.describe() for d in found]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        engine = self._connect()
        with talking_to(engine):
            return _described(engine, [_find(engine, check_name(name), endpoint)[1]])[0]

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
            tls = _certificate(settings, normalize(config), lambda: runtime.host(settings), None)
            runtime.prepare(settings, makes_front=True)
            if _holding_endpoint(engine, name) is not None:
                raise MlflowException(f"An endpoint named {name!r} already exists on "
                                      f"{runtime.url}.", RESOURCE_ALREADY_EXISTS)
            return self._make_endpoint(runtime, name, settings, tls=tls).describe()

    @staticmethod
    def _make_endpoint(runtime: Runtime, name: str, settings: Settings,
                       exists_ok: bool = False, tls: Certificate | None = None) -> Endpoint:
        with runtime.lease("endpoint", name, "create"):
            found = runtime.endpoint(name)
            if found is not None:
                if exists_ok:
                    return found
                raise MlflowException(f"An endpoint named {name!r} already exists on "
                                      f"{runtime.url}.", RESOURCE_ALREADY_EXISTS)
            made = runtime.create_endpoint(name, settings, tls)
            log.info("Endpoint %s answers at %s%s", name, made.url,
                     f" (every node: {', '.join(made.nodes)})" if made.nodes else "")
            return made

    def update_endpoint(self, endpoint: str, config: dict[str, Any] | None = None) -> None:
        given = normalize(config)
        settings = parse_config(given, "update_endpoint")
        if settings.traffic is None and not {*FRONT_KEYS, *HTTPS_KEYS} & set(given):
            raise MlflowException(
                "update-endpoint changes the traffic split, the front's limits or its "
                "certificate: give -C traffic=<deployment>:<weight>,... with weights that sum "
                f"to 100, -C {'=..., -C '.join(FRONT_KEYS)}=... (empty: no limit), or -C "
                "https_cert=... -C https_key=...", INVALID_PARAMETER_VALUE)
        engine = self._connect(settings)
        with talking_to(engine):
            runtime, found = _endpoint(engine, endpoint)
            tls = _certificate(settings, given, lambda: _host(runtime, found.url, settings),
                               _serves_https(found.url))
            unknown = sorted(set(settings.traffic or ()) - set(found.deployments))
            if unknown:
                raise MlflowException(
                    f"Not on endpoint {endpoint!r}: {', '.join(unknown)}. Its deployments: "
                    f"{', '.join(found.deployments) or 'none'}.", INVALID_PARAMETER_VALUE)
            with runtime.lease("endpoint", endpoint, "update", wait=60):
                found = _endpoint(engine, endpoint)[1]
                traffic = found.traffic if settings.traffic is None else settings.traffic
                updated = runtime.reconfigure(found, traffic, _limits(found.limits, given,
                                                                      settings), tls)
            described = updated.describe()
            log.info("Endpoint %s now splits traffic %s, limits %s", endpoint,
                     described["traffic"], described["limits"] or "none")

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
            with runtime.lease("endpoint", endpoint, "delete"):
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


def _described(engine: Engine, deployments: list[Deployment]) -> list[dict[str, Any]]:
    """What ``get`` and ``list`` show: with what the controller is doing about a deployment
    that follows an alias (``follow``), and its judgement of a canary (``canary.judged``
    while it runs, ``last_canary`` after its verdict)."""
    described = [d.describe() for d in deployments]
    if any(_needs_controller(d.config) for d in deployments):
        about = lifecycle.describe(engine)
        for deployment, shown in zip(deployments, described, strict=True):
            if _needs_controller(deployment.config):
                _add_controllers_view(shown, about(deployment.name),
                                      rules.follows(deployment.config))
    return described


_JUDGED = ("state", "version", "reason", "figures", "verdict", "decided_at")


def _add_controllers_view(shown: dict[str, Any], entry: dict[str, Any],
                          follows: bool) -> None:
    entry = dict(entry)
    judged = entry.pop("canary", None) or {}
    if follows:
        shown["follow"] = entry
    view = {key: judged[key] for key in _JUDGED if key in judged}
    canary = shown.get("canary")
    if canary is not None:
        shown["canary"]["judged"] = (
            view if judged.get("rollout") == canary.get("rollout")
            else {"state": "not yet seen by the controller", "controller": entry["controller"]})
    elif judged and judged.get("state") != "watching":
        shown["last_canary"] = view


def _start_controller(engine: Engine, runtime: Runtime, settings: Settings,
                      recorded: Mapping[str, str]) -> None:
    """A deployment that follows an alias, or whose updates are canaries, needs the engine's
    controller (and, following, its registry reachable from there) before anything is
    built."""
    if not settings.follow_alias and settings.rollout != "canary":
        return
    lifecycle.ensure(engine, settings, lambda: runtime.lease("controller", "engine", "start",
                                                             wait=120))
    if not settings.follow_alias:
        return
    try:
        lifecycle.check_reaches(engine, recorded["tracking_uri"])
    except MlflowException:
        _release_controller(engine, runtime)
        raise


def _release_controller(engine: Engine, runtime: Runtime) -> None:
    """The controller goes once no deployment on the engine needs it."""
    needed = any(_needs_controller(d.config) for r in runtimes.every(engine)
                 for d in r.deployments())
    lifecycle.release(engine, needed, lambda: runtime.lease("controller", "engine", "stop",
                                                            wait=120))


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


def _check_front_keys(given: dict[str, str], endpoint: str | None) -> None:
    """The limits and the certificate of a shared endpoint's front are the endpoint's, not
    one deployment's."""
    keys = [key for key in (*FRONT_KEYS, *HTTPS_KEYS) if key in given]
    if endpoint is not None and keys:
        raise MlflowException(
            f"-C {keys[0]} belongs to endpoint {endpoint!r}'s front, which its deployments "
            f"share: set it with `mlflow deployments update-endpoint -t dockerhost --endpoint "
            f"{endpoint} -C {keys[0]}=...` (or at create-endpoint).", INVALID_PARAMETER_VALUE)


def _certificate(settings: Settings, given: dict[str, str], host: Callable[[], str],
                 https: bool | None) -> Certificate | None:
    """The certificate ``-C https_cert`` and ``-C https_key`` give, checked against ``host``
    (the host in the endpoint's URL) before anything is built; ``None`` when neither is given.
    ``https``: whether the endpoint serves HTTPS now (``None``: it is being made), as a change
    may replace the certificate but never turn HTTPS on or off, which would change the URL."""
    keys = [key for key in HTTPS_KEYS if key in given]
    if not keys:
        return None
    if https is False:
        raise MlflowException(
            "This endpoint serves plain HTTP, and HTTPS is chosen when an endpoint is made (it "
            "changes the URL clients use): delete it and create it again with -C https_cert "
            "and -C https_key.", INVALID_PARAMETER_VALUE)
    if settings.https_cert is None or settings.https_key is None:
        if https and any(not given[key].strip() for key in keys):
            raise MlflowException(
                "This endpoint serves HTTPS, and cannot turn it off (it would change the URL "
                "clients use): give a new -C https_cert and -C https_key to replace the "
                "certificate, or delete the endpoint and create it without them.",
                INVALID_PARAMETER_VALUE)
        raise MlflowException("-C https_cert and -C https_key go together: give the "
                              "certificate and its key.", INVALID_PARAMETER_VALUE)
    found = certificates.load(settings.https_cert, settings.https_key)
    certificates.check_covers(found, host(), settings.https_cert)
    return found


def _serves_https(url: str | None) -> bool:
    return bool(url and url.startswith("https://"))


def _host(runtime: Runtime, url: str | None, settings: Settings) -> str:
    """The host in an endpoint's URL (if it publishes none, the one it would have)."""
    return (urlsplit(url).hostname if url else None) or runtime.host(settings)


def _check_ports(settings: Settings, endpoint: str | None) -> None:
    """A deployment on a shared endpoint has no port of its own; ``endpoint_port`` is the port
    of the endpoint that create makes."""
    if endpoint is not None:
        check_name(endpoint, "endpoint")
        if settings.port is not None:
            raise MlflowException(
                f"The port belongs to endpoint {endpoint!r}, not to a deployment on it: give "
                "-C endpoint_port when create makes the endpoint, or -C port to "
                "create-endpoint.", INVALID_PARAMETER_VALUE)
    elif settings.endpoint_port is not None:
        raise MlflowException("-C endpoint_port applies only with --endpoint; a deployment's "
                              "own port is -C port.", INVALID_PARAMETER_VALUE)


def _merged(runtime: Runtime, current: Deployment, given: dict[str, str]) -> dict[str, str]:
    """An update's config: what was recorded, with what is given on top; ``-C key=`` and
    ``-C env.NAME=`` drop what was recorded (back to the default). The port and the runtime
    stay as they are for the deployment's life."""
    _check_stays(runtime, given)
    recorded = dict(current.config)
    for key in FIXED_PORTS:
        if key in given and recorded.get(key) != given[key]:
            raise MlflowException(
                f"The endpoint of {current.name!r} keeps its ports for its life ({key}: "
                f"{recorded.get(key) or 'none'}); delete and create the deployment to change "
                "it.", INVALID_PARAMETER_VALUE)
    return {k: v for k, v in {**recorded, **given}.items() if v.strip()}


CANARY_KEYS = "canary_"  # the prefix of the keys of a canary (not ``canary``, its end)


def _needs_controller(config: Mapping[str, str]) -> bool:
    """Whether a deployment needs the engine's controller: it follows an alias, or its
    updates are canaries, which the controller judges."""
    return rules.follows(config) or rules.rolls_out_as_canaries(config)


def _check_canary_keys(settings: Settings, given: Mapping[str, str]) -> None:
    keys = sorted(k for k in given if k.startswith(CANARY_KEYS))
    if keys and settings.rollout != "canary":
        raise MlflowException(
            f"-C {', '.join(keys)} describe a canary: give -C rollout=canary with them, or "
            "leave them out.", INVALID_PARAMETER_VALUE)


def _canary_running(current: Deployment) -> MlflowException:
    assert current.canary is not None
    canary = current.canary.labels.get(record.MODEL_RESOLVED_URI)
    return MlflowException(
        f"Deployment {current.name!r} has a canary ({canary}, taking "
        f"{current.canary.share}% of its requests): end it first, with update "
        "-C canary=promote or -C canary=abort.", INVALID_STATE)


def _end_canary(runtime: Runtime, current: Deployment, settings: Settings,
                given: Mapping[str, str], model_uri: str | None) -> Deployment:
    """Promote or abort the deployment's canary; the images no replica serves any more go."""
    action = settings.canary
    others = sorted(set(given) - {"canary"}) + (["-m"] if model_uri else [])
    if others:
        raise MlflowException(
            f"-C canary={action} is given alone: it ends the canary as it is. Leave out "
            f"{', '.join(others)}, and update again after.", INVALID_PARAMETER_VALUE)
    if current.canary is None:
        raise MlflowException(
            f"Deployment {current.name!r} has no canary to {action}; update -C rollout=canary "
            "-m <model> starts one.", INVALID_STATE)
    ended = runtime.end_canary(current, action == "promote", settings.stop_timeout)
    served = {r.image for r in ended.replicas if r.image}
    runtime.remove_images({r.image for r in current.replicas + current.canary.replicas
                           if r.image} - served)
    return ended


def _keeps_version(model_uri: str | None, current: Deployment, given: dict[str, str]) -> bool:
    """Whether an update changes only the number of replicas, its front's limits or its
    certificate, so the replicas that serve keep serving instead of being rolled over."""
    changed = {k for k, v in given.items()
               if k not in record.NOT_RECORDED and current.config.get(k, "") != v.strip()}
    changed |= set(HTTPS_KEYS) & set(given)  # never recorded: given is a change
    return (model_uri is None and bool(changed)
            and changed <= {"replicas", *FRONT_KEYS, *HTTPS_KEYS}
            and record.IMAGE in current.labels)


def _limits(recorded: Limits, given: dict[str, str], settings: Settings) -> Limits:
    """An endpoint's limits after update-endpoint: the recorded ones, with the keys given
    (``-C key=``: no limit) replaced."""
    wanted = limits_of(settings)
    return Limits(**{key: getattr(wanted if key in given else recorded, key)
                     for key in FRONT_KEYS})


def _check_stays(runtime: Runtime, given: dict[str, str]) -> None:
    """A deployment stays on the runtime it was made on; ``-C runtime`` may only name it."""
    wanted = given.get("runtime", "").strip().lower()
    if wanted and runtimes.entry(wanted).name != runtime.name:
        raise MlflowException(
            f"This deployment runs on runtime {runtime.name!r} and stays there; delete it and "
            f"create it with -C runtime={wanted} to move it.", INVALID_PARAMETER_VALUE)
