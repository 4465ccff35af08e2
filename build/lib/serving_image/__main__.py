"""Run the scoring server: ``python -m serving_image [--model PATH_OR_URI] [--port N] ...``.

In the image every setting comes from the environment. On a host (benchmarks, debugging) the
options override it, and ``--model`` also takes any MLflow model URI, downloaded first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving_image import thread_limits
from serving_image.readiness import READY_DIR_ENV, STARTUP_FAILURE, Readiness
from serving_image.settings import ServerSettings


def _local_model(model: str) -> str:
    if Path(model).is_dir():
        return str(Path(model).resolve())
    import mlflow

    return mlflow.artifacts.download_artifacts(artifact_uri=model,
                                               dst_path=tempfile.mkdtemp(prefix="model-"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving_image", description=__doc__)
    parser.add_argument("--model", help="model directory or MLflow model URI")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--request-timeout", type=float)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--drain-seconds", type=float)
    args = parser.parse_args(argv)

    overrides = {
        "MODEL_PATH": _local_model(args.model) if args.model else None,
        "HOST": args.host, "PORT": args.port, "WORKERS": args.workers,
        "REQUEST_TIMEOUT": args.request_timeout, "LOG_LEVEL": args.log_level,
        "ACCESS_LOG": "false" if args.no_access_log else None,
        "DRAIN_SECONDS": args.drain_seconds,
    }
    for name, value in overrides.items():
        if value is not None:
            os.environ["SCORING_" + name] = str(value)
    settings = ServerSettings.from_env()
    # Shared by the workers: readiness markers, and prometheus-client's multiprocess files
    # (which it must see before it is first imported, hence before the app is).
    ready_dir, metrics_dir = _shared_dir("scoring-ready-"), _shared_dir("scoring-metrics-")
    os.environ[READY_DIR_ENV] = ready_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    try:
        code = _supervise(settings, Readiness(ready_dir, settings.workers))
        failed = Readiness(ready_dir, settings.workers).failed()
    finally:
        shutil.rmtree(ready_dir, ignore_errors=True)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(STARTUP_FAILURE if failed else code)


def server_command(settings: ServerSettings) -> list[str]:
    """gunicorn with uvicorn's worker: one parent, ``workers`` processes on one socket.

    With ``preload`` the parent imports the app, and so loads the model, before it forks the
    workers (serving_image/asgi.py). A worker that dies is replaced by a fork of the parent,
    the model in place. Heartbeats come from each worker's event loop, which predictions never
    hold (they run on predict threads), so a worker is replaced only when it is truly stuck.
    """
    command = [
        sys.executable, "-m", "gunicorn", "serving_image.asgi:app",
        "--worker-class", "uvicorn_worker.UvicornWorker", "--workers", str(settings.workers),
        "--bind", f"[{settings.host}]:{settings.port}" if ":" in settings.host
        else f"{settings.host}:{settings.port}",
        "--log-level", settings.log_level,
        "--graceful-timeout", str(max(1, int(settings.request_timeout))),
        "--timeout", str(max(60, 2 * int(settings.request_timeout))),
    ]
    if settings.preloads:
        command.append("--preload")
    if settings.access_log:
        command += ["--access-logfile", "-"]
    if os.access("/dev/shm", os.W_OK):  # the heartbeat files, in RAM (gunicorn's advice)
        command += ["--worker-tmp-dir", "/dev/shm"]
    return command


def _supervise(settings: ServerSettings, readiness: Readiness) -> int:
    """Run the server as a child and pass it the stop signal, after draining.

    The server installs its own signal handlers in whatever process it runs in, so the drain
    (``/ping`` answers 503 for ``drain_seconds`` while requests are still served, so that a
    front takes this server out of rotation first) happens here, before the server hears of
    the signal; it then hears SIGTERM, gunicorn's graceful stop, whichever signal came. The
    child runs in its own session: a terminal's Ctrl-C reaches it once, from here.
    """
    env = {**os.environ, **(thread_limits.for_preload(os.environ) if settings.preloads else {})}
    child = subprocess.Popen(server_command(settings), start_new_session=True, env=env)
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    draining_since: float | None = None
    forwarded = False
    while True:
        try:
            code = child.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            pass
        if received and not forwarded:
            if draining_since is None:
                draining_since = time.monotonic()
                readiness.mark_draining()
            if time.monotonic() - draining_since >= settings.drain_seconds:
                child.send_signal(signal.SIGTERM)
                forwarded = True
    # Stopped as asked: a clean exit.
    return 0 if forwarded and code in (0, -signal.SIGTERM) else code


def _shared_dir(prefix: str) -> str:
    """A new directory in RAM when there is a /dev/shm: every request writes the metrics files
    (memory-mapped), and on a disk-backed /tmp the kernel's write-back makes those writes fault
    again after each flush."""
    shm = "/dev/shm"
    return tempfile.mkdtemp(prefix=prefix, dir=shm if os.access(shm, os.W_OK) else None)


if __name__ == "__main__":
    main()
