"""The test swarm itself: three nodes, a registry they pull from, a dnsrr service across them.

What the Swarm runtime builds on, checked on its own so that a failure here names the machine,
not the plugin.
"""

from __future__ import annotations

import os
import time

from docker.types import EndpointSpec, ServiceMode

from tests.helpers.swarm_cluster import Swarm


def test_a_dnsrr_service_spreads_over_the_nodes_from_the_registry(swarm: Swarm) -> None:
    manager = swarm.manager.client()
    base = os.environ["MLFLOW_DOCKERHOST_BASE_IMAGE"]
    pushed = f"{swarm.registry}/test/base:1"
    manager.images.get(base).tag(pushed)
    for line in manager.images.push(pushed, stream=True, decode=True):
        assert "error" not in line, line
    network = manager.networks.create("dhsw-test", driver="overlay", attachable=True)
    service = manager.services.create(
        pushed, ["python3", "-m", "http.server", "8000"], name="dhsw-http",
        mode=ServiceMode("replicated", replicas=3), endpoint_spec=EndpointSpec(mode="dnsrr"),
        networks=[network.id])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = [t for t in service.tasks() if t["Status"]["State"] == "running"]
            if len(running) == 3:
                break
            time.sleep(1)
        assert len(running) == 3, [t["Status"] for t in service.tasks()]
        assert len({t["NodeID"] for t in running}) == 3  # one per node
        # tasks.<service> resolves to every task, from a container on another node's overlay
        probe = manager.containers.run(pushed, ["python3", "-c", (
            "import socket, urllib.request; "
            "ips = sorted({a[4][0] for a in socket.getaddrinfo('tasks.dhsw-http', 8000)}); "
            "print(len(ips), [urllib.request.urlopen(f'http://{ip}:8000/').status "
            "for ip in ips])")], network="dhsw-test", remove=True)
        assert probe.decode().split()[0] == "3", probe
        assert probe.decode().count("200") == 3, probe
    finally:
        service.remove()
        time.sleep(2)
        network.remove()
