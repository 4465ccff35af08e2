"""The runtime on one Docker engine: a front container per endpoint, replicas as containers.

Each endpoint (a shared one, or a deployment's own) is a user-defined network plus a front
(HAProxy) that publishes the endpoint's host port, chosen once and bound explicitly so it
survives updates and engine restarts. Replicas start on the default bridge, are proven ready
from inside (``docker exec`` of the image's health check), and only then join the endpoint's
network under a name of their own (deployment alias and slot number, recorded in a label), so
the front never sees a replica that is not ready. The front's configuration is rendered from
what the engine holds and reloaded whenever replicas join or leave. A rollout waits until the
front has checked every new replica, then stops the old ones, whose servers drain (``/ping``
answers 503 for a few health checks while in-flight requests finish).
"""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import io
import json
import logging
import secrets
import tarfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
)

from mlflow_docker_target import record
from mlflow_docker_target.build.images import ensure_image, remove_images
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes import haproxy as front
from mlflow_docker_target.runtimes.container import containers
from mlflow_docker_target.runtimes.container.containers import Spec
from mlflow_docker_target.runtimes.interface import Deployment, Endpoint, Replica, Version
from mlflow_docker_target.version import __version__

log = logging.getLogger(__name__)

FRONT_PORT = f"{front.FRONT_PORT}/tcp"
LOCK_STALE_SECONDS = 3600
PROBE_INTERVAL = 0.25
RELOAD_TIMEOUT = 15  # HAProxy's master re-reads its configuration in milliseconds


