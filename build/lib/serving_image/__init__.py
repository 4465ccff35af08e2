"""The scoring server that runs inside every serving image (and on a host, for benchmarks).

It speaks MLflow's scoring protocol on ``POST /invocations`` and adds readiness, liveness,
version and JSON errors for every failure. Settings come from the environment (see
:mod:`serving_image.settings`), which the plugin fills from ``-C`` config.
"""

__version__ = "0.1.0"
