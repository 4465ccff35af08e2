"""Config parsing: strings from -C become typed settings; bad input names key, values, default."""

from dataclasses import fields

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import KEYS, Settings, is_secret, parse_config, recorded_value
from mlflow_docker_target.help_text import target_help


def test_none_and_empty_mean_defaults() -> None:
    assert parse_config(None, "create") == parse_config({}, "create") == Settings()


def test_every_setting_has_exactly_one_key() -> None:
    assert {f.name for f in fields(Settings)} == {k.name for k in KEYS} | {"env"}


def test_strings_are_parsed_to_types() -> None:
    settings = parse_config({
        "port": "8080", "cpus": "1.5", "memory": "512m", "init": "false", "workers": "3",
        "restart_policy": "on-failure:3", "bind_address": "0.0.0.0", "max_body_size": "1g",
        "request_timeout": "5", "env.OMP_NUM_THREADS": "1",
    }, "create")
    assert settings.port == 8080
    assert settings.cpus == 1.5
    assert settings.memory == 512 * 1024**2
    assert settings.init is False
    assert settings.workers == 3
    assert settings.restart_policy == "on-failure:3"
    assert settings.bind_address == "0.0.0.0"
    assert settings.max_body_size == 1024**3
    assert settings.env == {"OMP_NUM_THREADS": "1"}


def test_python_values_are_accepted() -> None:
    assert parse_config({"port": 8080, "init": False}, "create").port == 8080
    assert parse_config({"init": False}, "create").init is False


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("port", "0", "a TCP port 1-65535"),
    ("port", "http", "a TCP port 1-65535"),
    ("init", "maybe", "true or false"),
    ("memory", "lots", "a size such as 512m"),
    ("restart_policy", "sometimes", "no, always, unless-stopped or on-failure"),
    ("bind_address", "localhost:80", "an IP address"),
    ("workers", "0", "an integer >= 1"),
    ("ready_timeout", "nan", "seconds > 0"),
    ("batch_max_wait_ms", "-1", "milliseconds >= 0"),
])
def test_bad_values_name_key_accepted_values_and_default(key: str, value: str,
                                                         expected: str) -> None:
    with pytest.raises(MlflowException) as err:
        parse_config({key: value}, "create")
    message = err.value.message
    assert f"'{key}'" in message and repr(value) in message
    assert expected in message and "default:" in message
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_unknown_key_lists_accepted_keys() -> None:
    with pytest.raises(MlflowException, match=r"Unknown config key 'prot'.*port"):
        parse_config({"prot": "8080"}, "create")


def test_key_for_another_command_is_refused() -> None:
    with pytest.raises(MlflowException, match="'remove_image' does not apply to create"):
        parse_config({"remove_image": "true"}, "create")
    assert parse_config({"remove_image": "true"}, "delete").remove_image is True
    with pytest.raises(MlflowException, match="'port' does not apply to delete"):
        parse_config({"port": "1"}, "delete")


def test_env_keys_need_a_valid_name() -> None:
    with pytest.raises(MlflowException, match=r"env\.<NAME>"):
        parse_config({"env.BAD-NAME": "1"}, "create")


def test_base_image_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_DOCKERHOST_BASE_IMAGE", raising=False)
    assert Settings().resolved_base_image("3.10.14") == "python:3.10-slim"
    monkeypatch.setenv("MLFLOW_DOCKERHOST_BASE_IMAGE", "local/base:1")
    assert Settings().resolved_base_image("3.10.14") == "local/base:1"
    assert Settings(base_image="mine:2").resolved_base_image("3.10.14") == "mine:2"


def test_strip_image_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_DOCKERHOST_STRIP_IMAGE", raising=False)
    assert Settings().resolved_strip_image() is None  # the base image strips, if it can
    monkeypatch.setenv("MLFLOW_DOCKERHOST_STRIP_IMAGE", "local/binutils:1")
    assert Settings().resolved_strip_image() == "local/binutils:1"
    assert Settings(strip_image="mine:2").resolved_strip_image() == "mine:2"


def test_help_lists_every_key_with_default() -> None:
    text = target_help()
    for key in KEYS:
        assert f"  {key.name}  [" in text
        assert f"default: {key.shown_default}" in text