class ContainerRuntime:
    """Deployments and endpoints as containers on the engine ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.client = engine.client
        self.url = engine.url

    # -----------------------------------------------------------------------------------------
    # One writer per name

    @contextlib.contextmanager
    def claim(self, kind: str, name: str, doing: str, image: str,
              wait: float = 0) -> Iterator[None]:
        """A created (never started) container named after ``kind`` and ``name``: the engine
        refuses a second container of that name, so exactly one client holds the claim."""
        lock = f"mlflow-dockerhost-lock-{kind}-{name}"
        labels = {record.ROLE: record.LOCK_ROLE, record.LOCK: f"{kind}:{name}:{doing}",
                  record.LOCK_SINCE: str(int(time.time()))}
        give_up = time.monotonic() + wait
        while True:
            try:
                held = self.client.containers.create(image, command=["claim"], name=lock,
                                                      labels=labels, network_disabled=True)
                break
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                holder = self._existing(lock)
                since = int((holder.labels.get(record.LOCK_SINCE) if holder else 0) or 0)
                if holder is None:
                    continue  # released in between
                if time.time() - since > LOCK_STALE_SECONDS:
                    log.warning("Removing the stale claim %s (made %s)", lock, _when(since))
                    with contextlib.suppress(docker.errors.NotFound):
                        holder.remove(force=True)
                    continue
                if time.monotonic() < give_up:
                    time.sleep(0.2)
                    continue
                busy = holder.labels.get(record.LOCK, "::").rsplit(":", 1)[-1]
                exists = "already exists or " if doing == "create" else ""
                raise MlflowException(
                    f"{kind.capitalize()} {name!r} {exists}is being {_past(busy or 'changed')} by "
                    f"another client (since {_when(since)}); try again when that is done. If no "
                    f"client is at work (one was killed), remove the claim: docker rm {lock}",
                    RESOURCE_ALREADY_EXISTS if doing == "create" else INVALID_STATE) from None
        try:
            yield
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                held.remove(force=True)

    def _existing(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def check(self, settings: Settings, makes_front: bool) -> None:
        for key in ("registry", "constraints"):
            if getattr(settings, key):
                raise MlflowException(
                    f"-C {key} applies to Swarm services, and {self.url} runs containers (it "
                    "is not a Swarm manager, or -C runtime=container says so). Leave it out, "
                    "or point the target at a swarm's manager.", INVALID_PARAMETER_VALUE)

    # -----------------------------------------------------------------------------------------
    # Reading what the engine holds

    def _servers(self, deployment: str | None = None,
                 endpoint: str | None = None) -> list[Container]:
        """Serving containers, newest first; local runs and containers of other roles left out."""
        if endpoint is not None:
            label = f"{record.ENDPOINT}={endpoint}"
        else:
            label = f"{record.DEPLOYMENT}={deployment}" if deployment else record.DEPLOYMENT
        found = self.client.containers.list(all=True, filters={"label": label})
        found = [c for c in found if c.labels.get(record.LOCAL_RUN) != "true"
                 and c.labels.get(record.ROLE, record.SERVER) == record.SERVER]
        return sorted(found, key=lambda c: c.attrs.get("Created", ""), reverse=True)

    def _front(self, deployment: str | None = None,
               endpoint: str | None = None) -> Container | None:
        label = (f"{record.FRONT_OF}={deployment}" if deployment
                 else f"{record.ENDPOINT}={endpoint}")
        found = self.client.containers.list(all=True, filters={"label": label})
        fronts = [c for c in found if c.labels.get(record.ROLE) == record.FRONT]
        return fronts[0] if fronts else None

    def _front_of(self, deployment: str, endpoint: str | None) -> Container | None:
        """The front a deployment is served through: its endpoint's, else its own."""
        return self._front(endpoint=endpoint) if endpoint else self._front(deployment=deployment)

    def find(self, name: str) -> Deployment | None:
        servers = self._servers(name)
        return self._deployment(name, servers) if servers else None

    def deployments(self, endpoint: str | None = None) -> list[Deployment]:
        by_name: dict[str, list[Container]] = {}
        for container in self._servers(endpoint=endpoint):
            by_name.setdefault(container.labels[record.DEPLOYMENT], []).append(container)
        return [self._deployment(name, servers) for name, servers in sorted(by_name.items())]

    def _deployment(self, name: str, servers: list[Container]) -> Deployment:
        running = [c for c in servers if c.status == "running"]
        newest = (running or servers)[0]
        labels = newest.labels
        legacy = record.ROLE not in labels
        endpoint = labels.get(record.ENDPOINT) or None
        if legacy:
            url = containers.published_url(self.engine, newest)
        else:
            found = self._front_of(name, endpoint)
            url = self._front_url(found) if found else None
        replicas = tuple(Replica(c.name, c.status, _health(c), c.labels.get(record.IMAGE),
                                 containers.exit_reason(c)) for c in servers)
        config = record.recorded_config(labels, newest.attrs.get("Config", {}).get("Env"))
        if not legacy and (len(servers) != 1 or "replicas" in config):
            # scaling adds or stops replicas without relabelling the others: the count of
            # containers is the replica count
            config["replicas"] = str(len(servers))
        return Deployment(name, labels, config, replicas, url, endpoint, legacy)

    def _front_url(self, container: Container) -> str | None:
        bindings = (container.attrs.get("HostConfig", {}).get("PortBindings") or {})
        binding = (bindings.get(FRONT_PORT) or [None])[0]
        if not binding or not binding.get("HostPort"):
            return None
        return containers.url_for(self.engine, binding.get("HostIp", ""),
                                  int(binding["HostPort"]),
                                  container.labels.get(record.HOST_ADDRESS) or None)

    def endpoint(self, name: str) -> Endpoint | None:
        container = self._front(endpoint=name)
        return self._endpoint(container) if container else None

    def endpoints(self) -> list[Endpoint]:
        found = self.client.containers.list(all=True, filters={"label": record.ENDPOINT})
        fronts = [c for c in found if c.labels.get(record.ROLE) == record.FRONT]
        return sorted((self._endpoint(c) for c in fronts), key=lambda e: e.name)

    def _endpoint(self, container: Container) -> Endpoint:
        name = container.labels[record.ENDPOINT]
        attached = tuple(sorted({c.labels[record.DEPLOYMENT]
                                 for c in self._servers(endpoint=name)}))
        port = container.labels.get(record.PORT)
        return Endpoint(name, self._front_url(container), int(port) if port else None,
                        container.status, attached, _read_state(container).get("traffic"),
                        container.attrs["Config"]["Image"])

    # -----------------------------------------------------------------------------------------
    # Fronts

    def create_endpoint(self, name: str, settings: Settings) -> Endpoint:
        self._start_front(settings, endpoint=name)
        found = self.endpoint(name)
        assert found is not None
        log.info("Endpoint %s answers at %s", name, found.url)
        return found

    def _start_front(self, settings: Settings, endpoint: str | None = None,
                     deployment: str | None = None,
                     backends: tuple[front.Backend, ...] = ()) -> Container:
        """A front on a new network of its own, on ``settings.port`` or a port picked once."""
        image = ensure_image(self.engine, settings.resolved_proxy_image(), settings.pull_base,
                             "proxy")
        stem = f"mlflow-endpoint-{endpoint}" if endpoint else f"mlflow-{deployment}-front"
        labels = {record.ROLE: record.FRONT}
        if endpoint:
            labels[record.ENDPOINT] = endpoint
        else:
            labels[record.FRONT_OF] = labels[record.DEPLOYMENT] = str(deployment)
        if settings.host_address:
            labels[record.HOST_ADDRESS] = settings.host_address
        bind = settings.bind_address or ("127.0.0.1" if self.engine.is_local else "0.0.0.0")
        network = self.client.networks.create(stem, labels=labels, check_duplicate=True)
        try:
            port = settings.port or self._pick_port(image, bind, stem, labels, network)
            container = self._front_container(image, stem, {**labels, record.PORT: str(port)},
                                              network, bind, port, settings.restart_policy)
            try:
                self._configure(container, endpoint or str(deployment), backends, None)
                container.start()
            except BaseException:
                container.remove(force=True)
                raise
        except docker.errors.APIError as exc:
            network.remove()
            raise MlflowException(
                f"Could not start the front of {endpoint or deployment!r} on port "
                f"{settings.port or 'any'}: {exc.explanation or exc}. If the port is taken, "
                "choose another with -C port (create-endpoint, create) or -C endpoint_port "
                "(create --endpoint).", INVALID_PARAMETER_VALUE) from None
        except BaseException:
            network.remove()
            raise
        return container

    def _front_container(self, image: str, name: str, labels: dict[str, str],
                         network: Network, bind: str, port: int | None,
                         restart_policy: str) -> Container:
        return self.client.containers.create(
            image, entrypoint=[], command=front.COMMAND, name=name, labels=labels,
            network=network.name, ports={FRONT_PORT: (bind, port)}, init=True,
            restart_policy=containers.restart_policy(restart_policy), stop_signal="SIGUSR1")

    def _pick_port(self, image: str, bind: str, stem: str, labels: dict[str, str],
                   network: Network) -> int:
        """A free host port, as the engine picks one: a trial front gets a random port, which
        the real front then binds explicitly (a random binding would change on every start)."""
        trial = self._front_container(image, f"{stem}-{secrets.token_hex(3)}", labels, network,
                                      bind, None, "no")
        try:
            self._configure(trial, "trial", (), None)
            trial.start()
            trial.reload()
            return int(trial.attrs["NetworkSettings"]["Ports"][FRONT_PORT][0]["HostPort"])
        finally:
            trial.remove(force=True)

    def _configure(self, container: Container, name: str, backends: tuple[front.Backend, ...],
                   traffic: Mapping[str, int] | None) -> None:
        """Write the front's configuration and traffic record into it; reload it if running.

        HAProxy's master process re-reads the file on SIGUSR2 and starts new workers, while the
        old ones finish the requests they hold: nothing in flight is lost. The configuration
        read at the reload names the replicas' current addresses; once the new worker runs, it
        is rewritten without them, so a cold start after an engine restart (new addresses)
        asks Docker's DNS instead of trusting stale ones.
        """
        def write(config: tuple[front.Backend, ...]) -> None:
            container.put_archive("/", _tar({
                front.CONFIG_PATH: front.render(name, config).encode(),
                front.STATE_PATH: json.dumps({"traffic": traffic}).encode()}))

        container.reload()
        if container.status == "running":
            write(backends)
            _reload(container)
        write(tuple(dataclasses.replace(b, servers=tuple(front.Server(x.slot) for x in b.servers))
                    for b in backends))

    def _backends(self, endpoint: str | None, deployment: str | None,
                  traffic: Mapping[str, int] | None, add: Version | None = None,
                  network: str | None = None) -> tuple[front.Backend, ...]:
        """The backends of a front: the deployments on it (with ``add``, whose replicas may not
        exist yet), each with its replicas' slots and their addresses on ``network``."""
        timeouts: dict[str, int] = {}
        servers: dict[str, list[front.Server]] = {}
        found = (self._servers(endpoint=endpoint) if endpoint
                 else self._servers(str(deployment)))
        for container in found:
            name = container.labels[record.DEPLOYMENT]
            config = json.loads(container.labels.get(record.CONFIG, "{}"))
            timeouts.setdefault(name, int(config.get("request_timeout")
                                          or Settings().request_timeout))
            if record.SLOT not in container.labels:
                continue  # made before fronts: not on the network
            joined = container.attrs["NetworkSettings"]["Networks"].get(network or "") or {}
            address = joined.get("IPAddress") if container.status == "running" else None
            servers.setdefault(name, []).append(
                front.Server(int(container.labels[record.SLOT]), address or None))
        if add is not None:
            timeouts[add.deployment] = add.settings.request_timeout
        shares = front.weights(sorted(timeouts), traffic)
        return tuple(front.Backend(name, shares[name], timeouts[name],
                                   tuple(sorted(servers.get(name, []), key=lambda s: s.slot)))
                     for name in sorted(timeouts))

    def _refresh(self, front_container: Container, traffic: Mapping[str, int] | None = None,
                 keep_traffic: bool = True, claim: bool = True) -> None:
        """Render the front's configuration from what the engine holds now and reload it.

        ``keep_traffic``: the recorded traffic, else ``traffic``. A shared endpoint's front is
        refreshed under the endpoint's claim (unless the caller holds it), so two deployments
        changing at once do not write over each other's replicas.
        """
        endpoint = front_container.labels.get(record.ENDPOINT)
        deployment = front_container.labels.get(record.FRONT_OF)
        name = str(endpoint or deployment)
        held = (self.claim("endpoint", name, "update", front_container.attrs["Config"]["Image"],
                           wait=60) if endpoint and claim else contextlib.nullcontext())
        with held:
            if keep_traffic:
                traffic = _read_state(front_container).get("traffic")
            self._configure(front_container, name, self._backends(
                endpoint, deployment, traffic, network=_network_of(front_container)), traffic)

    def set_traffic(self, endpoint: Endpoint, traffic: Mapping[str, int]) -> Endpoint:
        container = self._front(endpoint=endpoint.name)
        assert container is not None
        # the caller (update-endpoint) holds the endpoint's claim
        self._refresh(container, traffic, keep_traffic=False, claim=False)
        found = self.endpoint(endpoint.name)
        assert found is not None
        return found

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        container = self._front(endpoint=endpoint.name)
        if container is not None:
            self._remove_front(container)

    def _remove_front(self, container: Container) -> None:
        networks = list(container.attrs.get("NetworkSettings", {}).get("Networks") or {})
        containers.remove(container, stop_timeout=5)
        for name in networks:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.networks.get(name).remove()

    # -----------------------------------------------------------------------------------------
    # Rollouts

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        name = version.deployment
        own_front = self._front(deployment=name) if version.endpoint is None else None
        made_front = None
        if version.endpoint is not None:
            found = self._front(endpoint=version.endpoint)
            if found is None:
                raise MlflowException(f"Endpoint {version.endpoint!r} has no front on "
                                      f"{self.url}; create it with create-endpoint.")
            front_container = found
        elif own_front is None:
            front_container = made_front = self._start_front(
                version.settings, deployment=name,
                backends=self._backends(None, name, None, add=version))
        else:
            front_container = own_front

        try:
            started = self._add_replicas(version, version.settings.replicas, front_container)
        except BaseException as exc:
            if made_front is not None:
                self._remove_front(made_front)
            if current is not None and isinstance(exc, MlflowException):
                raise MlflowException(f"{exc.message}\nThe deployment's current version keeps "
                                      "serving.", exc.error_code) from exc
            raise
        if current is not None:
            old = [c for c in self._servers(name) if c.id not in {s.id for s in started}]
            _in_parallel(lambda c: containers.remove(c, version.settings.stop_timeout), old)
            self._refresh(front_container)
        found_now = self.find(name)
        assert found_now is not None
        return found_now

    def scale(self, version: Version, current: Deployment) -> Deployment:
        name = version.deployment
        servers = self._servers(name)
        wanted = version.settings.replicas
        front_container = self._front_of(name, current.endpoint)
        if wanted > len(servers):
            if front_container is None:
                raise MlflowException(f"Deployment {name!r} has no front on {self.url}; "
                                      "update it with -m to move it behind one.", INVALID_STATE)
            try:
                self._add_replicas(version, wanted - len(servers), front_container)
            except MlflowException as exc:
                raise MlflowException(f"{exc.message}\nThe deployment's replicas keep serving.",
                                      exc.error_code) from exc
        elif wanted < len(servers):  # the oldest go first; each drains
            _in_parallel(lambda c: containers.remove(c, version.settings.stop_timeout),
                         servers[wanted:])
            if front_container is not None:
                self._refresh(front_container)
        found = self.find(name)
        assert found is not None
        return found

    def _add_replicas(self, version: Version, count: int,
                      front_container: Container) -> list[Container]:
        """Start ``count`` replicas of ``version`` in free slots, prove each ready, join them
        to the front's network under their own names, reload the front with them and wait until
        it has checked them; on failure, remove them all and raise."""
        name = version.deployment
        used = {int(c.labels[record.SLOT]) for c in self._servers(name)
                if record.SLOT in c.labels}
        slots = [n for n in range(1, len(used) + count + 1) if n not in used][:count]
        started: list[Container] = []
        try:
            for slot in slots:
                started.append(self._start_replica(version, slot))
            deadline = time.monotonic() + version.settings.ready_timeout
            for container in started:
                self._wait_probe(container, deadline, behind_front=False)
            network = self.client.networks.get(_network_of(front_container))
            for slot, container in zip(slots, started, strict=True):
                network.connect(container, aliases=[front.server_name(name, slot)])
            self._refresh(front_container)
            for container in started:
                self._wait_probe(container, deadline, behind_front=True)
            url = self._front_url(front_container)
            if url:
                containers.check_reachable(url, started[0].name)
        except BaseException:
            _in_parallel(lambda c: containers.remove(c, stop_timeout=1), started)
            with contextlib.suppress(Exception):  # their server lines go too
                self._refresh(front_container)
            raise
        return started

    def _start_replica(self, version: Version, slot: int) -> Container:
        spec = Spec(version.deployment, version.image, version.model, version.config,
                    version.settings, __version__, endpoint=version.endpoint, slot=slot)
        return containers.start(self.engine, spec, publish=False)

    def _wait_probe(self, container: Container, deadline: float, behind_front: bool) -> None:
        """Until the server says it is ready (and, ``behind_front``, the front has seen it so),
        asked inside the container: no port of it is published."""
        command = ["python3", "-m", "serving_image.healthcheck"]
        if behind_front:
            command.append("--behind-front")
        while True:
            container.reload()
            containers.raise_if_exited(container)
            if container.status == "running":
                with contextlib.suppress(docker.errors.APIError):
                    if container.exec_run(command).exit_code == 0:
                        return
            if time.monotonic() > deadline:
                what = "seen by the endpoint's front" if behind_front else "ready"
                raise MlflowException(
                    f"The server in container {container.name} was not {what} in time "
                    f"(config ready_timeout). Its last log lines:\n"
                    f"{containers.last_logs(container)}")
            time.sleep(PROBE_INTERVAL)

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        servers = self._servers(deployment.name)
        images = {c.labels.get(record.IMAGE) or "" for c in servers} - {""}
        shared = self._front(endpoint=deployment.endpoint) if deployment.endpoint else None
        traffic = _read_state(shared).get("traffic") if shared is not None else None
        if shared is not None and traffic is not None:
            # its share goes to the others before its replicas drain
            self._refresh(shared, {**traffic, deployment.name: 0}, keep_traffic=False)
        _in_parallel(lambda c: containers.remove(c, stop_timeout), servers)
        if shared is not None:
            if traffic is not None:
                traffic = {k: v for k, v in traffic.items() if k != deployment.name}
            self._refresh(shared, traffic, keep_traffic=False)
        own = self._front(deployment=deployment.name)
        if own is not None:
            self._remove_front(own)
        return images

    def remove_images(self, images: set[str]) -> None:
        remove_images(self.engine, images)


