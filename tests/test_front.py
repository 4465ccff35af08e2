"""The front's HAProxy configuration: routing rules, weights, and validity by HAProxy itself."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from mlflow_docker_target.runtimes.haproxy import (
    HANDOFF,
    HANDOFF_PORT,
    SWARM_SERVERS,
    Backend,
    Canary,
    Limits,
    Server,
    alias,
    render,
    server_name,
    weights,
)


def test_even_split_until_traffic_is_set_then_zero_for_newcomers() -> None:
    assert weights(["a", "b", "c"], None) == {"a": 1, "b": 1, "c": 1}
    assert weights(["a", "b", "c"], {"a": 90, "b": 10}) == {"a": 90, "b": 10, "c": 0}


def test_weighted_draw_covers_each_share_once() -> None:
    config = render("fraud", [Backend("v3", 90, 60), Backend("v4", 10, 30), Backend("v5", 0, 5)])
    assert "rand(100)" in config
    ranges = re.findall(r"use_backend (\S+) if \{ var\(txn.pick\) -m int ge (\d+) \} "
                        r"\{ var\(txn.pick\) -m int lt (\d+) \}", config)
    assert [(b, int(lo), int(hi)) for b, lo, hi in ranges] == [("v3", 0, 90), ("v4", 90, 100)]
    # a deployment with weight 0 is still reachable by name, and as the last fallback
    assert "use_backend v5 if asked_v5" in config
    assert "    server s" not in config  # no replica yet
    assert "timeout server 65s" in config and "timeout server 10s" in config


def test_own_answers_exclude_every_backend_case() -> None:
    config = render("e", [Backend("a", 1, 60)])
    b = "a"  # the backend is named as the deployment: the exporter's proxy label
    assert f"if !retiring {{ req.hdr(x-mlflow-deployment) -m found }} !asked_{b}" in config
    assert f"No replica of endpoint e is ready.\\\"}}\" if !retiring !up_{b}" in config
    empty = render("e", [])
    assert "rand(" not in empty and f"use_backend {HANDOFF} if retiring" in empty


def test_a_retiring_worker_hands_every_request_to_the_current_one() -> None:
    """Its own servers may be gone: an idle keep-alive connection can wake long after."""
    config = render("e", [Backend("a", 1, 60, (Server(1),))])
    rules = [line.strip() for line in config.splitlines() if "use_backend" in line]
    assert rules[0] == f"use_backend {HANDOFF} if retiring"
    # over loopback, with the client's address in a PROXY header that only loopback may send
    assert f"backend {HANDOFF}\n    timeout server 65s\n" \
        f"    server current 127.0.0.1:{HANDOFF_PORT} send-proxy-v2\n" in config
    assert f"    bind 127.0.0.1:{HANDOFF_PORT} accept-proxy\n" in config
    tls = render("e", [Backend("a", 1, 60)], tls="/etc/tls.pem")
    assert f"    server current 127.0.0.1:{HANDOFF_PORT} send-proxy-v2\n" in tls


def test_each_replica_has_a_server_line_following_its_own_name() -> None:
    config = render("e", [Backend("a", 1, 60, (Server(1, "10.0.0.7"), Server(3)))])
    assert (f"    server s1 {server_name('a', 1)}:8080 init-addr 10.0.0.7\n"
            f"    server s3 {server_name('a', 3)}:8080\n") in config
    assert "server-template" not in config and "init-addr none" in config


def test_on_a_swarm_servers_come_from_the_tasks_dns_name() -> None:
    config = render("e", [Backend("a", 1, 60, tasks="tasks.mlflow-a")])
    assert f"    server-template s 1-{SWARM_SERVERS} tasks.mlflow-a:8080\n" in config
    assert "    server s" not in config and "resolvers docker init-addr none" in config


def test_a_swarm_canary_comes_from_its_own_services_tasks() -> None:
    canary = Canary(20, (Server(1, "10.0.1.9"),), tasks="tasks.mlflow--canary-a")
    config = render("e", [Backend("a", 1, 60, tasks="tasks.mlflow-a", canary=canary)])
    current, ours = config.split("backend a:canary\n")
    assert "    server-template s 1-" in current.split("backend a\n")[1]
    assert "tasks.mlflow--canary-a" not in current.split("backend a\n")[1]
    assert ("    server s1 tasks.mlflow--canary-a:8080 init-addr 10.0.1.9\n"
            "    server s2 tasks.mlflow--canary-a:8080\n") in ours
    assert "use_backend a:canary if asked_a { rand(100) lt 20 } { nbsrv(a:canary) gt 0 }" in (
        config)


def test_aliases_are_dns_labels() -> None:
    for name in ("fraud", "Fraud.v2", "a_b-c", "x" * 63):
        assert re.fullmatch(r"d-[0-9a-f]{12}", alias(name))
    assert alias("a") != alias("b")


@pytest.mark.engine
@pytest.mark.parametrize("limits", [Limits(), Limits(50, ("10.0.0.0/8", "fd00::/8"), 4)])
@pytest.mark.parametrize("backends", [
    [], [Backend("only", 1, 60)], [Backend("v3", 90, 60), Backend("v4", 10, 300),
                                   Backend('we"ird.name', 0, 1,
                                           (Server(1, "172.18.0.3"), Server(2)))],
    [Backend("a", 50, 60, tasks="tasks.mlflow-a"), Backend("b", 50, 60, tasks="tasks.mlflow-b")],
    [Backend("endpoint", 1, 60), Backend("metrics", 1, 60)],  # named as the frontends
    [Backend("v3", 90, 60, (Server(1),), canary=Canary(10, (Server(2, "172.18.0.4"),))),
     Backend("v4", 10, 60, canary=Canary(0))],
    [Backend("a", 1, 60, tasks="tasks.mlflow-a",
             canary=Canary(30, (Server(1, "10.0.1.9"),), tasks="tasks.mlflow--canary-a"))]])
def test_haproxy_accepts_the_configuration(backends: list[Backend], limits: Limits,
                                           docker_client, tmp_path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render("e", backends, limits, metrics=bool(limits.rate_limit)))
    result = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{path}:/h.cfg:ro",
         os.environ["MLFLOW_DOCKERHOST_PROXY_IMAGE"], "haproxy", "-c",
         "-f", "/h.cfg"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
