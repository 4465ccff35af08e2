"""Addresses on the engine's networks that tests need."""

from __future__ import annotations

import ipaddress

from docker.models.networks import Network


def gateway(network: Network) -> str:
    """This host's address on ``network`` (containers on it reach the host there). An engine
    that found its default bridge already made leaves the gateway out of its IPAM: it is then
    the subnet's first host, as Docker chose it."""
    config = network.attrs["IPAM"]["Config"][0]
    return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