def _reload(front_container: Container) -> None:
    """Reload HAProxy in ``front_container`` and wait for its master to report the outcome
    (its log says "Loading success" or "Loading failure" after every reload).

    The log is polled (no follow stream: over ssh each open stream holds one of the server's
    few sessions), keeping only lines stamped after the last one before the signal.
    """
    last = front_container.logs(tail=1, timestamps=True).splitlines()
    mark = _stamp(last[-1]) if last else None
    since = calendar.timegm(time.strptime(mark[0], "%Y-%m-%dT%H:%M:%S")) if mark else None
    # Not `docker kill -s USR2`: the engine then counts the front as stopped by hand, and an
    # unless-stopped front would stay down after an engine restart. The init process (PID 1)
    # passes the signal on to HAProxy's master.
    signalled = front_container.exec_run(["sh", "-c", "kill -USR2 1"])
    if signalled.exit_code != 0:
        raise MlflowException(f"Could not signal the front {front_container.name} to reload: "
                              f"{signalled.output.decode(errors='replace').strip()}",
                              INVALID_STATE)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        fresh = [line.split(b" ", 1)[-1].decode(errors="replace")
                 for line in front_container.logs(timestamps=True, since=since).splitlines()
                 if mark is None or _stamp(line) > mark]
        if any("Loading success" in line for line in fresh):
            return
        if any("Loading failure" in line for line in fresh) or time.monotonic() > deadline:
            text = "\n".join(fresh[-20:]) or "(nothing logged)"
            raise MlflowException(
                f"The endpoint's front {front_container.name} did not take its new "
                f"configuration; it goes on serving the previous one. Its log:\n{text}",
                INVALID_STATE)
        time.sleep(0.05)


