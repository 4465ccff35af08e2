"""What ``create`` and ``update`` check of ``-C follow_alias`` on the client, before anything
is built: an alias to follow, and a registry the controller can reach from the engine; and
whether a recorded config follows an alias at all."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target import config_values
from mlflow_docker_target.config import Settings

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?$")
FOLLOW_KEYS = ("follow_interval", "tracking_uri")
_SERVER_HINT = ("run a tracking server the engine reaches (for one, `mlflow server "
                "--backend-store-uri sqlite:///mlflow.db --host 0.0.0.0 --port 5000`) and give "
                "-C tracking_uri=http://<its address as the engine's containers see it>:5000")


def follows(config: Mapping[str, str]) -> bool:
    """Whether a deployment's recorded config follows an alias."""
    try:
        return config_values.boolean(config.get("follow_alias", "false"))
    except ValueError:
        return False


def rolls_out_as_canaries(config: Mapping[str, str]) -> bool:
    """Whether a deployment's recorded config makes its updates canaries, which the
    controller judges."""
    return config.get("rollout", "").strip() == "canary"


def follow_config(model_uri: str, settings: Settings,
                  config: Mapping[str, str]) -> dict[str, str]:
    """The config a followed deployment records (the registry it follows in, filled in from
    the client's tracking URI when not given); ``{}`` when it follows nothing. Raises on keys
    that conflict."""
    if not settings.follow_alias:
        given = [key for key in FOLLOW_KEYS if config.get(key, "").strip()]
        if given:
            raise MlflowException(
                f"-C {given[0]} applies only to a deployment that follows an alias: add "
                "-C follow_alias=true (with -m models:/<name>@<alias>), or leave it out.",
                INVALID_PARAMETER_VALUE)
        return {}
    if not ALIAS_URI.match(model_uri):
        raise MlflowException(
            f"-C follow_alias=true follows a registry alias, and {model_uri!r} names none: "
            "give -m models:/<name>@<alias> (for one, models:/fraud@champion), or leave "
            "follow_alias out to serve this model as it is.", INVALID_PARAMETER_VALUE)
    return {"tracking_uri": reachable_uri(settings.tracking_uri or mlflow.get_tracking_uri())}


def reachable_uri(uri: str) -> str:
    """``uri`` if a container could reach it; otherwise say what to give instead."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MlflowException(
            f"The controller runs on the Docker engine and asks the model registry there; "
            f"the tracking URI {uri!r} is a store on this machine that it cannot read: "
            f"{_SERVER_HINT}.", INVALID_PARAMETER_VALUE)
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if loopback:
        raise MlflowException(
            f"The tracking URI {uri!r} names this machine's loopback, which inside a container "
            "is the container itself: give -C tracking_uri=http://<an address the engine's "
            "containers reach> (on a local engine, the docker0 bridge's, often 172.17.0.1, "
            "with the server listening there).", INVALID_PARAMETER_VALUE)
    return uri.rstrip("/")
