"""A swarm front's settings (its HAProxy configuration and HTTPS certificate), handed to the
front on every node without restarting it.

A front's task definition never changes once it is made (``front_command``): on a swarm,
changing it restarts the task, and that node's clients lose the requests the stopping front
held or was sent meanwhile. What changes lives in a second global service, the front's
settings (role ``front-settings``), whose task definition holds one *generation*: a Swarm
config (the configuration) and, for HTTPS, a Swarm secret (the certificate and key), both
immutable, named by a hash of what they hold. On each node its task and the front share a
small volume (tmpfs, owned by the fronts' user):

- the settings task copies its generation into ``<dir>/<generation>/`` and names it in
  ``<dir>/wanted``, then waits for the front's answer;
- the front checks the generation (``haproxy -c``), makes it its live configuration and
  reloads HAProxy's master (new workers take new connections, the old ones finish theirs:
  nothing is lost), and names it in ``<dir>/applied``; one it refuses goes in
  ``<dir>/refused`` with HAProxy's reason. It reloads with the generation's configuration
  seeded with the replicas' addresses as they were when it was made, so that the new workers
  route their first requests without waiting for Docker's DNS; a later start takes the same
  configuration without the seeds, which may be stale by then;
- the settings task is healthy once its node's front runs its generation, and fails (with the
  reason in its log) when the front refused it. A change is therefore a Swarm update of
  the settings service, done when every node's front runs the new generation, and rolled back
  by Swarm (the previous generation handed over again) when one could not take it.

A front that starts later (a new node, a restart) waits for its node's settings task and
starts with the current generation. Nothing listens for commands: HAProxy's admin interfaces
stay off, and only these two services mount the volume (never a model's tasks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.models.configs import ConfigCollection
from docker.models.secrets import SecretCollection
from docker.types import (
    ConfigReference,
    ContainerSpec,
    DriverConfig,
    Healthcheck,
    Mount,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)

from mlflow_docker_target import record
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.runtimes import haproxy
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.haproxy import Limits
from mlflow_docker_target.runtimes.swarm.services import (
    NS,
    labels_of,
    remove_service,
    update,
    wait_rollout,
)

DIR = haproxy.CONFIG_DIR  # the shared volume, in both tasks
SUFFIX = "-settings"
# the Swarm configs, in the settings task: a generation's configuration, and the same seeded
CONFIG_FILE = "/run/mlflow-dockerhost/haproxy.cfg"
RELOAD_CONFIG_FILE = "/run/mlflow-dockerhost/reload.cfg"
TLS_FILE = "mlflow-dockerhost-tls.pem"  # the Swarm secret's name in /run/secrets
VOLUME_SIZE = 4 * 1024 * 1024  # bytes of tmpfs: a few generations of a config and a key
START_TIMEOUT = 120  # a settings task: pull the proxy image, its front taking the generation
HEALTH_INTERVAL = 0.5  # seconds: how soon Swarm sees that the front took a generation
VOLUME_WAIT = 30  # seconds this node's tasks may take to go before the volume is left
RELOAD_WAIT = 10  # seconds a front waits for its master's new worker after a reload

# The front: wait for a generation its node's settings task hands over, check it, start
# HAProxy's master with it; then follow ``wanted``, reloading the master for each new
# generation that passes the check (with its seeded configuration, then left with the other
# for a later start). A generation counts as applied once the master has forked
# a new worker (a reload that fails to load keeps the old worker and forks none).
# Swarm's stop signal (SIGUSR1: HAProxy's soft stop) is passed on to the master.
_FRONT_SCRIPT = f"""
d={DIR}
until [ -s "$d/wanted" ]; do sleep 0.2; done
note() {{ echo "$2" > "$d/.$1"; mv -f "$d/.$1" "$d/$1"; }}
refuse() {{
  echo "front settings: refused generation $1: $2" >&2
  note refused "$1
$2"
  rm -rf "${{d:?}}/$1"
}}
live() {{
  if out=$(haproxy -c -f "$d/$1/$2" 2>&1); then
    cp "$d/$1/$2" "$d/.haproxy.cfg" && mv -f "$d/.haproxy.cfg" "$d/haproxy.cfg" && return 0
  fi
  refuse "$1" "$out"; return 1
}}
workers() {{
  for s in /proc/[0-9]*/stat; do
    read -r p c x pp rest 2>/dev/null < "$s" && [ "$pp" = "$pid" ] && echo "$p"
  done
}}
g=$(cat "$d/wanted")
until live "$g" haproxy.cfg; do
  while [ "$(cat "$d/wanted")" = "$g" ]; do sleep 0.5; done
  g=$(cat "$d/wanted")
