"""Swarm services as the swarm runtime drives them: update one, wait until its tasks run the new
spec (or Swarm rolls it back), read its tasks' logs, and remove services and networks.

Swarm counts a task as running once the image's health check passes; a rollout is done when
every task the service wants runs its current spec.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
from docker.types import ServiceMode
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_docker_target.engine.times import engine_time
from mlflow_docker_target.runtimes import payload_log

POLL = 0.5
REMOVE_TIMEOUT = 60
LOGS_SECONDS = 5
STARTUP_LINES = 2000  # read for a server's warnings at start (each request logs a line too)
NS = 1_000_000_000
# how long a rolling update's failed task waits for Swarm to say it rolls the update back
ROLLBACK_NOTICE = 15
FAILED = ("failed", "rejected", "orphaned")


def tasks_of(client: docker.DockerClient, service: Mapping[str, Any],
             running: bool = True) -> list[dict[str, Any]]:
    filters: dict[str, Any] = {"service": service["ID"]}
    if running:
        filters["desired-state"] = "running"
    tasks = client.api.tasks(filters=filters)
    return sorted(tasks, key=lambda t: t.get("CreatedAt", ""), reverse=True)


def replica_name(service: Mapping[str, Any], task: Mapping[str, Any]) -> str:
    """A task as a replica: ``<service>.<slot>`` (what ``get`` lists and the controller reads)."""
    return f"{service['Spec']['Name']}.{task.get('Slot', task['ID'][:12])}"


def addresses_on(task: Mapping[str, Any], network: str) -> list[str]:
    """A task's addresses on the network named ``network``, without their prefix length."""
    return [address.split("/")[0] for attached in task.get("NetworksAttachments") or []
            if attached["Network"]["Spec"]["Name"] == network
            for address in attached.get("Addresses") or []]


def update(client: docker.DockerClient, service: Mapping[str, Any], **changes: Any) -> str | None:
    """A service update: the current spec with ``changes``; returns when the update
    before it started, for :func:`wait_rollout`."""
    spec = service["Spec"]
    current = {"task_template": spec["TaskTemplate"], "name": spec["Name"],
               "labels": spec.get("Labels"), "mode": spec.get("Mode"),
               "endpoint_spec": spec.get("EndpointSpec"),
               "update_config": spec.get("UpdateConfig"),
               "rollback_config": spec.get("RollbackConfig")}
    client.api.update_service(service["ID"], service["Version"]["Index"],
                                   **{**current, **changes})
    return (service.get("UpdateStatus") or {}).get("StartedAt")


def wait_rollout(client: docker.DockerClient, service: Mapping[str, Any], deadline: float,
                 what: str, since: str | None = None) -> None:
    """Until every task the service wants runs its current spec (Swarm counts a task as
    running once its health check passes); raise when Swarm rolled the update back, or
    a new task failed, with that task's last log lines (in a rolling update, once Swarm has
    had time to say it rolls back, so the error tells what became of the update). ``since``:
    when the update before this one started (its outcome is no news)."""
    spec = service["Spec"]
    wanted = spec["Mode"].get("Replicated", {}).get("Replicas")
    template = spec["TaskTemplate"]
    failed_at: float | None = None
    while True:
        service = client.api.inspect_service(service["ID"])
        status = service.get("UpdateStatus") or {}
        state = status.get("State", "") if status.get("StartedAt") != since else ""
        if state.startswith("rollback") or state == "paused":
            _raise_rolled_back(client, service, state, spec)
        if state != "updating" and _settled(client, service, wanted, template):
            return
        if state == "updating":  # a failed task makes Swarm roll back: report that outcome
            if failed_at is None and _failed(client, service, template):
                failed_at = time.monotonic()
            if failed_at is None:  # a task failing after that look waits its notice too
                _raise_if_late(client, service, what, deadline)
                time.sleep(POLL)
                continue
            if time.monotonic() < min(deadline, failed_at + ROLLBACK_NOTICE):
                time.sleep(POLL)
                continue
        _raise_if_failed(client, service, what, deadline, template)
        time.sleep(POLL)


