"""A shortcut for the commonest request, answering exactly as MLflow's own path would.

Most traffic to a tabular model is JSON ``dataframe_split`` or ``dataframe_records`` whose numeric
columns match the signature. MLflow's path spends ~2.4 ms on each such request in per-column
pandas casts and schema checks, whatever the row count. For those requests this module builds
the DataFrame that schema enforcement would produce (schema column order, ``double`` as float64,
``long`` as int64) and calls the model's predict function with it, then encodes the answer with
MLflow's own encoder.

For plain scikit-learn estimators (linear models, trees, ensembles and the like, not pipelines or
column transformers, which may select columns by name) it goes one step further: sklearn turns a
DataFrame into the same float64 array before computing, after checking that the column names
match those it was fitted with, so when they do (or it has none) it gets the array directly and
the ~0.6 ms of DataFrame validation per call is skipped, as is sklearn's scan for NaN and
infinity, which cannot occur in that array.

Anything else returns ``None`` and takes MLflow's path, so every error stays MLflow's own:
other content types, params, nulls, booleans, strings, nested values, missing or extra columns,
column types other than double and long, an ``index`` other than 0..n-1, signatures with
optional columns or params, and models whose signature comes from type hints. The differential
suite (tests/test_differential.py) checks that both paths answer alike.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import numpy as np
import orjson
import pandas as pd

log = logging.getLogger("serving_image")

JSON_TYPES = ("application/json", "application/json; charset=utf-8")
_DTYPES = {"double": np.float64, "long": np.int64}
# JSON literals whose values numpy would silently coerce (true -> 1.0). Two substring scans
# cost a third of one regular expression's over a 100-row body; null needs none (a None makes
# numpy's array an object one, which the fast path refuses), nor do NaN and Infinity (orjson
# refuses them as JSON): MLflow's path judges all of them.
_BOOLEANS = (b"true", b"false")
_PLAIN_ESTIMATORS = tuple(f"sklearn.{family}" for family in (
    "linear_model", "ensemble", "tree", "svm", "neighbors", "naive_bayes",
    "discriminant_analysis", "neural_network", "kernel_ridge", "gaussian_process", "dummy"))


def _flag(metadata: Any, name: str) -> bool:
    """A signature flag of MLflow's ``Model``; versions before type-hint signatures (< 2.20)
    lack the method, and their signatures cannot come from type hints."""
    method = getattr(metadata, name, None)
    return bool(method()) if method is not None else False


def _array_predict(model: Any, columns: tuple[str, ...]) -> Callable[[np.ndarray], Any] | None:
    """The estimator's own predict function, where an array in schema order is equivalent."""
    impl = getattr(model, "_model_impl", None)
    estimator = getattr(impl, "sklearn_model", None)
    function = getattr(model, "_predict_fn", None)
    if estimator is None or function is None:
        return None
    owner = getattr(function, "__self__", None)
    if owner is impl and getattr(function, "__func__", None) is getattr(type(impl), "predict",
                                                                       None):
        function = estimator.predict  # what MLflow's wrapper calls
    elif owner is not estimator:  # predict_proba and friends are the estimator's own
        return None
    if not type(estimator).__module__.startswith(_PLAIN_ESTIMATORS):
        return None
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if fitted_names is not None:
        if list(fitted_names) != list(columns):
            return None
        # True here (same names, same order), and emitting it costs time on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                category=UserWarning)
    from sklearn import config_context

    def predict(values: np.ndarray) -> Any:
        # FastPath.prepare gives only finite numbers (orjson refuses out-of-range ones, and the
        # NaN and Infinity literals go to MLflow's path), so sklearn's finiteness scan is moot.
        with config_context(assume_finite=True):
            return function(values)

    return predict


INLINE_BUDGET = 0.002  # seconds a prediction may hold the event loop (and /ping, /health)
INLINE_BODY = 64 * 1024  # bytes of JSON decoded on the event loop; larger bodies go to a thread


INLINE_ROWS = 4096  # the most rows measured, and so the most that may run there


