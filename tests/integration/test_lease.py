"""Leases on a real engine (mlflow_docker_target/runtimes/lease.py): one holder at a time, held
as long as it renews, taken over once a killed holder stops renewing. Times to live are cut to
seconds here; the mechanism is the one every name and build lease uses."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import docker
import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine.connection import Engine, connect
from mlflow_docker_target.runtimes import lease

TTL, RENEW = 2.0, 0.4

HOLDER = f"""
import sys, time
from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.runtimes import lease
lease.TTL_SECONDS, lease.RENEW_SECONDS = {TTL}, {RENEW}
with lease.lease(connect(None), "test", sys.argv[1], "build"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def engine(docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setattr(lease, "TTL_SECONDS", TTL)
    monkeypatch.setattr(lease, "RENEW_SECONDS", RENEW)
    return connect(None)


@pytest.fixture
def name(docker_client: docker.DockerClient) -> Iterator[str]:
    found = f"l-{secrets.token_hex(4)}"
    yield found
    for container in docker_client.containers.list(
            all=True, filters={"name": lease.lease_name("test", found)}):
        container.remove(force=True)


def test_one_holder_at_a_time_and_renewal_keeps_it(engine: Engine, name: str) -> None:
    with lease.lease(engine, "test", name, "build"):
        started = time.monotonic()
        with pytest.raises(MlflowException, match=f"Test '{name}' is being built by another "
                                                  r"client \(.*pid \d+, since"):
            lease.lease(engine, "test", name, "build").__enter__()
        assert time.monotonic() - started < 1  # refused at once
        # held past three times its time to live: renewals keep it
        with pytest.raises(MlflowException, match="being built"):
            lease.lease(engine, "test", name, "build", wait=3 * TTL).__enter__()
    with lease.lease(engine, "test", name, "build"):  # released: free at once
        pass


def test_a_waiter_gets_it_when_the_holder_lets_go_and_is_told_whom_it_waits_for(
        engine: Engine, name: str) -> None:
    told: list[tuple[str, float, float]] = []
    got = threading.Event()

    def wait() -> None:
        with lease.lease(engine, "test", name, "build", wait=float("inf"),
                         on_wait=lambda *said: told.append(said)):
            got.set()

    with lease.lease(engine, "test", name, "build"):
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(3 * RENEW + 2 * lease.POLL_SECONDS)
        assert not got.is_set()
    waiter.join(10)
    assert got.is_set()
    assert told and f"pid {os.getpid()}" in told[0][0]


def test_a_killed_holder_is_taken_over_once_its_lease_expires(
        engine: Engine, name: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("mlflow_docker_target"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="mlflow_docker_target")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, name], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(MlflowException, match="being built"):
            lease.lease(engine, "test", name, "build").__enter__()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        with lease.lease(engine, "test", name, "build", wait=10 * TTL):
            waited = time.monotonic() - killed
        print(f"taken over {waited:.1f} s after the holder was killed (time to live {TTL} s)")
        assert waited < TTL + 2 * RENEW + 1
        assert "Taking over the lease on test" in caplog.text
        assert "stopped renewing it" in caplog.text
    finally:
        holder.kill()


def test_clients_taking_turns_see_each_release_as_a_release(engine: Engine, name: str) -> None:
    """Four clients take one lease in turn, over and over: a waiter that reads the holder's
    renewal just as the holder removes it (the engine then answers 500 "RWLayer ... is
    unexpectedly nil" or 404) sees a release, not an error."""
    turns, errors = [0], []

    def client() -> None:
        try:
            for _ in range(15):
                with lease.lease(engine, "test", name, "build", wait=float("inf")):
                    turns[0] += 1
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert turns[0] == 60
    assert not lease.held(engine)
