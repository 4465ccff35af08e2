"""Clients with addresses of their own: network namespaces joined to this host by a veth pair,
so that an endpoint published on the host sees each namespace's address as the client's (the
engine forwards such traffic by DNAT, which keeps the source; loopback goes through Docker's
userland proxy, which does not). A client runs a short script inside its namespace and prints
what it got as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from tests.helpers.remote_engine import free_subnet, run

# Sends ``count`` POSTs at ``rate`` per second over one keep-alive connection; prints the
# statuses, and whether every 429 had a JSON body and a Retry-After header.
_CLIENT = """
import json, sys, time
import requests
url, body, count, rate = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
session, statuses, well_formed = requests.Session(), {}, True
session.trust_env = False
started = time.monotonic()
for i in range(count):
    wait = started + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    answer = session.post(url, json=body, timeout=30)
    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    if answer.status_code == 429:
        well_formed &= (answer.headers.get("Retry-After") == "1"
                        and answer.headers.get("content-type") == "application/json"
                        and answer.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED")
print(json.dumps({"statuses": statuses, "well_formed": well_formed,
                  "seconds": time.monotonic() - started}))
"""


@dataclass
class ClientNamespace:
    namespace: str
    address: str  # the client's
    host: str  # this host's address as the client reaches it

    def post(self, url: str, body: object, count: int, rate: float) -> subprocess.Popen[str]:
        """Start a client in the namespace; :func:`result` reads what it got."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", _CLIENT, url,
             json.dumps(body), str(count), str(rate)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)


def result(client: subprocess.Popen[str]) -> dict[str, object]:
    out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    found: dict[str, object] = json.loads(out)
    return found


@contextlib.contextmanager
def client_namespaces(count: int) -> Iterator[list[ClientNamespace]]:
    """``count`` namespaces, each on a /30 of its own; removed on exit."""
    made: list[ClientNamespace] = []
    octet = free_subnet("10.232", "client namespaces")
    try:
        for index in range(count):
            name, veth = f"dhcl{os.getpid() % 100000}{index}", f"dc{os.getpid() % 100000}{index}"
            host, client = f"10.232.{octet}.{4 * index + 1}", f"10.232.{octet}.{4 * index + 2}"
            run("ip", "netns", "add", name)
            made.append(ClientNamespace(name, client, host))
            run("ip", "link", "add", f"{veth}h", "type", "veth", "peer", "name", f"{veth}n")
            run("ip", "link", "set", f"{veth}n", "netns", name)
            run("ip", "addr", "add", f"{host}/30", "dev", f"{veth}h")
            run("ip", "link", "set", f"{veth}h", "up")
            run("ip", "addr", "add", f"{client}/30", "dev", f"{veth}n", netns=name)
            run("ip", "link", "set", f"{veth}n", "up", netns=name)
            run("ip", "link", "set", "lo", "up", netns=name)
            run("ip", "route", "add", "default", "via", host, netns=name)
        yield made
    finally:
        for index, namespace in enumerate(made):
            with contextlib.suppress(RuntimeError):
                run("ip", "link", "delete", f"dc{os.getpid() % 100000}{index}h")
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "delete", namespace.namespace)
