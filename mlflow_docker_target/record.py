"""The deployment record: the labels the plugin writes on what it makes, and reads back.

Labels are the only state and a public interface (users filter on them): keys never change
meaning, and new ones are added beside the old. Everything that turns a deployment into labels,
or labels back into a model reference and a config, lives here, with the one rule for which
config values are secret applied (``config.is_secret``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow_docker_target.config import ENV_PREFIX, MASK, SECRET_KEYS, is_secret
from serving_image.contract import ENV_PREFIX as SERVER_ENV_PREFIX

LABEL = "io.mlflow.dockerhost"

# What a container or image is and what it belongs to.
DEPLOYMENT = f"{LABEL}.deployment"
ROLE = f"{LABEL}.role"  # server, front, front-settings, lock, probe, controller or payload-log
ENDPOINT = f"{LABEL}.endpoint"  # a shared endpoint: on its front and on its deployments' servers
FRONT_OF = f"{LABEL}.front-of"  # the deployment a private front belongs to
SLOT = f"{LABEL}.slot"  # a replica's number behind its front: its server line and network alias
# the rollout that started a replica (an id): a canary's replicas are those of the rollout its
# front names, and scaling gives new replicas their deployment's
ROLLOUT = f"{LABEL}.rollout"
PORT = f"{LABEL}.port"  # the host port a front publishes, chosen once
METRICS_PORT = f"{LABEL}.metrics-port"  # the host port of a front's own metrics, if any
HOST_ADDRESS = f"{LABEL}.host-address"
LOCK = f"{LABEL}.lock"
LOCK_SINCE = f"{LABEL}.lock-since"  # a lease's start, in the engine's time
LOCK_HOLDER = f"{LABEL}.lock-holder"  # who holds a lease: user@host pid
LOCAL_RUN = f"{LABEL}.run-local"
PLUGIN_VERSION = f"{LABEL}.plugin-version"
RUNTIME = f"{LABEL}.runtime"  # "swarm" on services; containers carry none
TRAFFIC = f"{LABEL}.traffic"  # a swarm front's traffic shares (JSON; null: an even split)
LIMITS = f"{LABEL}.limits"  # a swarm front's rate and connection limits (JSON)
# a swarm front's canaries: {deployment: {"rollout": id, "share": percent}} (JSON)
CANARIES = f"{LABEL}.canaries"
HTTPS = f"{LABEL}.https"  # "true" on a front whose port serves TLS only, chosen when it is made
CERTIFICATE = f"{LABEL}.certificate"  # a swarm HTTPS front's certificate chain (PEM, public)
# the front service a swarm front's settings belong to: on the settings service, its configs,
# secrets and volumes
SETTINGS_OF = f"{LABEL}.settings-of"

# The model and how it is served.
MODEL_URI = f"{LABEL}.model-uri"
MODEL_RESOLVED_URI = f"{LABEL}.model-resolved-uri"
MODEL_NAME = f"{LABEL}.model-name"
MODEL_VERSION = f"{LABEL}.model-version"
RUN_ID = f"{LABEL}.run-id"
FLAVOR = f"{LABEL}.flavor"
IMAGE = f"{LABEL}.image"
CONFIG = f"{LABEL}.config"

# Images.
KIND = f"{LABEL}.kind"
STAGE = f"{LABEL}.stage"
BUILD = f"{LABEL}.build"  # the build a build-stage image belongs to: removed when it ends
ENVIRONMENT = f"{LABEL}.environment"
BASE_IMAGE = f"{LABEL}.base-image"
REQUIREMENTS = f"{LABEL}.requirements"
SYSTEM_PACKAGES = f"{LABEL}.system-packages"  # -C system_packages on a system image
BASE_PACKAGES = f"{LABEL}.base-packages"  # the Debian packages of a local base (base_image.py)
BASE_SUITE = f"{LABEL}.base-suite"

SERVER, FRONT, LOCK_ROLE = "server", "front", "lock"
PROBE_ROLE = "probe"  # a throwaway container that asks the engine a question (gpus.check)
PAYLOAD_LOG = "payload-log"  # the role of a deployment's inference log volume
FRONT_SETTINGS = "front-settings"  # a swarm front's settings service, and its volumes
CONTROLLER = "controller"  # the engine's controller (and its volume), which follows aliases

# How a client reaches the engine, the port of the endpoint a create made, and the client's
# files of the endpoint's certificate (the front holds what they held), and the end of a canary
# (an action) are no part of a deployment: never recorded on it.
NOT_RECORDED = frozenset({"docker_host", "timeout", "tlscacert", "tlscert", "tlskey",
                          "tlsverify", "endpoint_port", "https_cert", "https_key", "canary"})
PYFUNC = "python_function"


@dataclass(frozen=True)
class ModelRef:
    """A model URI as the user gave it and what it pointed at when resolved."""

    uri: str
    resolved_uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    # the tracking URI of the registry it is resolved and fetched in, when it is not the
    # client's own (a followed alias's ``-C tracking_uri``); never a label
    registry: str | None = None


def redacted(config: Mapping[str, str]) -> dict[str, str]:
    """Config fit to print or to put in a label: secrets masked."""
    return {k: (MASK if is_secret(k) else v) for k, v in config.items()}


def model_labels(ref: ModelRef) -> dict[str, str]:
    return {
        MODEL_URI: ref.uri,
        MODEL_RESOLVED_URI: ref.resolved_uri,
        MODEL_NAME: ref.name or "",
        MODEL_VERSION: ref.version or "",
        RUN_ID: ref.run_id or "",
    }


def model_from_labels(labels: Mapping[str, str]) -> ModelRef:
    return ModelRef(labels[MODEL_URI], labels[MODEL_RESOLVED_URI],
                    labels.get(MODEL_NAME) or None, labels.get(MODEL_VERSION) or None,
                    labels.get(RUN_ID) or None)


def server_labels(deployment: str, image: str, model: ModelRef, config: Mapping[str, str],
                  plugin_version: str, endpoint: str | None = None) -> dict[str, str]:
    """A serving container's labels; secrets stay in its environment, out of labels."""
    labels = {
        DEPLOYMENT: deployment,
        ROLE: SERVER,
        **model_labels(model),
        FLAVOR: PYFUNC,
        IMAGE: image,
        CONFIG: json.dumps(redacted({k: v for k, v in config.items()
                                     if k not in NOT_RECORDED}), sort_keys=True),
        PLUGIN_VERSION: plugin_version,
    }
    if endpoint:
        labels[ENDPOINT] = endpoint
    return labels


def recorded_config(labels: Mapping[str, str], environment: list[str] | None) -> dict[str, str]:
    """The config a deployment was made with, secrets restored from the container's environment
    (``auth_token`` from SCORING_AUTH_TOKEN, ``env.NAME`` from NAME), for ``update`` to build on.
    """
    config: dict[str, str] = json.loads(labels.get(CONFIG, "{}"))
    env = dict(entry.partition("=")[::2] for entry in environment or [])
    for key, value in list(config.items()):
        if value == MASK and is_secret(key):
            name = (SERVER_ENV_PREFIX + key.upper() if key in SECRET_KEYS
                    else key[len(ENV_PREFIX):])
            config[key] = env.get(name, "")
    return config
