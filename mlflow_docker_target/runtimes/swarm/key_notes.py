"""How each ``-C`` key behaves when the runtime is a swarm, where it differs from one engine.

Data the swarm runtime owns (``RuntimeEntry.key_notes``): the target's help prints it under each
key, and the README's swarm table is the same text. A key left out behaves as on one engine.
"""

BUILD = "as on one engine: builds run on the manager"

KEY_NOTES: dict[str, str] = {
    "base_image": BUILD,
    "strip_image": BUILD,
    "pull_base": BUILD,
    "mlflow_package": BUILD,
    "system_packages": BUILD,
    "port": ("required by create and create-endpoint (no free port can be checked on every "
        "node); the front publishes it in host mode on every node"),
    "endpoint_port": "required when create --endpoint makes the endpoint",
    "replicas": ("tasks of the deployment's service, spread over the nodes by Swarm; a change "
        "alone scales the service"),
    "proxy_image": ("the front's image on every node; pushed to -C registry when it is a local "
        "image (one no registry knows)"),
    "runtime": "swarm",
    "registry": "required on a swarm of more than one node",
    "constraints": "placement constraints of the replicas' tasks",
    "follow_alias": ("the controller is a service held on the manager the client talks to; "
                     "its rollouts are Swarm's rolling updates, pushed to -C registry"),
    "follow_interval": "as on one engine",
    "tracking_uri": ("reached from the controller's task on the manager, through the "
                     "overlay's gateway (not 127.0.0.1)"),
    "rollout": ("rolling is Swarm's rolling update; a canary is a service of its own beside "
                "the current one, and every node's front takes each share change hitless"),
    "canary": ("promote: the canary takes all requests while Swarm rolls the current service "
               "over to it; abort: it drains away. Hitless through every node"),
    "traffic": ("as on one engine; every node's front takes the new split with a hitless "
                "reload"),
    "bind_address": "refused: host-mode ports listen on every interface of every node",
    "rate_limit": ("as on one engine, counted by each node's front; a change reloads every "
                   "node's front, hitless"),
    "trusted_proxies": "as on one engine; a change reloads every node's front, hitless",
    "front_metrics_port": ("published in host mode on every node, as the endpoint's port: each "
                           "node's front answers for itself"),
    "max_connections": ("as on one engine, per front: each node's front lets each task have "
                        "this many; a change reloads every node's front, hitless"),
    "host_address": "as on one engine; default: the manager's node address",
    "https_cert": ("as on one engine, with the key in a Swarm secret that only the front's user "
                   "reads; a change reloads every node's front, hitless"),
    "https_key": ("a Swarm secret of the front's settings service, handed to each node's front "
                  "in a tmpfs volume only the fronts' user reads"),
    "restart_policy": ("the tasks' restart condition: no -> none, always and unless-stopped "
                       "-> any, on-failure[:N] -> on-failure with N attempts"),
    "cpus": "the CPU limit of each task",
    "memory": "the memory limit of each task",
    "gpus": "refused: services have no device requests; label GPU nodes and use -C constraints",
    "hardened": ("read-only root, the /tmp tmpfs (a tmpfs mount) and every capability dropped; "
                 "not no-new-privileges, which Swarm's service API lacks before 1.46 (Docker 27)"),
    "pids_limit": "the tasks' pids limit (Resources.Limits.Pids, API 1.41)",
    "ready_timeout": ("the health check's start period: a task not ready by then fails, and Swarm "
        "rolls an update back"),
    "stop_timeout": "the service's stop grace period",
    "docker_host": "run-local runs one container on the engine it names",
    "remove_image": "removes the images from the manager; the registry keeps what was pushed",
    "payload_log": ("volume: a volume on each node that runs a replica, holding the records of "
                    "the replicas it ran (gather them from every node); a URL: as on one engine"),
    "remove_payload_log": ("removes the manager's volume; the other nodes keep theirs "
                           "(docker volume rm on each)"),
}
