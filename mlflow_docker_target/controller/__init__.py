"""The controller: one long-running container per engine (role ``controller``; on a swarm
manager, a service held on that manager) that follows registry aliases for the deployments
that ask it to (``-C follow_alias=true``), and judges the canaries of those that roll out so
(``-C rollout=canary``).

- ``rules``: what create and update check on the client before anything is built;
- ``image``: its image, built offline from the plugin's own code and pinned dependencies;
- ``lifecycle``: started by the first deployment that needs it, replaced by a newer plugin,
  removed when the last one stops needing it (on the client); ``home``, ``as_container`` and
  ``as_service``: where it runs;
- ``watch`` and ``ledger``: its loop and what it remembers (in the container);
- ``canary_watch``, ``canary_verdict``, ``replica_metrics``: its looks at a canary, the
  verdict from both versions' figures, and the figures from the replicas' own metrics.

It runs the plugin's own client against the engine's socket, so nothing on the user's machine
has to stay up, and every change it makes is an ordinary ``update`` under the deployment's
lease.
"""
