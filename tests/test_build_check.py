"""What the build stage leaves out of an image; the builds themselves run in
tests/integration/test_model_matrix.py (XGBoost without nvidia-nccl-cu12)."""

from dataclasses import dataclass, field

import pytest

from serving_image import build_check


@dataclass
class Dist:
    name: str
    requires: list[str] = field(default_factory=list)
    version: str = "1.0"
    files: tuple = ()

    @property
    def metadata(self) -> dict[str, str]:
        return {"Name": self.name}


INSTALLED = [
    Dist("xgboost", ["numpy", "scipy", "nvidia-nccl-cu12; platform_system == 'Linux'"]),
    Dist("nvidia-nccl-cu12"),
    Dist("numpy"), Dist("scipy", ["numpy<2.6,>=1.25.2"]),
    Dist("pytest", ["iniconfig>=1", "pluggy<2,>=1.5", "pygments>=2.7.2",
                    "hypothesis; extra == 'dev'"]),
    Dist("iniconfig"), Dist("pluggy"),
    Dist("Pygments"), Dist("rich", ["pygments<3,>=2.13"]),  # rich stays, so pygments stays
    Dist("setuptools"), Dist("pip"),
]


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_check.metadata, "distributions", lambda: iter(INSTALLED))


def _names(dists: list) -> list[str]:
    return [dist.name for dist in dists]


def test_cpu_deployment_leaves_out_cuda_wheels_and_test_tools() -> None:
    assert _names(build_check.unneeded(keep_cuda=False)) == [
        "iniconfig", "nvidia-nccl-cu12", "pluggy", "pytest", "setuptools"]


def test_gpu_deployment_keeps_cuda_wheels() -> None:
    assert _names(build_check.unneeded(keep_cuda=True)) == [
        "iniconfig", "pluggy", "pytest", "setuptools"]


def test_what_a_kept_package_needs_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_check.metadata, "distributions", lambda: iter(
        [*INSTALLED, Dist("my-model-helpers", ["pytest", "setuptools"])]))
    assert _names(build_check.unneeded(keep_cuda=False)) == ["nvidia-nccl-cu12"]
