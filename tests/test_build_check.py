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


MLFLOW_CHAIN = [
    Dist("mlflow-skinny", ["databricks-sdk<1,>=0.20.0", "gitpython<4,>=3.1.9", "pyyaml"]),
    Dist("databricks-sdk", ["google-auth~=2.0", "requests"]),
    Dist("google-auth", ["pyasn1-modules>=0.2.1",
                         "cryptography>=38.0.3; python_version < '3.14'"]),
    Dist("cryptography", ["cffi>=2.0.0; platform_python_implementation != 'PyPy'"]),
    Dist("cffi", ["pycparser; implementation_name != 'PyPy'"]), Dist("pycparser"),
    Dist("GitPython", ["gitdb<5,>=4.0.1"]), Dist("gitdb", ["smmap<6,>=3.0.1"]), Dist("smmap"),
    Dist("pyasn1-modules"), Dist("pyyaml"), Dist("requests"), Dist("scikit-learn"),
]
CLIENT_ONLY = ["cffi", "cryptography", "gitdb", "GitPython", "pycparser", "smmap"]


def _without_cuda_and_tools(dists: list) -> list[str]:
    return [name for name in _names(dists) if name not in _names(INSTALLED)]


def test_mlflow_client_only_packages_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_check.metadata, "distributions",
                        lambda: iter([*INSTALLED, *MLFLOW_CHAIN]))
    requested = {"mlflow-skinny", "scikit-learn"}
    assert _without_cuda_and_tools(build_check.unneeded(False, requested)) == CLIENT_ONLY


@pytest.mark.parametrize("requested", [{"cryptography"}, {"google-auth"}, {"databricks-sdk"}])
def test_a_model_that_asks_for_the_client_chain_keeps_cryptography(
        monkeypatch: pytest.MonkeyPatch, requested: set[str]) -> None:
    monkeypatch.setattr(build_check.metadata, "distributions",
                        lambda: iter([*INSTALLED, *MLFLOW_CHAIN]))
    assert _without_cuda_and_tools(build_check.unneeded(False, {"mlflow", *requested})) == [
        "gitdb", "GitPython", "smmap"]


def test_cryptography_needed_by_another_package_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_check.metadata, "distributions", lambda: iter(
        [*INSTALLED, *MLFLOW_CHAIN, Dist("paramiko", ["cryptography>=3.3"]),
         Dist("my-model", ["paramiko"])]))
    assert _without_cuda_and_tools(build_check.unneeded(False, {"my-model"})) == [
        "gitdb", "GitPython", "smmap"]


def test_requirement_names_skip_options_and_comments(tmp_path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# from the model\nmlflow-skinny==3.17.2\n--find-links x\n"
                            "Scikit_Learn==1.9.1  # pinned\n\nxgboost-cpu==3.2.0\n")
    assert build_check.requirement_names(requirements) == {
        "mlflow-skinny", "scikit-learn", "xgboost-cpu"}


LEFT_OUT = {"cryptography", "cffi", "pycparser", "gitpython", "gitdb", "smmap", "setuptools"}
MODULES = {"cryptography": {"cryptography"}, "cffi": {"cffi", "_cffi_backend"},
           "pycparser": {"pycparser"}, "gitpython": {"git"}, "gitdb": {"gitdb"},
           "smmap": {"smmap"}, "setuptools": {"setuptools", "pkg_resources", "_distutils_hack"}}
REQUIRES = {"cryptography": {"cffi"}, "cffi": {"pycparser"}, "pycparser": set(),
            "gitpython": {"gitdb"}, "gitdb": {"smmap"}, "smmap": set(), "setuptools": set()}


def test_what_the_model_missed_comes_back_with_what_it_needs() -> None:
    assert build_check.put_back("cryptography", LEFT_OUT, MODULES, REQUIRES) == {
        "cryptography", "cffi", "pycparser"}
    assert build_check.put_back("_cffi_backend", LEFT_OUT, MODULES, REQUIRES) == {
        "cffi", "pycparser"}
    assert build_check.put_back("pkg_resources", LEFT_OUT, MODULES, REQUIRES) == {"setuptools"}


@pytest.mark.parametrize("missing", [None, "torch"])
def test_a_failure_that_names_none_of_them_brings_all_back(missing: str | None) -> None:
    assert build_check.put_back(missing, LEFT_OUT, MODULES, REQUIRES) == LEFT_OUT


def test_top_level_modules_of_a_distribution() -> None:
    dist = Dist("cffi", files=(
        "cffi/__init__.py", "cffi/api.py", "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
        "cffi-2.1.1.dist-info/RECORD", "../../../bin/cffi-tool", "__pycache__/x.pyc"))
    assert build_check._modules(dist) == {"cffi", "_cffi_backend"}


def test_the_missing_module_is_found_behind_a_wrapping_error() -> None:
    from serving_image.precompile import missing_module

    try:
        try:
            import cryptography_left_out.exceptions  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("Failed to load the model") from exc
    except RuntimeError as wrapped:
        assert missing_module(wrapped) == "cryptography_left_out"
    assert missing_module(ValueError("no")) is None
