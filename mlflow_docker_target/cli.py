"""``mlflow-dockerhost``: the plugin's own command, for what MLflow's CLI has no verb for.

    mlflow-dockerhost prune [--dry-run] [--volumes] [--engine URL_OR_CONTEXT]

``prune`` lists what the plugin built on the engine and nothing uses (``prune``), with sizes,
and removes it unless ``--dry-run``. It lists the inference log volumes of deleted deployments
too, and removes them only with ``--volumes`` (they are data). On a swarm, run it against the
manager: the other nodes keep the images they pulled (``docker image prune -a`` there, or the
registry's garbage collection for what was pushed) and their inference log volumes.
"""

from __future__ import annotations

import argparse
import sys

import docker.errors

from mlflow_docker_target import prune
from mlflow_docker_target.engine.connection import Engine, connect
from mlflow_docker_target.engine.errors import talking_to
from mlflow_docker_target.runtimes import lease, payload_log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-dockerhost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    reclaim = commands.add_parser("prune", help="show and remove the images the plugin built "
                                  "that nothing uses")
    reclaim.add_argument("--dry-run", action="store_true", help="only show them")
    reclaim.add_argument("--volumes", action="store_true", help="remove the inference log "
                         "volumes of deleted deployments too")
    reclaim.add_argument("--engine", help="engine URL or Docker context (default: DOCKER_HOST, "
                         "else the current context)")
    args = parser.parse_args(argv)
    engine = connect(args.engine)
    with talking_to(engine):
        return _prune(engine, args.dry_run, args.volumes)


def _prune(engine: Engine, dry_run: bool, volumes: bool) -> int:
    verb = "would remove" if dry_run else "removed"
    reclaimed = 0
    leases = lease.held(engine)  # read once: what is skipped and what is said agree
    found = list(prune.unused(engine, leases))
    for item in found:
        if not dry_run:
            try:
                for name in item.image.tags or [item.image.id]:  # untag each, the last removes
                    engine.client.images.remove(name)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                print(f"kept          {item.name}: {exc.explanation or exc}")
                continue
        reclaimed += item.size
        print(f"{verb}  {item.size / 1e6:8.1f} MB  {item.name}  ({item.why})")
    if lease.at_work(leases):
        print("A client is at work (a lease is held): the environments, system and build-stage "
              "images it may use are left for now.")
    print(f"{verb} {len(found)} image(s), {reclaimed / 1e9:.2f} GB (shared layers count in "
          "each image's size)")
    _prune_volumes(engine, leases, dry_run, volumes)
    return 0


def _prune_volumes(engine: Engine, leases: set[str], dry_run: bool, volumes: bool) -> None:
    orphaned = prune.orphaned_volumes(engine, leases)
    for volume in orphaned:
        deployment = payload_log.deployment_of(volume)
        if volumes and not dry_run:
            try:
                volume.remove()
            except docker.errors.APIError as exc:
                print(f"kept          {volume.name}: {exc.explanation or exc}")
                continue
            print(f"removed       {volume.name}  (inference log of deleted {deployment!r})")
        else:
            print(f"{'would remove' if volumes else 'kept        '}  {volume.name}  (inference "
                  f"log of deleted {deployment!r})")
    if orphaned and not volumes:
        print(f"kept {len(orphaned)} inference log volume(s) of deleted deployments; "
              "--volumes removes them")


if __name__ == "__main__":
    sys.exit(main())