done
haproxy -W -db -f "$d/haproxy.cfg" & pid=$!
stopping=
trap 'stopping=1; kill -USR1 $pid' USR1
trap 'stopping=1; kill -TERM $pid' TERM INT
note applied "$g"
echo "front settings: running generation $g"
tried=
while kill -0 "$pid" 2>/dev/null; do
  sleep 0.5 & wait $!
  w=$(cat "$d/wanted" 2>/dev/null)
  if [ -n "$stopping" ] || [ -z "$w" ] || [ "$w" = "$g" ] || [ "$w" = "$tried" ]; then
    continue
  fi
  tried=$w
  live "$w" reload.cfg || continue
  before=" $(echo $(workers)) "
  kill -USR2 "$pid"
  new=
  i=0
  while [ $i -lt {RELOAD_WAIT * 10} ]; do
    i=$((i + 1))
    for p in $(workers); do
      case "$before" in *" $p "*) ;; *) new=$p ;; esac
    done
    [ -n "$new" ] && break
    sleep 0.1
  done
  if [ -z "$new" ]; then
    refuse "$w" "HAProxy did not load it (its log above says why)"
    live "$g" haproxy.cfg
    continue
  fi
  live "$w" haproxy.cfg  # what a later start takes: no seeds
  rm -rf "$d/$g"
  g=$w
  note applied "$g"
  echo "front settings: running generation $g"
done
wait "$pid"
"""

# The settings task: hand its generation over (files first, then its name), then wait for
# this node's front to run it (healthy) or refuse it (fail, with the reason).
_SETTINGS_SCRIPT = f"""
set -eu
d={DIR}
g=$GENERATION
if [ ! -d "$d/$g" ]; then
  rm -rf "$d/.$g"
  mkdir "$d/.$g"
  cp {CONFIG_FILE} "$d/.$g/haproxy.cfg"
  cp {RELOAD_CONFIG_FILE} "$d/.$g/reload.cfg"
  if [ -f /run/secrets/{TLS_FILE} ]; then
    cp /run/secrets/{TLS_FILE} "$d/.$g/tls.pem"
    chmod 600 "$d/.$g/tls.pem"
  fi
  mv "$d/.$g" "$d/$g"
fi
echo "$g" > "$d/.wanted"
mv -f "$d/.wanted" "$d/wanted"
echo "front settings: handed generation $g to this node's front"
while :; do
  if [ "$(cat "$d/applied" 2>/dev/null)" = "$g" ]; then
    echo "front settings: this node's front runs generation $g"
    exec sleep 2147483647
  fi
  if [ "$(head -n 1 "$d/refused" 2>/dev/null)" = "$g" ]; then
    echo "front settings: this node's front refused generation $g:" >&2
    tail -n +2 "$d/refused" >&2
    exit 1
  fi
  sleep 0.2
