"""The plugin's version, as installed."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlflow-docker-target")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
