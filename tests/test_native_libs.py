"""Missing shared libraries, found in the build stage, named with their Debian packages.

``ldd`` itself is faked here; the integration tests build LightGBM on bases with and without
libgomp1 (tests/integration/test_model_matrix.py).
"""

from pathlib import Path

import pytest

from serving_image import native_libs

ELF = b"\x7fELF" + bytes(60)


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    lib = tmp_path / "lib" / "python3.11" / "site-packages"
    for name in ("lightgbm/lib/lib_lightgbm.so", "torch/lib/libtorch_cuda.so",
                 "nvidia/nccl/lib/libnccl.so.2", "numpy/_core/_multiarray.cpython-311.so"):
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / name).write_bytes(ELF)
    (lib / "lightgbm" / "notes.so.txt").write_text("not a library")
    (lib / "lightgbm" / "fake.so").write_text("not ELF either")
    return tmp_path


def _fake_ldd(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """ldd's multi-file output: a ``path:`` header, then one line per needed library."""

    def run(command, capture_output, text):
        lines = []
        for path in command[1:]:
            lines.append(f"{path}:")
            lines.append("\tlinux-vdso.so.1 (0x00007ffd)")
            lines += [f"\t{lib} => not found" for lib in answers.get(Path(path).name, [])]
        return type("Done", (), {"stdout": "\n".join(lines) + "\n", "returncode": 1})()

    monkeypatch.setattr(native_libs.subprocess, "run", run)


def test_only_elf_shared_objects_are_scanned(venv: Path) -> None:
    names = [path.name for path in native_libs.shared_objects(venv.rglob("*.so*"))]
    assert names == ["lib_lightgbm.so", "_multiarray.cpython-311.so", "libnccl.so.2",
                     "libtorch_cuda.so"]


def test_missing_library_named_with_its_package_and_the_fix(
        venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ldd(monkeypatch, {
        "lib_lightgbm.so": ["libgomp.so.1"],
        # provided elsewhere in the venv (CUDA wheels load each other by path): not missing
        "libtorch_cuda.so": ["libnccl.so.2", "libcuda.so.1", "libweird.so.3"],
    })
    needs = native_libs.missing(venv)
    assert needs == {
        "libgomp.so.1": ["lib/python3.11/site-packages/lightgbm/lib/lib_lightgbm.so"],
        "libweird.so.3": ["lib/python3.11/site-packages/torch/lib/libtorch_cuda.so"],
    }  # libcuda.so.1 is the driver's, mounted at run time
    lines = native_libs.describe(needs)
    assert lines[0] == ("libgomp.so.1 (needed by lib/python3.11/site-packages/lightgbm/lib/"
                        "lib_lightgbm.so; Debian package libgomp1)")
    assert "apt-file search libweird.so.3" in lines[1]
    assert native_libs.fix(needs).startswith("Add -C system_packages=<package>,libgomp1 ")


def test_nothing_missing(venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ldd(monkeypatch, {})
    assert native_libs.missing(venv) == {}