def _settled(client: docker.DockerClient, service: Mapping[str, Any], wanted: int | None,
             template: Mapping[str, Any]) -> bool:
    """Whether the tasks that run are those of ``template`` alone, ``wanted`` of them (``None``:
    a global service, one on every node that takes tasks)."""
    tasks = tasks_of(client, service)
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    if wanted is None:
        nodes = nodes_taking_tasks(client)
        return nodes <= {t.get("NodeID") for t in running
                         if same(t["Spec"], template)} and all(
            same(t["Spec"], template) for t in running
            if t.get("NodeID") in nodes)
    return len(tasks) == wanted and len(running) == wanted and all(
        same(t["Spec"], template) for t in running)


def _failed(client: docker.DockerClient, service: Mapping[str, Any],
            template: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Tasks of the service's current spec that failed since its last change."""
    started = service.get("UpdatedAt", "")
    return [t for t in tasks_of(client, service, running=False)
            if t["Status"]["State"] in FAILED and t.get("UpdatedAt", "") >= started
            and (template is None or same(t["Spec"], template))]


def _raise_if_failed(client: docker.DockerClient, service: Mapping[str, Any], what: str,
                     deadline: float, template: Mapping[str, Any] | None = None) -> None:
    failed = _failed(client, service, template)
    if failed:
        task = failed[0]
        raise MlflowException(
            f"A task of the {what} service {service['Spec']['Name']} failed: "
            f"{task['Status'].get('Err') or task['Status']['State']}. Its last log lines:"
            f"\n{task_logs(client, service, task)}")
    _raise_if_late(client, service, what, deadline)


def _raise_if_late(client: docker.DockerClient, service: Mapping[str, Any], what: str,
                   deadline: float) -> None:
    if time.monotonic() > deadline:
        tasks = tasks_of(client, service)
        raise MlflowException(
            f"The {what} service {service['Spec']['Name']} was not ready in time (config "
            f"ready_timeout); its tasks: "
            f"{', '.join(t['Status']['State'] for t in tasks) or 'none'}. Last log lines:"
            f"\n{task_logs(client, service, tasks[0] if tasks else None)}")


def _raise_rolled_back(client: docker.DockerClient, service: Mapping[str, Any], state: str,
                       failed_spec: Mapping[str, Any]) -> None:
    """Say that Swarm rolled the update to ``failed_spec`` back, once the version before it
    runs again (so that what ``get`` shows next is the version that serves)."""
    template = failed_spec["TaskTemplate"]
    failed = [t for t in tasks_of(client, service, running=False)
              if same(t["Spec"], template)
              and t["Status"]["State"] != "running"]
    task = failed[0] if failed else None
    why = (task["Status"].get("Err") or task["Status"]["State"]) if task else state
    message = (service.get("UpdateStatus") or {}).get("Message", "")
    if state != "paused":  # a paused update keeps its spec: nothing comes back
        _wait_restored(client, service["ID"], failed_spec, time.monotonic() + REMOVE_TIMEOUT)
    raise MlflowException(
        f"Swarm rolled the update of {service['Spec']['Name']} back ({message or state}): "
        f"a new task did not get ready ({why}). Its last log lines:\n"
        f"{task_logs(client, service, task)}", INVALID_STATE)


def _wait_restored(client: docker.DockerClient, service_id: str,
                   failed_spec: Mapping[str, Any], deadline: float) -> None:
    """Until Swarm has put the previous spec back and only its tasks run, as many as it wants,
    or the deadline. Swarm may say ``rollback_completed`` while the failed version's task is
    still leaving, and reports a failed task before it says it rolls back."""
    while time.monotonic() < deadline:
        service = client.api.inspect_service(service_id)
        spec = service["Spec"]
        state = (service.get("UpdateStatus") or {}).get("State", "")
        if (state.startswith("rollback") and state != "rollback_started"
                and spec != failed_spec
                and _settled(client, service, spec["Mode"].get("Replicated", {}).get("Replicas"),
                             spec["TaskTemplate"])):
            return
        time.sleep(POLL)


def logged(client: docker.DockerClient, service: Mapping[str, Any], limit: int,
           **options: Any) -> list[str]:
    """At most ``limit`` lines the service's tasks logged, through the manager (from whichever
    node ran them), each led by its details (``com.docker.swarm.task.id=...``); ``options``
    go to the engine (``tail``, ``since``).

    Read on a thread for at most LOGS_SECONDS: the engine's service log stream can stay
    open without end when a task's container is gone, and a report must not hang on it (the
    thread ends when the engine closes the stream, at ``limit`` lines, or with the process).
    """
    found: list[str] = []

    def read() -> None:
        with contextlib.suppress(docker.errors.APIError, OSError):
            for chunk in client.api.service_logs(service["ID"], details=True,
                                                 stdout=True, stderr=True, **options):
                found.extend(chunk.decode(errors="replace").splitlines())
                if len(found) >= limit:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(LOGS_SECONDS)
    return found[:limit]


def task_logs(client: docker.DockerClient, service: Mapping[str, Any],
              task: Mapping[str, Any] | None, lines: int = 40) -> str:
    """The last lines a task logged."""
    if task is None:
        return "(no task)"
    mine = [line.split(" ", 1)[-1] for line in logged(client, service, 200, tail=200)
            if f"com.docker.swarm.task.id={task['ID']}" in line.split(" ", 1)[0]]
    return "\n".join(mine[-lines:]) or "(nothing logged)"


def sink_warning(client: docker.DockerClient, service: Mapping[str, Any],
                 tasks: list[dict[str, Any]], config: Mapping[str, str]) -> str | None:
    """The servers' warning that the inference log's HTTP sink was unreachable at start, read
    from the first lines logged since the oldest of ``tasks`` was made (``None`` when the
    deployment has no such sink)."""
    if not payload_log.posts(config):
        return None
    made = [when for when in (engine_time(t.get("CreatedAt", "")) for t in tasks) if when]
    if not made:
        return None
    lines = logged(client, service, STARTUP_LINES, since=int(min(made).timestamp()))
    return payload_log.sink_warning("\n".join(lines))


def nodes_taking_tasks(client: docker.DockerClient) -> set[str]:
    return {n["ID"] for n in client.api.nodes()
            if n["Status"]["State"] == "ready" and n["Spec"]["Availability"] == "active"}


def remove_service(client: docker.DockerClient, service_id: str, stop_timeout: int = 10) -> None:
    """Remove a service once its tasks are gone: a deployment's are scaled to none first,
    so each drains (out of the fronts, then its requests finished) before ``delete``
    returns; a removed service's tasks can no longer be asked for."""
    try:
        service = client.api.inspect_service(service_id)
        if "Replicated" in service["Spec"]["Mode"]:
            update(client, service, mode=ServiceMode("replicated", replicas=0))
            deadline = time.monotonic() + stop_timeout + REMOVE_TIMEOUT
            while time.monotonic() < deadline:
                live = nodes_taking_tasks(client)  # a lost node's tasks never report
                if not any(t["Status"]["State"] in ("running", "starting", "preparing")
                           and t.get("NodeID") in live
                           for t in tasks_of(client, service, running=False)):
                    break
                time.sleep(POLL)
        client.api.remove_service(service_id)
    except docker.errors.NotFound:
        return


def remove_network(client: docker.DockerClient, name: str) -> None:
    """The overlay goes once no task on any node holds an address on it; until the
    manager's engine has let go of it too, it is still listed, and asked again."""
    deadline = time.monotonic() + REMOVE_TIMEOUT
    while True:
        found = [n for n in client.networks.list(names=[name]) if n.name == name]
        if not found:
            return
        try:
            found[0].remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if time.monotonic() > deadline:
                raise MlflowException(
                    f"The network {name} is still in use ({exc.explanation or exc}); "
                    f"remove it once its tasks are gone: docker network rm {name}",
                    INVALID_STATE) from exc
        if time.monotonic() > deadline:
            raise MlflowException(f"The network {name} is still listed on the manager; "
                                  f"remove it: docker network rm {name}", INVALID_STATE)
        time.sleep(POLL)


def labels_of(service: Mapping[str, Any]) -> dict[str, str]:
    return dict(service["Spec"].get("Labels") or {})


def same(task_spec: Mapping[str, Any], template: Mapping[str, Any]) -> bool:
    """Whether a task runs the task template ``template``: the same container spec (but for
    the image's digest, pinned or not, and the environment's order), resources and restart
    policy. Swarm replaces every task when one of them changes (``-C memory`` or
    ``-C stop_timeout`` alone too). The rest is left out: Swarm does not replace a task for its
    placement, and the engine adds fields to a service's template that its tasks lack
    (``Runtime``)."""
    def key(spec: Mapping[str, Any]) -> tuple[Any, ...]:
        container = dict(spec.get("ContainerSpec") or {})
        container["Image"] = container.get("Image", "").split("@")[0]
        container["Env"] = sorted(container.get("Env") or [])
        return container, spec.get("Resources") or {}, spec.get("RestartPolicy") or {}
    return key(task_spec) == key(template)