def test_settings_defaults_are_the_keys_defaults() -> None:
    settings = Settings()
    for key in KEYS:
        assert getattr(settings, key.name) == key.default, key.name


@pytest.mark.parametrize(("value", "expected"), [
    ("fraud-v3:90,fraud-v4:10", {"fraud-v3": 90, "fraud-v4": 10}),
    ("a:100", {"a": 100}),
    ("a.b:50, c_d:50", {"a.b": 50, "c_d": 50}),
])
def test_traffic(value: str, expected: dict[str, int]) -> None:
    assert parse_config({"traffic": value}, "update_endpoint").traffic == expected


@pytest.mark.parametrize("value", ["a:90,b:20", "a:90", "a:x,b:10", "a90", "a:50,a:50", ":100"])
def test_traffic_must_name_whole_weights_summing_to_100(value: str) -> None:
    with pytest.raises(MlflowException, match="sum"):
        parse_config({"traffic": value}, "update_endpoint")


def test_proxy_image_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_DOCKERHOST_PROXY_IMAGE", raising=False)
    assert Settings().resolved_proxy_image() == "haproxy:2.8"
    monkeypatch.setenv("MLFLOW_DOCKERHOST_PROXY_IMAGE", "local/haproxy:1")
    assert Settings().resolved_proxy_image() == "local/haproxy:1"
    assert Settings(proxy_image="mine:2").resolved_proxy_image() == "mine:2"


def test_endpoint_keys_belong_to_their_commands() -> None:
    with pytest.raises(MlflowException, match="does not apply to update"):
        parse_config({"endpoint_port": "8080"}, "update")
    with pytest.raises(MlflowException, match="does not apply to create"):
        parse_config({"traffic": "a:100"}, "create")
    assert parse_config({"port": "8080"}, "create_endpoint").port == 8080
    assert parse_config({"replicas": "3"}, "update").replicas == 3


def _readme_section(heading: str) -> str:
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    start = text.index(f"\n{heading}")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_says_how_every_key_behaves_on_a_swarm() -> None:
    """The README's swarm table is the swarm runtime's note on each key, as the target's help
    prints it."""
    from mlflow_docker_target.runtimes import RUNTIMES

    swarm = RUNTIMES["swarm"]
    rows = dict(line.split(" | ", 1) for line in _readme_section("## Docker Swarm").splitlines()
                if line.startswith("| `"))
    for key in KEYS:
        note = swarm.key_notes.get(key.name, swarm.key_default)
        assert rows.get(f"| `{key.name}`", "").rstrip(" |") == note, key.name
        assert f"on a swarm: {note}" in target_help()


def test_readme_lists_every_key_with_its_commands() -> None:
    """The README's table is written by hand: it must name each key and the commands it has."""

    from mlflow_docker_target.config import KEYS

    rows = {line.split("|")[1].strip(): line.split("|")[2]
            for line in _readme_section("### Config").splitlines() if line.startswith("| `")}
    for key in KEYS:
        name = "`env.<NAME>`" if key.name == "env" else f"`{key.name}`"
        row = next((commands for names, commands in rows.items()
                    if name in names.split(", ")), None)
        assert row is not None, f"README's config table lacks {name}"
        listed = {c.strip().replace("-", "_") for c in row.split(",")}
        assert listed == set(key.commands), (name, listed, set(key.commands))


def test_an_empty_value_means_the_default_and_port_cannot_be_reset() -> None:
    settings = parse_config({"memory": "", "auth_token": "", "replicas": " ",
                             "env.GONE": ""}, "update")
    assert settings.memory is None and settings.auth_token is None
    assert settings.replicas == 1 and "GONE" not in settings.env
    with pytest.raises(MlflowException, match="cannot reset the port"):
        parse_config({"port": ""}, "update")
    with pytest.raises(MlflowException, match="Unknown config key 'memroy'"):
        parse_config({"memroy": ""}, "update")  # a typo still fails


