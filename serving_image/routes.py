"""The server's routes, as data: a list of :class:`ServerRoute`, as Starlette's is of ``Route``.

Everything else about a route derives from its entry: the application mounts the entries
(``mounted``), auth leaves the ``open`` ones (the health probes) without a token
(``open_paths``) and refuses the ``openai`` ones in OpenAI's error shape (``openai_paths``),
metrics label every request with its route's ``metric`` (``metric_label``), the inference log
records the routes with a ``protocol`` (``protocol_of``), and the OpenAPI document takes each
entry's ``operation`` (``openapi_paths``). A route added to
the table is guarded, counted and documented without anyone remembering to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

Handler = Callable[[Request], Awaitable[Response]]
Operation = dict[str, Any] | Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ServerRoute:
    path: str  # Starlette's path syntax: /v2/models/{name}
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    operation: Operation | None = None  # its OpenAPI operation (a function: built when asked)
    open: bool = False  # answered without the bearer token: the health probes
    metric: str | None = None  # its label in the metrics, if not its path (several share one)
    openai: bool = False  # its errors take OpenAI's shape (auth's 401 too)
    protocol: str | None = None  # an inference protocol: its requests go to the inference log


def mounted(routes: Iterable[ServerRoute]) -> list[Route]:
    """Plain Starlette routes, matched in the table's order (FastAPI's per-request dependency
    solving and response handling cost more than a bare answer; the handlers read the request
    themselves)."""
    return [Route(r.path, r.handler, methods=list(r.methods)) for r in routes]


def open_paths(routes: Iterable[ServerRoute]) -> frozenset[str]:
    return frozenset(r.path for r in routes if r.open)


def openai_paths(routes: Iterable[ServerRoute]) -> frozenset[str]:
    return frozenset(r.path for r in routes if r.openai)


def metric_label(routes: Iterable[ServerRoute]) -> Callable[[str], str]:
    """The route label of a request path: a dict look-up for fixed paths (``/invocations``),
    the first matching template otherwise, ``other`` for paths outside the table."""
    table = list(routes)
    fixed = {r.path: r.metric or r.path for r in table if "{" not in r.path}
    templated = [(compile_path(r.path)[0], r.metric or r.path) for r in table if "{" in r.path]

    def label(path: str) -> str:
        found = fixed.get(path)
        if found is not None:
            return found
        return next((name for regex, name in templated if regex.match(path)), "other")

    return label


def protocol_of(routes: Iterable[ServerRoute]) -> Callable[[str, str], str | None]:
    """The inference protocol of a request (method, path), ``None`` for every other route."""
    table = [r for r in routes if r.protocol]
    fixed = {(m, r.path): r.protocol for r in table if "{" not in r.path for m in r.methods}
    templated = [(m, compile_path(r.path)[0], r.protocol) for r in table if "{" in r.path
                 for m in r.methods]

    def protocol(method: str, path: str) -> str | None:
        found = fixed.get((method, path))
        if found is not None:
            return found
        return next((name for m, regex, name in templated
                     if m == method and regex.match(path)), None)

    return protocol


def openapi_paths(routes: Iterable[ServerRoute]) -> dict[str, Any]:
    """The ``paths`` of the OpenAPI document: each documented route's operation."""
    paths: dict[str, Any] = {}
    for route in routes:
        if route.operation is not None:
            operation = route.operation() if callable(route.operation) else route.operation
            paths.setdefault(route.path, {}).update(
                {method.lower(): operation for method in route.methods})
    return paths
