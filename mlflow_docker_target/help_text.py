"""``mlflow deployments help -t dockerhost``: the target's help text.

Generated where it can be: the ``-C`` keys from ``config.KEYS``, the runtimes and what each key
does on them from ``runtimes.RUNTIMES``.
"""

from __future__ import annotations

from mlflow_docker_target import config as config_module
from mlflow_docker_target.runtimes import RUNTIMES


def _key_notes(key: str) -> list[str]:
    """How ``key`` behaves on each runtime, where the runtime says."""
    notes = []
    for entry in RUNTIMES.values():
        note = entry.key_notes.get(key, entry.key_default)
        if note is not None:
            notes.append(f"{entry.where}: {note}")
    return notes


def _runtimes() -> str:
    return "\n".join(f"  {entry.description}".replace("\n", "\n  ")
                     for entry in reversed(RUNTIMES.values()))


def target_help() -> str:
    """The text of `mlflow deployments help -t dockerhost`: its config keys from the key table,
    its runtimes (and how each key behaves on them) from the runtime table."""
    return f"""\
Target 'dockerhost': serve MLflow models as containers on a Docker engine, or as services on
the Docker Swarm it manages.

Target URIs (which engine, in this order)
  dockerhost:/unix:///var/run/docker.sock
  dockerhost:/tcp://host:2376          TLS from -C tlscacert/tlscert/tlskey, else
                                       DOCKER_TLS_VERIFY / DOCKER_CERT_PATH
  dockerhost:/ssh://user@host[:port]   ~/.ssh/config and known_hosts; the remote user needs
                                       the docker CLI
  dockerhost:/<docker context name>    the context's host and TLS files
  dockerhost  or  dockerhost:/         DOCKER_HOST, else DOCKER_CONTEXT, else the current
                                       Docker context, else the local socket
run-local gets no target from MLflow: it uses -C docker_host=..., else the environment.
list, get and predict take no config: for TLS use the DOCKER_* variables or a context.
On a remote engine the port is published on all interfaces and the endpoint URL uses the
engine's host name (-C host_address overrides it); builds run there, with wheels for its CPU.

Model URIs: models:/name/version, models:/name@alias, models:/name/latest, runs:/<id>/path, or a
local path. Aliases and 'latest' are resolved to a version, recorded on the deployment.

The image builds on the engine with no network: the client resolves wheels for the engine's
platform with its own pip settings. Base image: -C base_image, else
${{{config_module.BASE_IMAGE_ENV}}}, else python:<model's major.minor>-slim. Proxy image:
-C proxy_image, else ${{{config_module.PROXY_IMAGE_ENV}}}, else {config_module.DEFAULT_PROXY_IMAGE}.
Debug symbols leave the environment's shared objects in a build step on an image with GNU
binutils: -C strip_image, else ${{{config_module.STRIP_IMAGE_ENV}}}, else the base image (if it has
binutils). Each is pulled, with a log line, only if the engine lacks it.

Config (-C key=value)
{config_module.help_text(_key_notes)}

Examples
  mlflow deployments create -t dockerhost --name iris -m models:/iris@champion -C port=8080
  mlflow deployments update -t dockerhost --name iris -m models:/iris/3 -C replicas=2
  mlflow deployments get -t dockerhost --name iris
  mlflow deployments list -t dockerhost
  mlflow deployments predict -t dockerhost --name iris --input-path input.json
  mlflow deployments delete -t dockerhost --name iris           # its image goes too
  mlflow deployments run-local -t dockerhost --name try -m runs:/<run id>/model -C port=5001

Endpoints that stay put
  Every deployment is served through a front (HAProxy in its own container) that owns the
  endpoint's host port for its whole life: updates, engine restarts and replicas come and go
  behind it. An update starts the new replicas, proves them ready, lets the front take them in,
  then stops the old ones, which drain; a failed update removes what it started and the current
  version keeps serving. An update that changes only -C replicas scales instead: new replicas
  join once ready, or the oldest drain and go. A request a vanishing replica could not answer is
  retried on another (bodies up to HAProxy's buffer, 16 kB). With -C rollout=canary an update
  starts the new version beside the current one, taking -C canary_traffic percent of the
  deployment's requests; the engine's controller promotes or aborts it by both versions'
  metrics (-C canary_window, canary_max_error_rate, canary_max_latency_ratio), or update
  -C canary=promote (or -C canary=abort) ends it at once.
  Several deployments can share an endpoint, with weighted traffic:
    mlflow deployments create -t dockerhost --name fraud-v3 -m models:/fraud/3 \\
        --endpoint fraud -C endpoint_port=8080      # makes the endpoint if it is missing
    mlflow deployments create -t dockerhost --name fraud-v4 -m models:/fraud/4 --endpoint fraud
    mlflow deployments update-endpoint -t dockerhost --endpoint fraud \\
        -C traffic=fraud-v3:90,fraud-v4:10
    mlflow deployments get-endpoint -t dockerhost --endpoint fraud
    mlflow deployments predict -t dockerhost --endpoint fraud --input-path in.json  # the split
    mlflow deployments predict -t dockerhost --name fraud-v4 --input-path in.json   # just v4
  A request with the header 'x-mlflow-deployment: <name>' goes to that deployment; others are
  drawn by weight, and a deployment with no ready replica hands its share to the others.
  MLflow's 'create-endpoint' command fails before reaching any plugin (its --endpoint option
  does not match the function's argument); use create --endpoint as above, or
  get_deploy_client("dockerhost").create_endpoint(name, config).

Runtimes (-C runtime; a deployment stays on the one it was made on)
{_runtimes()}

GPUs: -C gpus=all|N|device=0,1 (as docker run --gpus); 1 worker unless -C workers says
otherwise. The engine needs the NVIDIA Container Toolkit (checked before anything is built).
CUDA wheels the model requires are installed; PyTorch and XGBoost wheels bring their CUDA
libraries and run on python:X.Y-slim; for a system CUDA use -C base_image=nvidia/cuda:...
with python3 and venv added.

Server routes: POST /invocations (MLflow scoring protocol), GET /ping (ready), GET /health
(alive), GET /version, GET /metrics, GET /docs, /redoc and /openapi.json (served offline), and
the Open Inference Protocol (V2, as MLServer's MLflow runtime speaks it): /v2/health/live,
/v2/health/ready, /v2/models/<deployment or endpoint name>[/versions/<v>][/ready|/infer].
Streaming: {{..., "stream": true}} on /invocations answers Server-Sent Events from the model's
predict_stream ('data: <json>' lines, then 'data: [DONE]'); from Python,
client.predict_stream(name, {{"messages": [...]}}) yields the chunks as dicts. At most
-C max_streams streams per worker.
Answers carry x-mlflow-deployment and x-mlflow-model-version. With -C auth_token every
route but the health probes (/ping, /health, /v2/health/*) needs 'Authorization: Bearer
<token>'. Every prediction request answers 504 at -C request_timeout; the model runs on
-C predict_threads threads per worker, so the probes answer meanwhile.

Update: -C key= (empty) puts a key back to its default (auth_token= turns auth off, memory=
lifts the limit, env.NAME= removes NAME); port= is refused. Secrets (auth_token, env.* names
with KEY, SECRET, TOKEN, PASSWORD, CREDENTIAL) show as *** and live only in the containers'
environment, which anyone with access to the engine can read.

predict --input-path: MLflow reads the file with pandas.read_json; a scoring-protocol body as
curl sends it ({{"dataframe_split": ...}}, {{"inputs": ...}}, ...) is passed on unchanged, and a
table as records or columns is sent as dataframe_split.

Deployments made by 0.1.0 and later stay visible and updatable after an upgrade."""
