"""Leases on the engine: one writer per deployment or endpoint name, one builder per environment.

A lease is a container that is created and never started, named after what it guards: the
engine refuses a second container of one name, so exactly one client holds it. Its labels say
what it guards, who holds it and since when. The holder renews it every ``RENEW_SECONDS`` by
writing the time into the container (``put_archive`` works on a container that never ran); a
lease not renewed for ``TTL_SECONDS`` has expired, and the next client takes it over: it removes
that container by its ID (so that of two clients that saw it expire, one takes it) and creates
its own. A killed client holds nobody up for longer than ``TTL_SECONDS``.

Times are the engine's (from the ``Date`` header of its answers), so clients whose clocks
disagree still agree on when a lease expired. The container is made from a tiny image imported
here (one empty file: no pull, no network), so a lease needs no image of the runtime's.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import logging
import math
import os
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import docker.errors
from docker.models.containers import Container
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_ALREADY_EXISTS

from mlflow_docker_target import record
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers

log = logging.getLogger(__name__)

RENEW_SECONDS = 5.0
TTL_SECONDS = 30.0
POLL_SECONDS = 0.2
IMAGE = "mlflow-dockerhost/lease:1"
RENEWAL_FILE = "lease.json"

# What a waiter is told about the holder, every few seconds: (holder, since, waited seconds).
Waiting = Callable[[str, float, float], None]


def lease_name(kind: str, name: str) -> str:
    """The container that is the lease on ``kind:name``."""
    return f"mlflow-dockerhost-lock-{kind}-{name}"


@contextlib.contextmanager
def lease(engine: Engine, kind: str, name: str, doing: str, wait: float = 0,
          on_wait: Waiting | None = None) -> Iterator[None]:
    """Hold the lease on ``kind:name`` while the block runs, renewing it on a thread.

    ``wait``: how long to wait for another holder, in seconds (``math.inf``: as long as it
    renews); past it, fail saying who holds it. ``on_wait`` is told, every few seconds, whom
    this client waits for.
    """
    clock = _EngineClock(engine)
    held = _acquire(engine, clock, kind, name, doing, wait, on_wait)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(held, clock, stop), daemon=True,
                               name=f"lease-{kind}-{name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(docker.errors.NotFound):
            held.remove(force=True)


def held(engine: Engine) -> set[str]:
    """The names of the leases held now; one a killed client left, no longer renewed, is not."""
    found = list_containers(engine.client, f"{record.ROLE}={record.LOCK_ROLE}")
    if not found:
        return set()
    clock = _EngineClock(engine)
    renewals = {c.name: _read_renewal(c) for c in found}
    return {name for name, renewed in renewals.items()
            if renewed is not None and clock.now() - renewed <= TTL_SECONDS}


def leased(names: set[str], kind: str) -> list[str]:
    """What the leases ``names`` (from :func:`held`) of ``kind`` are on."""
    prefix = lease_name(kind, "")
    return [name[len(prefix):] for name in names if name.startswith(prefix)]


def at_work(names: set[str]) -> bool:
    """Whether the leases ``names`` (from :func:`held`) have a client at work on a deployment
    or an environment's build: it may be about to use any environment image."""
    return bool(leased(names, "deployment") or leased(names, "environment"))


def builds(engine: Engine) -> Callable[[str], AbstractContextManager[None]]:
    """Hold the build of an environment (by its key) for as long as the builder renews it: a
    client that needs an environment another is building waits, told every few seconds whom it
    waits for, and takes the build over once that one stops renewing (it was killed). Builds
    have no time limit, so neither has the wait."""
    def hold(key: str) -> AbstractContextManager[None]:
        def waiting(holder: str, since: float, waited: float) -> None:
            log.info("Waiting for %s, building environment %s since %s (%.0f s so far)",
                     holder, key, _when(since), waited)

        return lease(engine, "environment", key, "build", wait=math.inf, on_wait=waiting)

    return hold


def _acquire(engine: Engine, clock: _EngineClock, kind: str, name: str, doing: str,
             wait: float, on_wait: Waiting | None) -> Container:
    container_name = lease_name(kind, name)
    started = time.monotonic()
    give_up = started + wait
    told = started
    while True:
        now = clock.now()
        labels = {record.ROLE: record.LOCK_ROLE, record.LOCK: f"{kind}:{name}:{doing}",
                  record.LOCK_SINCE: str(int(now)), record.LOCK_HOLDER: _holder()}
        try:
            made = engine.client.containers.create(
                _image(engine), command=["lease"], name=container_name, labels=labels,
                network_disabled=True)
            _write_renewal(made, now)
            return made
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        holder = _existing(engine, container_name)
        if holder is None:
            continue  # released in between
        renewed = _read_renewal(holder)
        if renewed is None:
            continue  # released as it was read
        if clock.now() - renewed > TTL_SECONDS:
            log.warning("Taking over the lease on %s %s: its holder %s stopped renewing it "
                        "at %s", kind, name, _holder_of(holder), _when(renewed))
            with contextlib.suppress(docker.errors.NotFound):
                holder.remove(force=True)  # by ID: a newer lease of the same name stays
            continue
        if time.monotonic() >= give_up:
            raise _held(kind, name, doing, holder)
        if on_wait is not None and time.monotonic() - told >= RENEW_SECONDS:
            told = time.monotonic()
            on_wait(_holder_of(holder), _since(holder), told - started)
        time.sleep(POLL_SECONDS)


