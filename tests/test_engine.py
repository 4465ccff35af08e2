"""Target URIs: which engine a dockerhost target names."""

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine import engine_from_target, engine_url


@pytest.mark.parametrize(("target", "engine"), [
    ("dockerhost", None),
    ("dockerhost:/", None),
    ("dockerhost://", None),
    ("dockerhost:/unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("dockerhost:/tcp://10.0.0.5:2376", "tcp://10.0.0.5:2376"),
    ("dockerhost:/ssh://deploy@gpu-box", "ssh://deploy@gpu-box"),
    ("dockerhost:/my-context", "my-context"),
    ("DOCKERHOST:/my-context", "my-context"),
])
def test_engine_from_target(target: str, engine: str | None) -> None:
    assert engine_from_target(target) == engine


@pytest.mark.parametrize("target", ["sagemaker", "dockerhost:/ftp://host", "other:/x"])
def test_bad_targets_say_what_works(target: str) -> None:
    with pytest.raises(MlflowException, match="dockerhost:/tcp://host:2376"):
        engine_from_target(target)


def test_engine_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no Docker CLI config: the default context
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.1.2.3:2376")
    assert engine_url(None) == "tcp://10.1.2.3:2376"
    assert engine_url("unix:///x.sock") == "unix:///x.sock"
    monkeypatch.delenv("DOCKER_HOST")
    assert engine_url(None) == "unix:///var/run/docker.sock"
    with pytest.raises(MlflowException, match="No Docker context named 'nope'"):
        engine_url("nope")
