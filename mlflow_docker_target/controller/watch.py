"""The controller's loop: for each deployment that follows an alias, ask the registry which
version the alias names, and roll that version out when it moved; for each one that rolls out
as canaries, look at its canary (``canary_watch``). A followed alias's version that rolls out
as a canary is left to the canary's verdict; an aborted one counts as failed, not tried again
until the alias moves.

It acts through the same client a user runs (``DockerHostDeploymentClient`` on the engine's
socket), so a rollout takes the deployment's lease like any ``update``: a user's update at the
same moment makes one of the two wait or fail, never both act. Serving is never touched by
anything but such an update: a registry that cannot be reached is retried with a growing pause
and logged; a version that fails to build or get ready is recorded (the current one serves on)
and not tried again until the alias moves.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_docker_target.config import recorded_value
from mlflow_docker_target.controller import canary_watch, ledger
from mlflow_docker_target.controller.rules import ALIAS_URI, follows, rolls_out_as_canaries
from mlflow_docker_target.runtimes.lease import Held


class Deployments(canary_watch.Ends, Protocol):
    """What the loop calls: ``DockerHostDeploymentClient`` on the engine's socket."""

    def list_deployments(self, endpoint: str | None = None, *,
                         follow: bool = True) -> list[dict[str, Any]]: ...

log = logging.getLogger("mlflow_docker_target.controller")

TICK = 1.0  # seconds between looks at the engine's deployments
RETRY_PAUSE = (5.0, 300.0)  # after a registry failure: the first pause, and the longest
# what the registry answers when the alias (or the model) is not there
_MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
STARTED = "Controller started"  # its first line, once it has listed the engine's deployments


def run(client: Deployments, engine_id: str, read: canary_watch.Read,
        directory: str = ledger.DIR, stop: threading.Event | None = None) -> None:
    """Follow and judge until ``stop``; ``engine_id`` (``docker info``'s ID) is said in the
    first line, for the client that started it to check it reached the engine meant;
    ``read`` gives replicas' figures."""
    stop = stop or threading.Event()
    entries = ledger.load(directory)
    due: dict[str, float] = {}
    judging_due: dict[str, float] = {}
    started = False
    while not stop.is_set():
        try:
            watched = [d for d in client.list_deployments(follow=False)
                       if follows(d["config"]) or rolls_out_as_canaries(d["config"])]
        except MlflowException as exc:
            log.warning("Cannot list the engine's deployments: %s", exc)
            stop.wait(RETRY_PAUSE[0])
            continue
        followed = [d for d in watched if follows(d["config"])]
        if not started:
            started = True
            log.info("%s on engine %s: %d deployment(s) follow an alias, %d roll out as "
                     "canaries", STARTED, engine_id, len(followed), len(watched) - len(followed))
        for described in followed:
            name = described["name"]
            if due.get(name, 0.0) <= time.monotonic():
                due[name] = time.monotonic() + check(client, described, entries)
                ledger.save(entries, directory)
        for described in watched:
            name = described["name"]
            if (rolls_out_as_canaries(described["config"])
                    and judging_due.get(name, 0.0) <= time.monotonic()):
                judging_due[name] = time.monotonic() + canary_watch.LOOK
                canary_watch.look(client, read, described, entries)
                ledger.save(entries, directory)
        for gone in set(entries) - {d["name"] for d in watched}:
            log.info("Deployment %s is gone, or the controller has no more to do with it",
                     gone)
            del entries[gone]
            ledger.save(entries, directory)
        stop.wait(TICK)