def _stamp(line: bytes) -> tuple[str, str]:
    """The engine's timestamp of a log line, comparable: RFC 3339 drops trailing zeros of
    the nanoseconds, so the fraction is padded back to nine digits."""
    stamp = line.split(b" ", 1)[0].decode(errors="replace").rstrip("Z")
    seconds, _, fraction = stamp.partition(".")
    return seconds, fraction.ljust(9, "0")


def _network_of(container: Container) -> str:
    return next(iter(container.attrs["NetworkSettings"]["Networks"]))


def _health(container: Container) -> str | None:
    return (container.attrs.get("State", {}).get("Health") or {}).get("Status")


def _in_parallel(action: Any, items: list[Container]) -> None:
    """Run ``action`` on every item at once (stopping replicas: each drains for seconds)."""
    if len(items) <= 1:
        for item in items:
            action(item)
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


def _tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directories = sorted({path.lstrip("/").rsplit("/", 1)[0] for path in files})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read_state(container: Container) -> dict[str, Any]:
    """The front's traffic record, read out of the container (running or not)."""
    try:
        stream, _ = container.get_archive(front.STATE_PATH)
    except docker.errors.NotFound:
        return {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        data: dict[str, Any] = json.loads(member.read()) if member else {}
    return data


def _when(since: int) -> str:
    return datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _past(verb: str) -> str:
    return {"create": "created", "update": "updated", "delete": "deleted"}.get(verb, verb)
