"""What create and update refuse of -C follow_alias on the client, before anything is built."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import parse_config
from mlflow_docker_target.controller import ledger
from mlflow_docker_target.controller.rules import follow_config


def _follow(uri: str, **config: str) -> dict[str, str]:
    return follow_config(uri, parse_config(config, "create"), config)


def test_a_followed_alias_records_the_registry_it_follows_in() -> None:
    assert _follow("models:/fraud@champion", follow_alias="true",
                   tracking_uri="http://mlflow.internal:5000/") == {
        "tracking_uri": "http://mlflow.internal:5000"}
    assert _follow("models:/fraud@champion") == {}


@pytest.mark.parametrize(("uri", "config", "said"), [
    ("models:/fraud/7", {"follow_alias": "true", "tracking_uri": "http://m:5000"},
     "names none"),
    ("runs:/abc/model", {"follow_alias": "true", "tracking_uri": "http://m:5000"},
     "names none"),
    ("models:/fraud@champion", {"follow_interval": "5"}, "-C follow_interval applies only"),
    ("models:/fraud@champion", {"tracking_uri": "http://m:5000"},
     "-C tracking_uri applies only"),
    ("models:/fraud@champion", {"follow_alias": "true", "tracking_uri": "http://127.0.0.1:5000"},
     "loopback"),
    ("models:/fraud@champion", {"follow_alias": "true", "tracking_uri": "http://localhost:5000"},
     "loopback"),
    ("models:/fraud@champion", {"follow_alias": "true", "tracking_uri": "http://[::1]:5000"},
     "loopback"),
])
def test_what_cannot_be_followed_is_refused(uri: str, config: dict[str, str], said: str) -> None:
    with pytest.raises(MlflowException) as error:
        _follow(uri, **config)
    assert said in error.value.message
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"


def test_a_store_on_the_client_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(MlflowException, match="store on this machine") as error:
        _follow("models:/fraud@champion", follow_alias="true")
    assert "-C tracking_uri=http://" in error.value.message
    with pytest.raises(MlflowException, match="config key 'tracking_uri'"):
        parse_config({"tracking_uri": "file:///tmp/mlruns"}, "create")


def test_the_ledger_survives_a_restart_and_a_write_cut_short(tmp_path) -> None:
    entries: dict = {}
    ledger.decide(entries, "fraud", "serving version 7", state="serving", version="7")
    ledger.save(entries, str(tmp_path))
    (tmp_path / ".ledger.json.123").write_text("{cut sh")  # a write a kill cut short
    assert ledger.load(str(tmp_path))["fraud"]["version"] == "7"
    assert ledger.load(str(tmp_path / "none")) == {}
