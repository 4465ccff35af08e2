"""MLflow's plugin contract: how MLflow finds, validates and calls the dockerhost plugin."""

import inspect

from click.testing import CliRunner
from mlflow.deployments import BaseDeploymentClient, cli, get_deploy_client
from mlflow.deployments.plugin_manager import DeploymentPlugins

import mlflow_docker_target


def test_entry_point_module_passes_mlflow_validation() -> None:
    plugin = DeploymentPlugins()["dockerhost"]  # validates run_local, target_help, one client
    assert plugin is mlflow_docker_target
    clients = [obj for _, obj in inspect.getmembers(plugin)
               if inspect.isclass(obj) and issubclass(obj, BaseDeploymentClient)
               and obj is not BaseDeploymentClient]
    assert clients == [mlflow_docker_target.DockerHostDeploymentClient]


def test_signatures_match_what_mlflow_calls() -> None:
    assert list(inspect.signature(mlflow_docker_target.run_local).parameters) == [
        "name", "model_uri", "flavor", "config"]
    assert not inspect.signature(mlflow_docker_target.target_help).parameters


def test_target_uris_give_clients_without_touching_an_engine() -> None:
    for target in ("dockerhost", "dockerhost:/", "dockerhost:/unix:///nonexistent.sock"):
        client = get_deploy_client(target)
        assert isinstance(client, mlflow_docker_target.DockerHostDeploymentClient)
        assert client.target_uri == target


def test_help_through_the_cli() -> None:
    result = CliRunner().invoke(cli.commands.commands["help"], ["-t", "dockerhost"])
    assert result.exit_code == 0
    for needle in ("dockerhost:/tcp://", "remove_image", "run-local", "default: unless-stopped"):
        assert needle in result.output
