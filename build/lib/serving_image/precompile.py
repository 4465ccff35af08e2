"""Write bytecode for what serving a model imports, and for nothing else.

Run in the environment image's build stage: it loads and warms the model once, as the server
will, with bytecode writing on. Bytecode for a whole environment is about a fifth of its size,
and most of it belongs to modules a server never imports; without bytecode, though, every start
would compile the imports again (9 s instead of 4 s here). Exits 1 when the model cannot load
in the build; ``build_check`` decides what that means.

    python -m serving_image.precompile MODEL_DIR VENV_DIR
"""

from __future__ import annotations

import compileall
import importlib
import sys

# The line that names a module the model could not import; build_check puts back what has it.
MISSING_MODULE = "Missing module: "


def main(model_path: str) -> int:
    sys.dont_write_bytecode = False
    try:
        import uvicorn
        import uvicorn_worker

        from serving_image.app import create_app
        from serving_image.model_state import load_and_warm
        from serving_image.settings import ServerSettings

        # What the supervisor, gunicorn's parent and uvicorn's worker import: the loop,
        # protocol and lifespan modules too.
        for module in ("serving_image.__main__", "gunicorn.app.wsgiapp", "gunicorn.arbiter"):
            importlib.import_module(module)
        app = create_app(ServerSettings(model_path=model_path))
        uvicorn.Config(app=app, **uvicorn_worker.UvicornWorker.CONFIG_KWARGS).load()
        load_and_warm(model_path)
        print("Loaded the model; compiled the bytecode serving it imports")
        return 0
    except (Exception, SystemExit) as exc:
        print(f"Loading the model in the build failed: {exc!r}")
        missing = missing_module(exc)
        if missing:
            print(f"{MISSING_MODULE}{missing}")
        return 1


def missing_module(exc: BaseException | None) -> str | None:
    """The top-level name of a module that could not be found, in ``exc`` or what caused it
    (MLflow and others re-raise import errors as their own)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def compile_all(venv: str) -> None:
    """Bytecode for everything, when the model cannot load here to say what it imports."""
    compileall.compile_dir(venv, quiet=1, workers=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