def test_the_one_secret_rule() -> None:
    from mlflow_docker_target.config import is_secret

    assert all(is_secret(k) for k in ("auth_token", "env.AWS_SECRET_ACCESS_KEY",
                                      "env.api_key", "env.DB_PASSWORD", "env.GH_TOKEN",
                                      "env.GOOGLE_APPLICATION_CREDENTIALS"))
    assert not any(is_secret(k) for k in ("memory", "env.OMP_NUM_THREADS", "env.LOG_LEVEL"))


@pytest.mark.parametrize(("value", "expected"), [
    ("all", {"Count": -1}), ("2", {"Count": 2}),
    ("device=0,GPU-3f2a", {"DeviceIDs": ["0", "GPU-3f2a"]}),
])
def test_gpus_become_docker_device_requests(value: str, expected: dict) -> None:
    from mlflow_docker_target.runtimes.container.gpus import device_requests

    settings = parse_config({"gpus": value}, "create")
    (request,) = device_requests(settings.gpus)
    assert request["Capabilities"] == [["gpu"]]
    assert {k: request[k] for k in expected} == expected


@pytest.mark.parametrize("value", ["0", "some", "device=", "-1", "device=0,,1"])
def test_bad_gpus_values_are_refused(value: str) -> None:
    with pytest.raises(MlflowException, match="config key 'gpus'"):
        parse_config({"gpus": value}, "create")


def test_with_gpus_one_worker_loading_its_own_model() -> None:
    from mlflow_docker_target.record import ModelRef
    from mlflow_docker_target.runtimes.server_spec import Spec

    ref = ModelRef("models:/m/1", "models:/m/1", "m", "1", None)

    def env(config: dict) -> dict[str, str]:
        return Spec("d", "img", ref, config, parse_config(config, "create"), "0").environment()

    assert env({}).get("SCORING_WORKERS") is None  # the server counts its CPUs
    assert env({"gpus": "all"})["SCORING_WORKERS"] == "1"
    assert env({"gpus": "all", "workers": "3"})["SCORING_WORKERS"] == "3"
    # CUDA does not survive a fork: with GPUs no model is loaded before the workers start
    assert env({})["SCORING_PRELOAD"] == "true"
    assert env({"gpus": "all"})["SCORING_PRELOAD"] == "false"


def test_the_inference_log_keys() -> None:
    settings = parse_config({"payload_log": "https://sink.example.com:8443/e",
                             "payload_log_headers": "X-Tenant, user-agent",
                             "payload_log_retention": "12h", "payload_log_max_size": "2g",
                             "payload_log_sample": "0.25", "payload_log_token": "s3"}, "create")
    assert settings.payload_log == "https://sink.example.com:8443/e"
    assert settings.payload_log_headers == "user-agent,x-tenant"
    assert settings.payload_log_retention == 12 * 3600
    assert settings.payload_log_max_size == 2 * 1024**3 and settings.payload_log_sample == 0.25
    assert is_secret("payload_log_token")
    for key, bad in (("payload_log", "s3://bucket"), ("payload_log", "file"),
                     ("payload_log_headers", "x-tenant,Authorization"),
                     ("payload_log_sample", "1.5"), ("payload_log_retention", "soon")):
        with pytest.raises(MlflowException, match=f"config key '{key}'"):
            parse_config({key: bad}, "create")
    with pytest.raises(MlflowException, match="does not apply to create"):
        parse_config({"remove_payload_log": "true"}, "create")
    assert parse_config({"remove_payload_log": "true"}, "delete").remove_payload_log


def test_one_recorded_key_is_read_alone_with_its_default() -> None:
    """The controller reads a few keys of a deployment's recorded config: parsed as -C parses
    them, their defaults when absent (or no longer parsing), whatever the other keys hold."""
    recorded = {"follow_interval": "2.5", "canary_min_requests": "30", "canary_window": "soon",
                "no_such_key": "x"}
    assert recorded_value(recorded, "follow_interval") == 2.5
    assert recorded_value(recorded, "canary_min_requests") == 30
    assert recorded_value(recorded, "canary_window") == 300.0  # refused now: the default
    assert recorded_value(recorded, "canary_max_latency_ratio") == 1.5
    assert recorded_value({"follow_interval": " "}, "follow_interval") == 30.0