def _cost(predict_array: Callable[[np.ndarray], Any], width: int) -> tuple[float, float] | None:
    """A plain estimator's measured cost: seconds per call, and per row beyond the first.

    The best of a few calls on 1 and on INLINE_ROWS rows of zeros, which any fitted estimator
    scores; ``None`` if it will not, or if one row already exceeds INLINE_BUDGET, and the model
    then always runs on a predict thread.
    """
    def best(rows: int, tries: int) -> float:
        values = np.zeros((rows, width))
        times = []
        for _ in range(tries):
            started = time.perf_counter()
            predict_array(values)
            times.append(time.perf_counter() - started)
        return min(times)

    try:
        one = best(1, 5)
        if one > INLINE_BUDGET:
            return None
        many = best(INLINE_ROWS, 3)
    except Exception:
        return None
    return one, max(0.0, (many - one) / (INLINE_ROWS - 1))


@dataclass(frozen=True)
class FastPath:
    columns: tuple[str, ...]
    kinds: tuple[str, ...]  # "double" or "long", per column
    predict: Callable[[pd.DataFrame], Any]
    predict_array: Callable[[np.ndarray], Any] | None = None
    cost: tuple[float, float] | None = None  # of predict_array, from _cost

    def cheap(self, rows: int) -> bool:
        """Whether predicting ``rows`` rows may run on the event loop: only for a plain
        scikit-learn estimator whose measured cost for that many rows (at most the INLINE_ROWS
        measured) is within INLINE_BUDGET.
        Any other model (a custom pyfunc may sleep, call out, or take seconds) never does."""
        return (self.cost is not None and rows <= INLINE_ROWS
                and self.cost[0] + self.cost[1] * rows <= INLINE_BUDGET)

    @classmethod
    def for_model(cls, model: Any) -> FastPath | None:
        """The fast path for ``model``, or ``None`` when its signature does not allow one.

        It leans on MLflow internals (``_predict_fn``, ``_is_signature_from_type_hint``, ...)
        that other MLflow versions may lack or change: any error here turns the fast path off,
        with a log line, and MLflow's own path serves every request.
        """
        try:
            return cls._for_model(model)
        except Exception as exc:
            log.warning("Fast path off (%s: %s); MLflow's own scoring path serves every "
                        "request.", type(exc).__name__, exc)
            return None

    @classmethod
    def _for_model(cls, model: Any) -> FastPath | None:
        metadata = model.metadata
        schema = metadata.get_input_schema()
        predict = model._predict_fn
        if (schema is None or predict is None or not schema.has_input_names()
                or schema.is_tensor_spec() or metadata.get_params_schema() is not None
                or _flag(metadata, "_is_signature_from_type_hint")
                or _flag(metadata, "_is_type_hint_from_example")):
            return None
        kinds = []
        for spec in schema.inputs:
            kind = getattr(getattr(spec, "type", None), "name", None)
            if kind not in _DTYPES or not getattr(spec, "required", False):
                return None
            kinds.append(kind)
        columns = tuple(schema.input_names())
        array = _array_predict(model, columns) if set(kinds) == {"double"} else None
        cost = _cost(array, len(columns)) if array is not None else None
        return cls(columns, tuple(kinds), predict, array, cost)

    def prepare(self, content_type: str | None,
                body: bytes) -> np.ndarray | pd.DataFrame | None:
        """What the model will be called with (an array or a DataFrame), or ``None``."""
        if content_type not in JSON_TYPES or _BOOLEANS[0] in body or _BOOLEANS[1] in body:
            return None
        try:
            payload = orjson.loads(body)  # correctly rounded, as json.loads; 5x faster
        except orjson.JSONDecodeError:  # also integers beyond 64 bits: MLflow's path decides
            return None
        if not isinstance(payload, dict) or len(payload) != 1:
            return None
        return self._input(self._rows(payload))

    def from_columns(self, columns: dict[str, list[Any]]) -> np.ndarray | pd.DataFrame | None:
        """What the model will be called with for columns of values (a V2 ``pd`` request),
        or ``None``."""
        if columns.keys() != set(self.columns):
            return None
        if self.predict_array is not None:  # all double: straight into one float64 array
            data = [columns[c] for c in self.columns]
            length = len(data[0])
            if not length or any(len(column) != length for column in data):
                return None
            try:
                values = np.fromiter(itertools.chain.from_iterable(data), np.float64,
                                     count=length * len(data))
            except (ValueError, TypeError):  # nulls, strings, nested values: MLflow's path
                return None
            if not np.isfinite(values).all():
                return None
            return values.reshape(len(data), length).T.copy()
        try:
            rows = [list(row) for row in zip(*(columns[c] for c in self.columns), strict=True)]
        except ValueError:  # columns of different lengths
            return None
        return self._input(rows)

    def _input(self, rows: list[list[Any]] | None) -> np.ndarray | pd.DataFrame | None:
        values = self._values(rows) if rows else None
        if rows is None or values is None:
            return None
        if self.predict_array is not None:
            return values.astype(np.float64, copy=False)
        return self._frame(values, rows)

    def predict_input(self, model_input: np.ndarray | pd.DataFrame) -> Any:
        """Predictions for what :meth:`prepare` returned (an array exactly when
        ``predict_array`` is set)."""
        if self.predict_array is not None:
            return self.predict_array(model_input)
        return self.predict(model_input)

    @staticmethod
    def encode(predictions: Any) -> tuple[str, int]:
        """MLflow's JSON for ``predictions``, and how many there are."""
        count = len(predictions) if hasattr(predictions, "__len__") else 1
        if isinstance(predictions, np.ndarray):  # the bytes MLflow's encoder writes, 5x faster
            return json.dumps({"predictions": predictions.tolist()}), count
        from mlflow.pyfunc.scoring_server import predictions_to_json

        out = StringIO()
        predictions_to_json(predictions, out)
        return out.getvalue(), count

    def _rows(self, payload: dict[str, Any]) -> list[list[Any]] | None:
        """Rows in schema column order, if the payload names exactly the schema's columns."""
        if "dataframe_split" in payload:
            split = payload["dataframe_split"]
            if not isinstance(split, dict) or not set(split) <= {"columns", "data", "index"}:
                return None
            columns, data = split.get("columns"), split.get("data")
            if not isinstance(columns, list) or not isinstance(data, list) or not data:
                return None
            if "index" in split and split["index"] != list(range(len(data))):
                return None
            if columns == list(self.columns):
                return data
            if sorted(columns) != sorted(self.columns) or len(set(columns)) != len(columns):
                return None
            order = [columns.index(name) for name in self.columns]
            try:
                return [[row[i] for i in order] for row in data]
            except (TypeError, IndexError, KeyError):
                return None
        if "dataframe_records" in payload:
            records = payload["dataframe_records"]
            if not isinstance(records, list) or not records:
                return None
            names = set(self.columns)
            if not all(isinstance(r, dict) and r.keys() == names for r in records):
                return None
            return [[record[name] for name in self.columns] for record in records]
        return None

    def _values(self, rows: list[list[Any]]) -> np.ndarray | None:
        """The rows as one numeric array, or ``None`` if any value needs MLflow."""
        try:
            values = np.array(rows)
        except (ValueError, TypeError):
            return None
        if values.ndim != 2 or values.shape[1] != len(self.columns):
            return None
        if values.dtype.kind not in "if":  # strings, objects (nulls, nesting, huge ints)
            return None
        return values

    def _frame(self, values: np.ndarray, rows: list[list[Any]]) -> pd.DataFrame | None:
        """The DataFrame schema enforcement would give, or ``None`` if a long needs MLflow."""
        if "long" not in self.kinds:
            return pd.DataFrame(values.astype(np.float64, copy=False), columns=self.columns)
        if "double" not in self.kinds and values.dtype.kind == "i":
            return pd.DataFrame(values, columns=self.columns)
        columns = {}
        for i, (name, kind) in enumerate(zip(self.columns, self.kinds, strict=True)):
            if kind == "double":
                columns[name] = values[:, i].astype(np.float64)
                continue
            column = [row[i] for row in rows]  # a float anywhere makes values float
            if not all(type(v) is int for v in column):
                return None
            columns[name] = np.array(column, dtype=np.int64)
        return pd.DataFrame(columns)
