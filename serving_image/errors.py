"""Errors as the server answers them: MLflow's shape, ``{"error_code", "message"}``, on every
route of the scoring protocol; OpenAI's, ``{"error": {"message", "type", "code"}}``, on the
OpenAI routes, so that the ``openai`` client raises the matching exception (V2 has its own, in
``v2_routes``)."""

from __future__ import annotations

import errno

from fastapi.responses import JSONResponse, Response

from serving_image.contract import READ_ONLY_HINT


def error(status: int, error_code: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """An error shaped like MLflow's: ``{"error_code": ..., "message": ...}``."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status,
                        headers=headers)


# OpenAI's error types by HTTP status; the client picks its exception class by the status.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 408: "invalid_request_error",
                 413: "invalid_request_error", 415: "invalid_request_error",
                 429: "rate_limit_error"}


def openai_body(status: int, message: str, code: str | None = None) -> dict[str, object]:
    """OpenAI's error object; ``code``: an MLflow error code, given in lower case."""
    return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"),
                      "param": None, "code": code.lower() if code else None}}


def openai_error(status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(openai_body(status, message, code), status_code=status,
                        headers=headers)


class Refused(Exception):
    """A request refused before the model sees it; each protocol shapes the answer."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def describe(exc: BaseException) -> tuple[str, str]:
    """An MLflow error code and message for an exception raised by the model; a write that a
    read-only root filesystem refused says what to do about it."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return str(exc.error_code), exc.message + read_only_hint(exc)
    return "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}" + read_only_hint(exc)


def read_only_hint(exc: BaseException) -> str:
    """:data:`READ_ONLY_HINT` (after a space) when ``exc``, or an exception that caused it,
    is a write the read-only root filesystem refused; else nothing."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno == errno.EROFS:
            return " " + READ_ONLY_HINT
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return ""


def status_of(exc: BaseException) -> int:
    """The HTTP status MLflow gives an exception the model raised: its own for MLflow's."""
    from mlflow.exceptions import MlflowException

    return exc.get_http_status_code() if isinstance(exc, MlflowException) else 500


def failure(exc: BaseException) -> Response:
    return error(status_of(exc), *describe(exc))
