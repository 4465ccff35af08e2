"""The scoring server that runs inside every serving image (and on a host, for benchmarks).

``app`` mounts the route table (``routes``): ``scoring`` (``POST /invocations``, MLflow's scoring
protocol, with ``fast_path``, ``batching``, ``streaming`` and ``mlflow_scoring`` behind it),
``probes`` (readiness, liveness, version, metrics) and ``v2_routes`` (the Open Inference
Protocol, ``v2``'s codecs). ``model_state`` loads the model; ``predictor`` runs predictions on
threads with deadlines. ``__main__`` supervises gunicorn (``asgi`` is what it loads) and drains
before it stops. ``contract`` is what this server and the plugin agree on, ``settings`` its
settings (from the environment the plugin fills). ``build_check``, ``precompile``,
``native_libs`` and ``strip.sh`` run in the image build; the Dockerfile templates sit beside
them.
"""

from serving_image.contract import VERSION as __version__

__all__ = ["__version__"]
