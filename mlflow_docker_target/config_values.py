"""How ``-C`` values are read: each parser takes MLflow's string and returns the typed value, or
raises ``ValueError``, which ``config.parse_config`` turns into an error naming the key, what it
accepts and its default."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from typing import Any


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(value)


def number(convert: Callable[[str], Any], low: float, high: float = math.inf,
            low_allowed: bool = True) -> Callable[[str], Any]:
    """A parser for numbers within [low, high] (or (low, high] when low is not allowed)."""

    def parse(value: str) -> Any:
        number = convert(value)
        if not low <= number <= high or (number == low and not low_allowed):
            raise ValueError(value)
        return number

    return parse


positive_int = number(int, 1)
port = number(int, 1, 65535)
seconds = number(float, 0, low_allowed=False)
non_negative = number(float, 0)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size(value: str) -> int:
    """Docker-style sizes: ``512m``, ``2g``, ``1.5GiB``, or plain bytes."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(value)
    number = int(float(match.group(1)) * _SIZE_FACTOR[match.group(2).lower()])
    if number < 1:
        raise ValueError(value)
    return number


def ip(value: str) -> str:
    return str(ipaddress.ip_address(value.strip()))


def networks(value: str) -> tuple[str, ...]:
    """CIDRs (or single addresses) separated by commas, normalized: ``10.0.0.0/8,192.0.2.7``."""
    found = tuple(str(ipaddress.ip_network(part.strip(), strict=False))
                  for part in value.split(",") if part.strip())
    if not found:
        raise ValueError(value)
    return found


_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(?::\d+)?)$")


def restart_policy(value: str) -> str:
    if not _RESTART.match(value.strip()):
        raise ValueError(value)
    return value.strip()


GPU_DEVICES = re.compile(r"^device=([A-Za-z0-9-]+(?:,[A-Za-z0-9-]+)*)$")


def gpus(value: str) -> str:
    """``all``, a count >= 1, or ``device=<id>[,<id>...]``, as ``docker run --gpus`` takes."""
    value = value.strip()
    if value == "all" or GPU_DEVICES.match(value) or (value.isdigit() and int(value) >= 1):
        return value
    raise ValueError(value)


_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.:=~-]*$")


def packages(value: str) -> tuple[str, ...]:
    """Comma-separated package names (``libgomp1,libgl1``), as the base's package manager takes."""
    names = tuple(sorted({name.strip() for name in value.split(",") if name.strip()}))
    if not names or not all(_PACKAGE.match(name) for name in names):
        raise ValueError(value)
    return names


_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.-]+\s*(==|!=)\s*[^,\s]+$")


def constraints(value: str) -> tuple[str, ...]:
    """Swarm placement constraints separated by commas (``node.labels.gpu==true,...``)."""
    parts = tuple(part.strip() for part in value.split(",") if part.strip())
    if not parts or not all(_CONSTRAINT.match(part) for part in parts):
        raise ValueError(value)
    return parts


_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?$")


def registry(value: str) -> str:
    """``host:port[/prefix]``: where a swarm's nodes pull the images built on the manager."""
    value = value.strip().rstrip("/")
    if not _REGISTRY.match(value):
        raise ValueError(value)
    return value


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.strip() not in options:
            raise ValueError(value)
        return value.strip()

    return parse


def runtime(value: str) -> str:
    """A runtime's name; which exist is the runtimes' table's to say (``runtimes.entry``)."""
    return text(value).lower()


def text(value: str) -> str:
    if not value.strip():
        raise ValueError(value)
    return value.strip()


def path(value: str) -> str:
    return os.path.abspath(os.path.expanduser(text(value)))


def payload_sink(value: str) -> str:
    """Where the inference log goes: ``volume``, or an ``http://`` or ``https://`` URL."""
    from urllib.parse import urlsplit

    value = value.strip()
    if value == "volume":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(value)
    parts.port  # noqa: B018 (raises ValueError on a bad port)
    return value


def tracking_uri(value: str) -> str:
    """A tracking server's ``http://`` or ``https://`` URL: what a container can ask (a
    ``sqlite:`` or ``file:`` store lives on the client)."""
    from urllib.parse import urlsplit

    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(value)
    parts.port  # noqa: B018 (raises ValueError on a bad port)
    return value


fraction = number(float, 0, 1)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$", re.IGNORECASE)
_DURATION_FACTOR = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> float:
    """Seconds, or a number with s, m, h or d: ``30d``, ``12h``."""
    match = _DURATION.match(value.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(value)
    return float(match.group(1)) * _DURATION_FACTOR[match.group(2).lower()]


_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def header_names(value: str) -> str:
    """HTTP header names separated by commas, lower-cased; never ``Authorization``."""
    names = sorted({name.strip().lower() for name in value.split(",") if name.strip()})
    if not names or not all(_HEADER.match(name) for name in names) \
            or "authorization" in names:
        raise ValueError(value)
    return ",".join(names)


def traffic(value: str) -> dict[str, int]:
    """``name:weight,name:weight`` with whole weights that sum to 100."""
    weights: dict[str, int] = {}
    for part in value.split(","):
        name, sep, weight = part.strip().rpartition(":")
        if not sep or not name or not weight.strip().isdigit() or name in weights:
            raise ValueError(value)
        weights[name] = int(weight)
    if sum(weights.values()) != 100:
        raise ValueError(value)
    return weights
