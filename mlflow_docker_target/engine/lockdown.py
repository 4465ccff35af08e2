"""Locked-down containers: what a compromised model library, or a front, cannot do to the host.

- A read-only root filesystem: code that takes over a replica cannot change the server, the
  model or the libraries that later requests run (a tmpfs at ``SCRATCH_DIR`` is the one
  writable place, with ``/dev/shm``), and nothing it writes survives a restart.
- Every capability dropped: no raw sockets (spoofing on the endpoint's network), no
  ``chown``/``mknod``, no bypassing file permissions, even for a process that becomes root.
- ``no-new-privileges``: a setuid binary in the image cannot raise a process's privileges.
- A pids limit: a fork (or thread) bomb stops at the limit instead of starving the host.

Serving replicas take ``-C hardened`` (false: Docker's defaults, for a model that writes into
its image) and ``-C pids_limit``; fronts and helper containers are always locked down. On a
swarm, Swarm's service API (1.41, Docker 20.10) has no ``no-new-privileges``; the rest applies.
"""

from __future__ import annotations

from typing import Any

from docker.types import Mount

from serving_image.contract import SCRATCH_DIR, SCRATCH_SIZE_MB

HELPER_PIDS = 256  # a front's or helper container's processes and threads
NO_NEW_PRIVILEGES = "no-new-privileges"
_SCRATCH_OPTIONS = f"rw,nosuid,nodev,size={SCRATCH_SIZE_MB}m,mode=1777"


def container_options(hardened: bool = True, pids_limit: int = HELPER_PIDS) -> dict[str, Any]:
    """Keyword arguments of docker-py's ``containers.create``/``run``."""
    options: dict[str, Any] = {"pids_limit": pids_limit}
    if hardened:
        options.update(read_only=True, tmpfs={SCRATCH_DIR: _SCRATCH_OPTIONS}, cap_drop=["ALL"],
                       security_opt=[NO_NEW_PRIVILEGES])
    return options


def service_options(hardened: bool = True) -> dict[str, Any]:
    """Keyword arguments of docker-py's ``ContainerSpec`` (a swarm task)."""
    if not hardened:
        return {}
    scratch = Mount(SCRATCH_DIR, None, type="tmpfs", tmpfs_size=SCRATCH_SIZE_MB * 1024 ** 2,
                    tmpfs_mode=0o1777)
    return {"read_only": True, "cap_drop": ["ALL"], "mounts": [scratch]}


def with_pids_limit(resources: dict[str, Any], pids_limit: int) -> dict[str, Any]:
    """A swarm task's ``Resources`` with a pids limit (API 1.41), which docker-py's
    ``Resources`` has no argument for."""
    limits = dict(resources.get("Limits") or {})
    limits["Pids"] = pids_limit
    return {**resources, "Limits": limits}
