"""Errors as the server answers them: MLflow's shape, ``{"error_code", "message"}``, on every
route of the scoring protocol (V2 has its own, in ``v2_routes``)."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response


def error(status: int, error_code: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """An error shaped like MLflow's: ``{"error_code": ..., "message": ...}``."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status,
                        headers=headers)


class Refused(Exception):
    """A request refused before the model sees it; each protocol shapes the answer."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def describe(exc: BaseException) -> tuple[str, str]:
    """An MLflow error code and message for an exception raised by the model."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return str(exc.error_code), exc.message
    return "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"


def failure(exc: BaseException) -> Response:
    from mlflow.exceptions import MlflowException

    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else 500
    return error(status, *describe(exc))
