"""The hand-over between a swarm front and its settings task, on one engine: the two commands
the swarm runtime gives its tasks (``front_settings``), run as plain containers sharing the
same kind of tmpfs volume, so that every case runs in seconds without a swarm.

A new generation reaches the running front without a request lost or the front restarted; one
HAProxy refuses fails its settings task with HAProxy's reason while the front goes on serving
the one before; a front that starts again starts with what its node holds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from mlflow_docker_target.runtimes import haproxy
from mlflow_docker_target.runtimes.swarm import front_settings
from tests.helpers.engine import LABEL

TIMEOUT = 30


@pytest.fixture
def node(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[dict]:
    """A front on a fresh settings volume, as a swarm node has them; cleaned up after."""
    image = os.environ.get("MLFLOW_DOCKERHOST_PROXY_IMAGE") or "haproxy:2.8"
    mount = front_settings.volume(f"test-front-{secrets.token_hex(4)}")
    driver = mount["VolumeOptions"]["DriverConfig"]
    volume = docker_client.volumes.create(mount["Source"], driver=driver["Name"],
                                          driver_opts=driver["Options"],
                                          labels={LABEL: "front-settings-test"})
    made: list = []

    def run(command: list[str], **options) -> docker.models.containers.Container:
        container = docker_client.containers.run(
            image, command, detach=True, init=True, user=haproxy.FRONT_USER, read_only=True,
            cap_drop=["ALL"], labels={LABEL: "front-settings-test"},
            volumes={volume.name: {"bind": front_settings.DIR, "mode": "rw"}}, **options)
        made.append(container)
        return container

    front = run(front_settings.FRONT_COMMAND,
                ports={f"{haproxy.FRONT_PORT}/tcp": ("127.0.0.1", None)})
    try:
        yield {"run": run, "front": front, "tmp": tmp_path}
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.NotFound):  # one a test removed
                container.remove(force=True)
        volume.remove(force=True)


def _settings(node: dict, endpoint: str, text: bytes | None = None):
    """A settings task handing over the configuration of a front for ``endpoint`` (or
    ``text``, as it is); returns (its container, the generation)."""
    made = front_settings.generation(endpoint, (), haproxy.Limits(), False, None)
    generation, files = made.name, {front_settings.CONFIG_FILE: made.config,
                                    front_settings.RELOAD_CONFIG_FILE: made.reload_config}
    if text is not None:
        generation = f"bad{len(text)}"
        files = dict.fromkeys(files, text)
    mounts = []
    for target, data in files.items():  # as Swarm mounts its configs
        path = node["tmp"] / f"{generation}-{Path(target).name}"
        path.write_bytes(data)
        path.chmod(0o644)
        mounts.append(docker.types.Mount(target, str(path), type="bind", read_only=True))
    container = node["run"](front_settings.SETTINGS_COMMAND,
                            environment={"GENERATION": generation}, mounts=mounts)
    return container, generation


def _ends(container, line: str) -> str:
    """Wait until the container logs ``line`` or exits; its log."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        log = container.logs().decode(errors="replace")
        if line in log or container.status == "exited":
            return log
        time.sleep(0.1)
    raise AssertionError(f"{container.name} never said {line!r}: {log}")


def _url(node: dict) -> str:
    front = node["front"]
    front.reload()
    port = front.attrs["NetworkSettings"]["Ports"][f"{haproxy.FRONT_PORT}/tcp"][0]["HostPort"]
    return f"http://127.0.0.1:{port}/invocations"


def _served(node: dict) -> str:
    """The endpoint the front's configuration names (no deployment: its 503 says which)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return requests.post(_url(node), json={}, timeout=5).json()["message"]
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_new_settings_reach_the_running_front_without_a_request_lost(node: dict) -> None:
    first, _ = _settings(node, "one")
    _ends(first, "runs generation")
    assert "endpoint one" in _served(node)
    url, answers, errors = _url(node), Counter(), []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answers[session.post(url, json={}, timeout=10).json()["message"]] += 1
                except requests.RequestException as exc:
                    errors.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        before = first
        for endpoint in ("two", "three", "four"):
            time.sleep(0.5)
            before.remove(force=True)  # Swarm stops the old settings task first
            before, _ = _settings(node, endpoint)
            _ends(before, "runs generation")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    print(f"measured: generations handed over under load: {sum(answers.values())} answers, "
          f"{len(errors)} errors")
    assert not errors, errors[:3]
    assert {m.split("endpoint ")[1].split(" ")[0] for m in answers} == {
        "one", "two", "three", "four"}
    front = node["front"]
    front.reload()
    assert front.status == "running" and front.attrs["RestartCount"] == 0


def test_a_refused_generation_fails_its_task_and_the_front_serves_on(node: dict) -> None:
    good, _ = _settings(node, "good")
    _ends(good, "runs generation")
    good.remove(force=True)
    bad, _ = _settings(node, "", text=b"global\n    no-such-keyword\n")
    _ends(bad, "refused generation")
    bad.wait(timeout=TIMEOUT)
    bad.reload()
    log = bad.logs().decode(errors="replace")  # all of it: the reason follows that line
    assert bad.attrs["State"]["ExitCode"] == 1
    assert "unknown keyword 'no-such-keyword'" in log, log
    assert "endpoint good" in _served(node)
    again, _ = _settings(node, "good")  # Swarm's rollback: the previous generation again
    _ends(again, "runs generation")
    assert again.status == "running"


def test_a_front_that_starts_again_takes_what_its_node_holds(node: dict) -> None:
    settings, generation = _settings(node, "kept")
    _ends(settings, "runs generation")
    node["front"].restart(timeout=5)
    assert "endpoint kept" in _served(node)
    # the key never touches the disk: the volume is tmpfs, owned by the fronts' user alone
    listing = node["front"].exec_run(["ls", "-ldn", front_settings.DIR]).output.decode()
    assert listing.startswith("drwx------") and " 99 99 " in listing, listing
    assert node["front"].exec_run(["cat", f"{front_settings.DIR}/applied"]).output.decode(
        ).strip() == generation
