"""What the plugin and the server agree on, in one place that both import (stdlib only).

The plugin starts servers, probes them and routes to them through a front; the server answers
those probes and drains before it stops. Each fact of that exchange is defined here once: the
port, the headers, the probe and drain protocol, the health check, the paths in the image and
the version they share.
"""

VERSION = "0.1.0"  # the plugin's and the server's (pyproject.toml reads it from here)

SERVER_PORT = 8080  # the server's port inside every serving container
MODEL_PATH = "/opt/ml/model"  # where the model image holds the model
SERVER_PATH = "/opt/mlflow-server"  # where it holds this package
ENV_PREFIX = "SCORING_"  # the server's settings, as environment variables
# The user the server runs as; it owns the model's files, which a model may write into once
# the replica is not locked down (-C hardened=false).
SERVER_USER = "10001:10001"

# Headers. The front routes on DEPLOYMENT_HEADER; every answer names its deployment and model
# version in DEPLOYMENT_HEADER and MODEL_VERSION_HEADER.
DEPLOYMENT_HEADER = "x-mlflow-deployment"
MODEL_VERSION_HEADER = "x-mlflow-model-version"
# A prediction's id: the client's when it sends one, else the server's; every answer of a
# server with an inference log carries it, and so does the request's record.
REQUEST_ID_HEADER = "x-request-id"

# Readiness behind a front. The front asks PING_PATH every CHECK_INTERVAL_MS, sending
# FRONT_HEADER; a server notes the first such check it answers with 200. The plugin's probe
# (HEALTHCHECK_BEHIND_FRONT) sends PROBE_HEADER: BEHIND_FRONT and gets 200 only once a front has
# seen the server ready, that is, once the front sends it traffic.
PING_PATH = "/ping"
HEALTH_PATH = "/health"  # liveness
V2_LIVE_PATH = "/v2/health/live"
V2_READY_PATH = "/v2/health/ready"
# The health probes: open without a token, and never rate-limited by the front.
PROBE_PATHS = (PING_PATH, HEALTH_PATH, V2_LIVE_PATH, V2_READY_PATH)
FRONT_HEADER = "x-mlflow-front"
PROBE_HEADER = "x-mlflow-probe"
BEHIND_FRONT = "behind-front"
CHECK_INTERVAL_MS = 500
CHECK_FALL = 2  # failed checks that take a replica out of the front's rotation
# How long a check may wait for its answer. A busy host can hold a healthy replica's answer
# back for most of a second (measured: 873 ms with the CPUs oversubscribed four times): with
# the interval as its timeout, every replica went out of rotation at once and the front
# refused requests. A stopping or failing replica answers (or refuses) at once, so taking it
# out is no slower; only a hung one takes longer to leave.
CHECK_TIMEOUT_MS = 2000

# Draining. A stopping server answers PING_PATH with 503 for DRAIN_SECONDS, serving what comes
# meanwhile: out of rotation after CHECK_FALL failed checks, plus one interval for the check in
# flight; then it stops taking requests and finishes those it holds.
DRAIN_SECONDS = CHECK_INTERVAL_MS * (CHECK_FALL + 1) / 1000

# The image's health check (Docker's, a swarm task's, and the plugin's probe inside a replica).
HEALTHCHECK = ["python3", "-m", "serving_image.healthcheck"]
HEALTHCHECK_BEHIND_FRONT = [*HEALTHCHECK, "--behind-front"]
HEALTHCHECK_INTERVAL_SECONDS = 5
HEALTHCHECK_TIMEOUT_SECONDS = 3
HEALTHCHECK_RETRIES = 3
HEALTHCHECK_START_SECONDS = 300  # the image's own; the plugin waits -C ready_timeout

# Writable paths. A locked-down replica's root filesystem is read-only; SCRATCH_DIR is a tmpfs
# of SCRATCH_SIZE_MB, and the image points the home directory and the caches that common
# libraries write (matplotlib, numba, joblib) into it. /dev/shm stays writable too.
SCRATCH_DIR = "/tmp"
SCRATCH_SIZE_MB = 256
SCRATCH_ENV = {
    "HOME": SCRATCH_DIR,
    "MPLCONFIGDIR": f"{SCRATCH_DIR}/matplotlib",
    "NUMBA_CACHE_DIR": f"{SCRATCH_DIR}/numba",
    "JOBLIB_TEMP_FOLDER": SCRATCH_DIR,
}
# The inference log (``-C payload_log``). Its ``volume`` sink writes JSON Lines into a named
# volume mounted at PAYLOAD_LOG_DIR; the images hold that directory, owned by SERVER_USER, so a
# new volume (on any node) starts with that owner. Its HTTP sink posts KServe's CloudEvents.
PAYLOAD_LOG_VOLUME = "volume"
PAYLOAD_LOG_DIR = "/var/lib/mlflow-dockerhost/payload-log"
PAYLOAD_SINK_UNREACHABLE = "Inference log sink unreachable"  # starts its warning, which get shows

READ_ONLY_HINT = (f"The replica's root filesystem is read-only (only {SCRATCH_DIR} and /dev/shm "
                  "are writable); deploy with -C hardened=false for a model that writes into "
                  "its image.")


def dockerfile_facts() -> dict[str, str]:
    """The facts above that the Dockerfiles hold, by the ``@NAME@`` that stands for each."""
    healthcheck = ", ".join(f'"{arg}"' for arg in HEALTHCHECK)
    return {
        "@SERVER_PORT@": str(SERVER_PORT),
        "@MODEL_PATH@": MODEL_PATH,
        "@SERVER_PATH@": SERVER_PATH,
        "@SERVER_USER@": SERVER_USER,
        "@PAYLOAD_LOG_DIR@": PAYLOAD_LOG_DIR,
        "@SCRATCH_ENV@": " ".join(f"{name}={value}" for name, value in SCRATCH_ENV.items()),
        "@HEALTHCHECK@": (f"HEALTHCHECK --interval={HEALTHCHECK_INTERVAL_SECONDS}s "
                          f"--timeout={HEALTHCHECK_TIMEOUT_SECONDS}s "
                          f"--start-period={HEALTHCHECK_START_SECONDS}s "
                          f"--retries={HEALTHCHECK_RETRIES} CMD [{healthcheck}]"),
    }
