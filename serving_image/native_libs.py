"""Shared libraries that installed packages need and nothing in the image provides.

Wheels bundle most of their native dependencies (auditwheel), but some leave common system
libraries to the host: LightGBM needs the GNU OpenMP runtime, ``libgomp.so.1``, which slim
base images lack (XGBoost's wheels bring their own copy). Found in the build stage (``ldd`` on
every shared object in the virtualenv), such a library is named with the Debian package that
provides it, so the fix (``-C system_packages=...``) is in the error rather than in a traceback
at the first start.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

# Debian packages of libraries that wheels commonly leave to the system.
DEBIAN_PACKAGES = {
    "libgomp.so.1": "libgomp1",
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
    "libgfortran.so.5": "libgfortran5",
    "libquadmath.so.0": "libquadmath0",
    "libatomic.so.1": "libatomic1",
    "libnuma.so.1": "libnuma1",
    "libopenblas.so.0": "libopenblas0",
    "libblas.so.3": "libblas3",
    "liblapack.so.3": "liblapack3",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6",
    "libXrender.so.1": "libxrender1",
    "libxcb.so.1": "libxcb1",
    "libsndfile.so.1": "libsndfile1",
    "libgeos_c.so.1": "libgeos-c1v5",
    "libspatialindex_c.so.6": "libspatialindex-c6",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libffi.so.8": "libffi8",
    "libz.so.1": "zlib1g",
    "libbz2.so.1.0": "libbz2-1.0",
    "liblzma.so.5": "liblzma5",
    "libzstd.so.1": "libzstd1",
    "libsqlite3.so.0": "libsqlite3-0",
    "libxml2.so.2": "libxml2",
    "libpq.so.5": "libpq5",
    "libaio.so.1": "libaio1",
    "libodbc.so.2": "libodbc2",
    "libcurl.so.4": "libcurl4",
}

# The NVIDIA driver's own libraries: the NVIDIA Container Toolkit mounts them into a container
# started with GPUs, so no image has them and none should.
_DRIVER = re.compile(r"^lib(cuda|nvidia-[\w.-]+|nvcuvid|nvoptix|nvidia)\.so")
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found")
_BATCH = 64


def shared_objects(candidates: Iterable[Path]) -> list[Path]:
    """The ELF shared objects among ``candidates`` (``*.so``, ``*.so.N``), symlinks left out."""
    found = []
    for path in sorted(candidates):
        if path.is_file() and not path.is_symlink() and re.search(r"\.so(\.\d+)*$", path.name):
            with path.open("rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def missing(root: Path) -> dict[str, list[str]]:
    """Each library no shared object under ``root`` can find, with the objects that need it.

    A library whose file name exists anywhere under ``root`` counts as provided: packages such
    as the CUDA wheels load each other's libraries by path before the one that needs them.
    """
    candidates = list(root.rglob("*.so*"))  # one walk of the virtualenv serves both
    objects = shared_objects(candidates)
    provided = {path.name for path in candidates}
    needs: dict[str, list[str]] = {}
    for batch in _batches(objects):
        for library, needed_by in _ldd(batch):
            if library in provided or _DRIVER.match(library):
                continue
            needs.setdefault(library, []).append(needed_by.relative_to(root).as_posix())
    return dict(sorted(needs.items()))


def _batches(paths: list[Path]) -> Iterable[list[Path]]:
    for start in range(0, len(paths), _BATCH):
        yield paths[start:start + _BATCH]


def _ldd(paths: list[Path]) -> Iterable[tuple[str, Path]]:
    """(library, object) for each ``not found`` that ldd reports on ``paths``."""
    result = subprocess.run(["ldd", *map(str, paths)], capture_output=True, text=True)
    current = paths[0]
    by_name = {str(path): path for path in paths}
    for line in result.stdout.splitlines():
        if line.endswith(":") and line[:-1] in by_name:
            current = by_name[line[:-1]]
            continue
        match = _NOT_FOUND.match(line)
        if match:
            yield match.group(1), current


def package(library: str) -> str | None:
    """The Debian package that provides ``library``, when it is one of the common ones."""
    return DEBIAN_PACKAGES.get(library)


def describe(needs: dict[str, list[str]]) -> list[str]:
    """One line per missing library: who needs it and which package has it."""
    lines = []
    for library, needed_by in needs.items():
        shown = ", ".join(needed_by[:3]) + (f" and {len(needed_by) - 3} more"
                                            if len(needed_by) > 3 else "")
        source = package(library)
        where = (f"Debian package {source}" if source else
                 f"find its package with `apt-file search {library}` or on packages.debian.org")
        lines.append(f"{library} (needed by {shown}; {where})")
    return lines


def fix(needs: dict[str, list[str]]) -> str:
    """What to do about ``needs``: the ``system_packages`` that install them."""
    packages = sorted({package(library) or "<package>" for library in needs})
    return (f"Add -C system_packages={','.join(packages)} to install them on the base image "
            "(that build step needs network access from the engine), or use a base image that "
            "has them (-C base_image).")
