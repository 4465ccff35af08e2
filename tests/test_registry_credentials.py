"""The client's registry credentials as the swarm's controller gets them
(``controller.registry_credentials``): read from the client's Docker config, merged with what
the controller has, and written as the controller's own Docker config, where docker-py finds
them for a push. No engine: the configs are files, as ``docker login`` writes them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import docker.auth
import pytest

from mlflow_docker_target.controller import registry_credentials


def _login(directory: Path, auths: dict[str, dict[str, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"auths": auths}))


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_registrys_host_entry_reaches_the_controllers_docker_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _login(tmp_path / "client", {"reg.example:5000": {"auth": _auth("ci", "s3cret")},
                                 "other.example": {"auth": _auth("me", "mine")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "client"))
    added = registry_credentials.for_registry("reg.example:5000/ml/team")
    assert added == {"reg.example:5000": {"auth": _auth("ci", "s3cret")}}  # that host's only
    assert registry_credentials.for_registry("open.example:5000") == {}
    assert registry_credentials.for_registry(None) == {}

    given = registry_credentials.merged(None, added)
    monkeypatch.setenv(registry_credentials.ENV, str(given))
    registry_credentials.install(str(tmp_path))  # the scratch directory
    found = docker.auth.resolve_authconfig(docker.auth.load_config(), "reg.example:5000")
    assert (found["username"], found["password"]) == ("ci", "s3cret")
    assert docker.auth.resolve_authconfig(docker.auth.load_config(), "other.example") is None


def test_newer_credentials_replace_a_hosts_and_others_stay() -> None:
    first = registry_credentials.merged(None, {"a:5000": {"auth": _auth("u", "old")}})
    second = registry_credentials.merged(first, {"a:5000": {"auth": _auth("u", "new")},
                                                 "b:5000": {"auth": _auth("v", "w")}})
    assert json.loads(str(second))["auths"] == {"a:5000": {"auth": _auth("u", "new")},
                                                "b:5000": {"auth": _auth("v", "w")}}
    assert registry_credentials.merged(first, {}) == first  # nothing new: no restart
    assert registry_credentials.merged(None, {}) is None


def test_without_credentials_the_controller_keeps_no_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry_credentials.ENV, raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    registry_credentials.install(str(tmp_path))
    assert not (tmp_path / "docker-config").exists()