def check(client: Deployments, described: dict[str, Any],
          entries: dict[str, dict[str, Any]]) -> float:
    """One look at one deployment's alias, and the rollout if it moved; the seconds until the
    next look."""
    name, config = described["name"], described["config"]
    interval = float(recorded_value(config, "follow_interval"))
    matched = ALIAS_URI.match(described.get("model_uri") or "")
    entry = entries.get(name, {})
    if matched is None:  # refused at create; seen only if labels were changed by hand
        return _say(entries, name, f"follows no alias ({described.get('model_uri')})",
                    interval, state="not-following")
    model, alias = matched["name"], matched["alias"]
    current = described.get("model_version")
    canary = described.get("canary")
    if canary is not None:  # the alias's version as a canary: its verdict decides
        return _say(entries, name, f"version {canary.get('model_version')} runs as a canary "
                    f"beside version {current}; its verdict decides", interval, state="canary",
                    target=canary.get("model_version"))
    tracking = config.get("tracking_uri")
    try:
        named = MlflowClient(tracking_uri=tracking, registry_uri=tracking) \
            .get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return _say(entries, name, f"alias @{alias} of {model} is not in the registry "
                        f"({exc.message}); staying on version {current}", interval,
                        state="alias-missing")
        failures = entry.get("registry_failures", 0) + 1
        pause = min(RETRY_PAUSE[1], RETRY_PAUSE[0] * 2 ** (failures - 1))
        log.warning("Deployment %s: the registry at %s failed (%s); next try in %.0f s",
                    name, tracking, exc.message, pause)
        ledger.decide(entries, name, f"registry at {tracking} failed: {exc.message}; serving "
                      f"version {current} meanwhile", state="registry-unreachable",
                      registry_failures=failures)
        return pause
    entry.pop("registry_failures", None)
    version = str(named.version)
    # a rollout this controller began and did not see end (it was killed or the engine
    # restarted): the replicas may hold two versions, so it is made again, to the end
    cut_short = entry.get("state") == "rolling-out" or len(described["models_served"]) > 1
    if version == current and not cut_short:
        return _say(entries, name, f"serving version {version}, which @{alias} names",
                    interval, state="serving", version=version)
    if entry.get("failed_version") == version and not cut_short:
        return interval  # said when it failed; tried again only once the alias moves
    if cut_short:
        log.info("Deployment %s: a rollout to version %s was cut short (replicas serve %s); "
                 "making it again", name, version, described["models_served"] or "nothing")
    else:
        log.info("Deployment %s: @%s moved from version %s to %s; rolling it out", name,
                 alias, current, version)
    ledger.decide(entries, name, f"@{alias} moved from version {current} to {version}: "
                  "rolling it out", state="rolling-out", target=version)
    try:
        updated = client.update_deployment(name, model_uri=described["model_uri"])
    except Held as exc:  # a user's update, or the lease of a controller that was killed
        log.info("Deployment %s is busy (%s); next look in %.0f s", name, exc.message,
                 interval)
        return interval
    except MlflowException as exc:
        log.error("Deployment %s: version %s failed; version %s serves on. %s", name, version,
                  current, exc.message)
        ledger.decide(entries, name, f"version {version} failed; version {current} serves on "
                      f"(not tried again until @{alias} moves): {exc.message}",
                      state="failed", failed_version=version)
        return interval
    if updated.get("canary"):
        log.info("Deployment %s: version %s runs as a canary (%s%% of its requests)", name,
                 version, updated["canary"]["traffic"]["canary"])
        ledger.decide(entries, name, f"version {version}, which @{alias} names, runs as a "
                      f"canary beside version {current}; its verdict decides", state="canary",
                      target=version)
        return interval
    served = updated.get("model_version")
    log.info("Deployment %s now serves version %s", name, served)
    ledger.decide(entries, name, f"rolled out version {served}, which @{alias} names",
                  state="serving", version=served, failed_version=None)
    return interval


def _say(entries: dict[str, dict[str, Any]], name: str, decision: str, pause: float,
         **facts: Any) -> float:
    """Record a decision, logging it only when it differs from the last one."""
    if entries.get(name, {}).get("decision") != decision:
        log.info("Deployment %s: %s", name, decision)
        ledger.decide(entries, name, decision, **facts)
    return pause