done
"""

FRONT_COMMAND = ["sh", "-c", _FRONT_SCRIPT]
SETTINGS_COMMAND = ["sh", "-c", _SETTINGS_SCRIPT]


def name_of(front: str) -> str:
    """The settings service (and its volume's name) of the front service ``front``."""
    if len(front) + len(SUFFIX) <= 63:
        return front + SUFFIX
    digest = hashlib.sha256(front.encode()).hexdigest()[:8]
    return f"{front[:63 - len(SUFFIX) - 9]}-{digest}{SUFFIX}"


def volume(front: str) -> Mount:
    """The node-local volume both services mount at :data:`DIR`: tmpfs, so that the key never
    reaches a node's disk, and readable only by the fronts' user."""
    uid, gid = haproxy.FRONT_USER.split(":")
    options = {"type": "tmpfs", "device": "tmpfs",
               "o": f"size={VOLUME_SIZE},uid={uid},gid={gid},mode=0700"}
    return Mount(DIR, name_of(front), type="volume", no_copy=True,
                 labels={record.ROLE: record.FRONT_SETTINGS, record.SETTINGS_OF: front},
                 driver_config=DriverConfig("local", options))


@dataclass(frozen=True)
class Generation:
    """What a front is to serve: its name (a hash of ``config`` and the certificate chain),
    the configuration a front starts with, and the one it reloads with, seeded with the
    replicas' current addresses so that its new workers route their first request (the
    seeds go stale, so a front that starts later resolves them itself)."""

    name: str
    config: bytes
    reload_config: bytes


def generation(endpoint: str, backends: tuple[haproxy.Backend, ...], limits: Limits,
               metrics: bool, chain: bytes | None) -> Generation:
    """A generation of ``backends`` (their ``servers``: the seeds) within ``limits``. An HTTPS
    front's configuration names its certificate's file, which is the generation's own, so its
    name is a hash taken with a stand-in path and the chain."""
    unseeded = tuple(dataclasses.replace(
        b, servers=(), canary=b.canary and dataclasses.replace(b.canary, servers=()))
        for b in backends)

    def text(served: tuple[haproxy.Backend, ...], tls: str | None) -> bytes:
        return haproxy.render(endpoint, served, limits, metrics, tls).encode()

    if chain is None:
        name = hashlib.sha256(text(unseeded, None)).hexdigest()[:12]
        return Generation(name, text(unseeded, None), text(backends, None))
    name = hashlib.sha256(text(unseeded, f"{DIR}/-/tls.pem") + chain).hexdigest()[:12]
    tls = f"{DIR}/{name}/tls.pem"
    return Generation(name, text(unseeded, tls), text(backends, tls))


def start(client: docker.DockerClient, front: str, image: str, labels: Mapping[str, str],
          generation_: Generation, tls: Certificate | None) -> str:
    """The settings service of the front service ``front``, handing ``generation_`` to every
    node; returns its ID (wait for it with ``wait``)."""
    name = name_of(front)
    labels = {**labels, record.ROLE: record.FRONT_SETTINGS, record.SETTINGS_OF: front}
    template = _template(image, front, generation_.name, _configs(client, front, generation_),
                         _secret(client, front, tls))
    return str(client.api.create_service(
        template, name=name, labels=labels, mode=ServiceMode("global"),
        # its tasks serve nothing: every node takes a new generation at once
        update_config=UpdateConfig(parallelism=0, order="stop-first", failure_action="rollback",
                                   monitor=NS))["ID"])


def find(client: docker.DockerClient, front: str) -> dict[str, Any] | None:
    found = client.api.services(filters={"name": name_of(front)})
    return next((s for s in found if s["Spec"]["Name"] == name_of(front)), None)


def handed(service: Mapping[str, Any]) -> str | None:
    """The generation the settings service hands over."""
    env = service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
    return next((e.split("=", 1)[1] for e in env if e.startswith("GENERATION=")), None)


def hand_over(client: docker.DockerClient, service: Mapping[str, Any],
              generation_: Generation, tls: Certificate | None) -> None:
    """Hand a new generation to every node's front, and wait until each runs it; ``tls``: a
    new certificate, else the one the fronts have. Raises when Swarm rolled back (a front
    refused it: the previous generation serves on)."""
    spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    front = labels_of(service)[record.SETTINGS_OF]
    secret = _secret(client, front, tls) if tls is not None else spec.get("Secrets") or []
    configs = _configs(client, front, generation_)
    since = update(client, service, task_template=_template(
        spec["Image"], front, generation_.name, configs, secret))
    wait(client, service["ID"], since)
    _remove_stored(client.configs, front, {c["ConfigID"] for c in configs})
    _remove_stored(client.secrets, front, {s["SecretID"] for s in secret})


def wait(client: docker.DockerClient, service_id: str, since: str | None = None) -> None:
    """Until every node's front runs the settings service's generation."""
    wait_rollout(client, client.api.inspect_service(service_id),
                 time.monotonic() + START_TIMEOUT, "front settings", since)


def remove(client: docker.DockerClient, front: str) -> None:
    """The settings service, its configs and its secrets."""
    found = find(client, front)
    if found is not None:
        remove_service(client, found["ID"])
    _remove_stored(client.configs, front)
    _remove_stored(client.secrets, front)


def remove_volume(client: docker.DockerClient, front: str) -> None:
    """This node's volume, once the tasks that mounted it are gone; every other node keeps an
    empty one (its tmpfs goes with the last task): ``docker volume rm`` there removes it."""
    deadline = time.monotonic() + VOLUME_WAIT
    while True:
        try:
            client.volumes.get(name_of(front)).remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:  # still in use by a task that is going
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)


