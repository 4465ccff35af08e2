"""A swarm front's settings, engine-free: the settings service's name, and what a generation is
(a name that changes exactly when what the front serves does)."""

from __future__ import annotations

import subprocess

from mlflow_docker_target.runtimes import haproxy
from mlflow_docker_target.runtimes.swarm import front_settings
from mlflow_docker_target.runtimes.swarm.names import MAX_SERVICE_NAME, service_name
from serving_image.contract import SERVER_PORT

BACKENDS = (haproxy.Backend("one", 1, 60, tasks="tasks.mlflow-one"),)
SEEDED = (haproxy.Backend("one", 1, 60, (haproxy.Server(1, "10.0.1.5"),
                                         haproxy.Server(2, "10.0.1.9")), "tasks.mlflow-one"),)


def test_the_settings_service_is_named_after_its_front_within_swarm_limits() -> None:
    front = service_name("fraud", "endpoint")
    assert front_settings.name_of(front) == f"{front}-settings"
    long_ones = [service_name("x" * 60 + tail, "endpoint") for tail in ("a", "b")]
    names = [front_settings.name_of(front) for front in long_ones]
    assert all(len(name) <= MAX_SERVICE_NAME for name in names)
    assert names[0] != names[1]
    # its configs and secrets: Swarm takes 64 characters, ending in a letter or digit
    stored = front_settings.stored_name(long_ones[0], b"a configuration")
    assert len(stored) <= 64 and stored[-1].isalnum()
    assert stored != front_settings.stored_name(long_ones[0], b"another")


def test_a_generation_changes_exactly_with_what_the_front_serves() -> None:
    def generation(backends: tuple[haproxy.Backend, ...], limits: haproxy.Limits,
                   metrics: bool, chain: bytes | None = None) -> str:
        return front_settings.generation("ep", backends, limits, metrics, chain).name

    same = generation(BACKENDS, haproxy.Limits(), False)
    assert generation(BACKENDS, haproxy.Limits(), False) == same
    # the replicas' addresses are seeds for a reload only: they make no new generation
    assert generation(SEEDED, haproxy.Limits(), False) == same
    others = {generation((), haproxy.Limits(), False),
              generation(BACKENDS, haproxy.Limits(rate_limit=10), False),
              generation(BACKENDS, haproxy.Limits(), True),
              generation(BACKENDS, haproxy.Limits(), False, chain=b"cert one"),
              generation(BACKENDS, haproxy.Limits(), False, chain=b"cert two")}
    assert same not in others and len(others) == 5


def test_a_reload_starts_routing_with_the_replicas_addresses_and_a_start_resolves_them() -> None:
    made = front_settings.generation("ep", SEEDED, haproxy.Limits(), False, None)
    reload_lines = made.reload_config.decode().splitlines()
    slots = [line for line in reload_lines if line.startswith("    server s")]
    assert len(slots) == haproxy.SWARM_SERVERS
    assert slots[:3] == [f"    server s1 tasks.mlflow-one:{SERVER_PORT} init-addr 10.0.1.5",
                         f"    server s2 tasks.mlflow-one:{SERVER_PORT} init-addr 10.0.1.9",
                         f"    server s3 tasks.mlflow-one:{SERVER_PORT}"]
    assert "init-addr 10" not in made.config.decode()
    assert f"    server-template s 1-{haproxy.SWARM_SERVERS} tasks.mlflow-one:{SERVER_PORT}" in \
        made.config.decode().splitlines()


def test_an_https_generation_names_its_own_certificate_file() -> None:
    made = front_settings.generation("ep", SEEDED, haproxy.Limits(), False, b"cert")
    for text in (made.config, made.reload_config):
        assert f"ssl crt {front_settings.DIR}/{made.name}/tls.pem " in text.decode()
    made = front_settings.generation("ep", SEEDED, haproxy.Limits(), False, None)
    assert b"ssl crt" not in made.config + made.reload_config


def test_the_task_commands_are_valid_posix_shell() -> None:
    for command in (front_settings.FRONT_COMMAND, front_settings.SETTINGS_COMMAND):
        assert command[:2] == ["sh", "-c"]
        checked = subprocess.run(["sh", "-n", "-c", command[2]], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