def _renew(held: Container, clock: _EngineClock, stop: threading.Event) -> None:
    """Write the engine's time into the lease every RENEW_SECONDS until ``stop``."""
    while not stop.wait(RENEW_SECONDS):
        try:
            _write_renewal(held, clock.now())
        except docker.errors.NotFound:
            log.error("The lease %s was taken over by another client (this one did not renew "
                      "it for %g s)", held.name, TTL_SECONDS)
            return
        except Exception as exc:  # the engine away for a moment: try at the next turn
            log.warning("Renewing the lease %s failed: %s", held.name, exc)


class Held(MlflowException):
    """Another client holds the lease: nothing was done, and trying later may succeed."""


def _held(kind: str, name: str, doing: str, holder: Container) -> Held:
    busy = holder.labels.get(record.LOCK, "::").rsplit(":", 1)[-1] or "changed"
    exists = "already exists or " if doing == "create" else ""
    return Held(
        f"{kind.capitalize()} {name!r} {exists}is being {_past(busy)} by another client "
        f"({_holder_of(holder)}, since {_when(_since(holder))}); try again when that is done. "
        f"A client that was killed lets go {TTL_SECONDS:g} s after its last renewal.",
        RESOURCE_ALREADY_EXISTS if doing == "create" else INVALID_STATE)


def _image(engine: Engine) -> str:
    """The lease image, imported once per engine: one empty file, 0 bytes."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.client.images.get(IMAGE)
        return IMAGE
    repository, tag = IMAGE.split(":")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("lease"), io.BytesIO(b""))
    engine.client.api.import_image_from_data(
        buffer.getvalue(), repository=repository, tag=tag,
        changes=[f"LABEL {record.KIND}=lease"])
    return IMAGE


def _write_renewal(container: Container, now: float) -> None:
    data = json.dumps({"renewed": now}).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(RENEWAL_FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())


def _read_renewal(container: Container) -> float | None:
    """The engine time of the lease's last renewal (its start, if none was written yet), or
    None if its holder let go of it as it was read."""
    try:
        stream, _ = container.get_archive(f"/{RENEWAL_FILE}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            return float(json.loads(member.read() if member else b"{}")["renewed"])
    except (docker.errors.NotFound, KeyError, ValueError, IndexError):
        return _since(container)  # not written yet (or gone: the next look tells)
    except docker.errors.APIError:
        # Removed as it was read, the engine answers 500 ("RWLayer of container ... is
        # unexpectedly nil"); any other failure is the engine's, and is raised.
        if _removed(container):
            return None
        raise


def _removed(container: Container) -> bool:
    try:
        container.reload()
    except docker.errors.NotFound:
        return True
    return container.status in ("removing", "dead")


def _existing(engine: Engine, name: str) -> Container | None:
    try:
        return engine.client.containers.get(name)
    except docker.errors.NotFound:
        return None


def _since(container: Container) -> float:
    return float(container.labels.get(record.LOCK_SINCE) or 0)


def _holder_of(container: Container) -> str:
    return container.labels.get(record.LOCK_HOLDER) or "a client"


def _holder() -> str:
    """Who holds a lease, for the messages of those who wait: user, host and process."""
    with contextlib.suppress(Exception):
        return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
    return f"pid {os.getpid()}"


class _EngineClock:
    """The engine's time, from this machine's clock and the offset the engine's ``Date``
    header gives (to the second: far finer than a lease's time to live)."""

    def __init__(self, engine: Engine) -> None:
        self.offset = 0.0
        with contextlib.suppress(Exception):
            api = engine.client.api
            answer = api._get(api._url("/_ping"))
            date = answer.headers.get("Date")
            if date:
                self.offset = parsedate_to_datetime(date).timestamp() - time.time()

    def now(self) -> float:
        return time.time() + self.offset


def _when(since: float) -> str:
    return datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _past(verb: str) -> str:
    return {"create": "created", "update": "updated", "delete": "deleted",
            "build": "built"}.get(verb, verb)