def _template(image: str, front: str, generation_: str, configs: list[ConfigReference],
              secret: list[Any]) -> TaskTemplate:
    locked = lockdown.service_options()
    health = Healthcheck(
        test=["CMD", "sh", "-c", f'test "$(cat {DIR}/applied)" = "$GENERATION"'],
        interval=int(HEALTH_INTERVAL * NS), timeout=5 * NS, retries=3,
        start_period=START_TIMEOUT * NS)
    return TaskTemplate(
        ContainerSpec(image, command=SETTINGS_COMMAND, init=True,
                      user=haproxy.FRONT_USER, env={"GENERATION": generation_},
                      configs=configs, secrets=secret or None, healthcheck=health,
                      mounts=[*locked.pop("mounts", []), volume(front)], **locked),
        resources=lockdown.with_pids_limit({}, lockdown.HELPER_PIDS),
        restart_policy=RestartPolicy("any", delay=NS))


def _configs(client: docker.DockerClient, front: str,
             generation_: Generation) -> list[ConfigReference]:
    """The Swarm configs of a generation (made unless they exist): what a front starts with,
    and what it reloads with."""
    return [_config(client, front, generation_.config, CONFIG_FILE),
            _config(client, front, generation_.reload_config, RELOAD_CONFIG_FILE)]


def stored_name(front: str, data: bytes) -> str:
    """A Swarm config's or secret's name: the settings service's, cut to fit Swarm's 64
    characters, and a hash of what it holds (both are immutable)."""
    return f"{name_of(front)[:51]}-{hashlib.sha256(data).hexdigest()[:12]}"


def _config(client: docker.DockerClient, front: str, data: bytes,
            path: str) -> ConfigReference:
    """A Swarm config holding one of a generation's configurations, at ``path``."""
    name = stored_name(front, data)
    uid, gid = haproxy.FRONT_USER.split(":")
    return ConfigReference(_stored(client.configs, front, name, data), name,
                           filename=path, uid=uid, gid=gid, mode=0o400)


def _secret(client: docker.DockerClient, front: str,
            tls: Certificate | None) -> list[SecretReference]:
    """A Swarm secret holding the certificate and key, as a file only the fronts' user reads.
    Its name holds a hash of the certificate (never of the key: the certificate names it)."""
    if tls is None:
        return []
    name = stored_name(front, tls.chain)
    uid, gid = haproxy.FRONT_USER.split(":")
    return [SecretReference(_stored(client.secrets, front, name, tls.pem()), name,
                            filename=TLS_FILE, uid=uid, gid=gid, mode=0o400)]


def _stored(stored: ConfigCollection | SecretCollection, front: str, name: str,
            data: bytes) -> str:
    """The id of the config (or secret) ``name``, made with ``data`` unless it exists (its
    name holds a hash of what it holds: both are immutable)."""
    try:
        return str(stored.get(name).id)
    except docker.errors.NotFound:
        return str(stored.create(name=name, data=data, labels={record.SETTINGS_OF: front}).id)


def _remove_stored(stored: ConfigCollection | SecretCollection, front: str,
                   keep: frozenset[str] | set[str] = frozenset()) -> None:
    """The front's configs (or secrets), all but those in ``keep``; one a stopping task still
    uses stays until the next change."""
    for item in stored.list(filters={"label": f"{record.SETTINGS_OF}={front}"}):
        if item.id not in keep:
            with contextlib.suppress(docker.errors.APIError):  # a stopping task's
                item.remove()
