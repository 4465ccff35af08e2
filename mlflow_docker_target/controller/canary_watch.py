"""The controller's watch over canaries (``-C rollout=canary``): every few seconds it reads
what each version's replicas served since the canary started, asks ``canary_verdict`` for a
verdict, and carries it out as a user would (``update -C canary=promote`` or ``abort``).

What it has counted lives in its ledger, per replica (a replica whose server restarted, as
in an engine restart, counts again from zero), so a controller that comes back carries on
where it was; the window opens when the canary has answered its first request, and is
measured in wall-clock time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import recorded_value
from mlflow_docker_target.controller import ledger
from mlflow_docker_target.controller.canary_verdict import Bounds, judge
from mlflow_docker_target.controller.replica_metrics import Served
from mlflow_docker_target.controller.rules import follows
from mlflow_docker_target.runtimes.lease import Held

log = logging.getLogger("mlflow_docker_target.controller")

LOOK = 2.0  # seconds between looks at a canary's figures
Read = Callable[[list[str]], Mapping[str, Served]]  # replicas' figures, by container name


class Ends(Protocol):
    """What the watch calls of the client: ``DockerHostDeploymentClient``."""

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None,
                          config: dict[str, Any] | None = None) -> dict[str, Any]: ...


def bounds(config: Mapping[str, str]) -> Bounds:
    return Bounds(recorded_value(config, "canary_window"),
                  recorded_value(config, "canary_min_requests"),
                  recorded_value(config, "canary_max_error_rate"),
                  recorded_value(config, "canary_max_latency_ratio"))


def look(client: Ends, read: Read, described: dict[str, Any],
         entries: dict[str, dict[str, Any]], now: Callable[[], float] = time.time) -> None:
    """One look at one deployment's canary, and its verdict carried out if there is one."""
    name, canary = described["name"], described.get("canary")
    entry = entries.setdefault(name, {})
    watched = entry.get("canary") or {}
    if canary is None:
        if watched.get("state") == "watching":  # ended by a user, or by a verdict not recorded
            watched.update(state="ended", reason="ended by update -C canary=promote or abort")
            log.info("Deployment %s: its canary ended without a verdict of the controller",
                     name)
            if described.get("model_version") != watched.get("version"):  # aborted
                _failed(entry, described, watched, "its canary was aborted")
        return
    if watched.get("rollout") != canary["rollout"]:
        watched = {"rollout": canary["rollout"], "version": canary.get("model_version"),
                   "model_uri": canary.get("resolved_model_uri"), "started": None,
                   "state": "watching", "replicas": {},
                   "sums": {"current": Served().as_record(), "canary": Served().as_record()}}
        entry["canary"] = watched
        log.info("Deployment %s: watching its canary %s (%s%% of its requests)", name,
                 watched["model_uri"], canary["traffic"]["canary"])
    groups = {"current": described["containers"], "canary": canary["containers"]}
    figures = read([c for group in groups.values() for c in group])
    for group, containers in groups.items():
        sums = Served.from_record(watched["sums"][group])
        for container in containers:
            if container not in figures:
                continue  # not answering this time: counted at the next look
            last = watched["replicas"].get(container)
            seen = figures[container]
            if last is None:  # first seen: the canary's count from its start
                added = seen if group == "canary" else Served()
            else:
                added = seen.since(Served.from_record(last))
            sums = sums + added
            watched["replicas"][container] = seen.as_record()
        watched["sums"][group] = sums.as_record()
    served = Served.from_record(watched["sums"]["canary"])
    if watched["started"] is None and served.requests:  # its window opens as it serves
        watched["started"] = now()
    verdict = judge(served, Served.from_record(watched["sums"]["current"]),
                    now() - watched["started"] if watched["started"] else 0.0,
                    bounds(described["config"]))
    watched.update(reason=verdict.reason, figures=verdict.figures)
    if verdict.action is None:
        return
    log.info("Deployment %s: canary %s: %s", name, "promoted" if verdict.action == "promote"
             else "aborted", verdict.reason)
    try:
        client.update_deployment(name, config={"canary": verdict.action})
    except Held as exc:  # a user's update at this moment: the verdict stands, tried again
        log.info("Deployment %s is busy (%s); the verdict is carried out at the next look",
                 name, exc.message)
        return
    except MlflowException as exc:
        log.error("Deployment %s: the canary's verdict (%s) failed: %s", name, verdict.action,
                  exc.message)
        watched.update(reason=f"{verdict.reason}; carrying it out failed: {exc.message}")
        return
    watched.update(state="promoted" if verdict.action == "promote" else "aborted",
                   verdict=verdict.action, decided_at=ledger.timestamp())
    if verdict.action == "abort":
        _failed(entry, described, watched, f"its canary was aborted: {verdict.reason}")


def _failed(entry: dict[str, Any], described: dict[str, Any], watched: dict[str, Any],
            why: str) -> None:
    """A followed alias's version whose canary was aborted is not tried again until the alias
    moves (as a version that failed to roll out)."""
    if not follows(described["config"]):
        return
    version = watched.get("version")
    entry.update(state="failed", failed_version=version, decided_at=ledger.timestamp(),
                 decision=f"version {version} failed; version {described.get('model_version')}"
                 f" serves on (not tried again until the alias moves): {why}")
