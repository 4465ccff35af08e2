"""Models the tests register or save, and the inputs they send: the iris demo, models from code,
a model that sleeps, one that streams, and the reference models both servers answer alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

# Models the tests serve on this host (in-process or as a process) need no requirements of their
# own; naming some skips MLflow's inference of them, a subprocess that loads the model (4 s a save).
HOST_ONLY = ["mlflow"]

IRIS_INPUT = {
    "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
    "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
}
IRIS_COLUMNS = {column: [row[i] for row in IRIS_INPUT["data"]]
                for i, column in enumerate(IRIS_INPUT["columns"])}


FAILING_MODEL_CODE = """
import mlflow


class FailingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("this model cannot be loaded")

    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(FailingModel())
"""


PREDICT_FAILS_CODE = """
import mlflow


class PredictFails(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("this version's predictions fail")


mlflow.models.set_model(PredictFails())
"""


def register_code_model(code: str, registered: str, like: str, tmp: Path,
                        signature: Any = None) -> str:
    """Register a models-from-code pyfunc with the requirements (and so the environment image)
    of the model ``like``; returns its ``models:/`` URI."""
    requirements = Path(mlflow.artifacts.download_artifacts(
        f"{like}/requirements.txt")).read_text().split()
    path = tmp / f"{registered}.py"
    path.write_text(code)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(path),
                                       pip_requirements=requirements, signature=signature,
                                       registered_model_name=registered)
    return f"models:/{registered}/{info.registered_model_version}"


SLEEPY_MODEL = """
import time
import mlflow


class Sleepy(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(float(model_input["x"].iloc[0]))
        return (model_input["x"] * 2).tolist()


mlflow.models.set_model(Sleepy())
"""


SHAPES = {
    "dataframe_split": ("application/json", '{"dataframe_split": {"columns": ["x"], '
                                            '"data": [[%s]]}}'),
    "dataframe_records": ("application/json", '{"dataframe_records": [{"x": %s}]}'),
    "inputs": ("application/json", '{"inputs": {"x": [%s]}}'),
    "instances": ("application/json", '{"instances": [{"x": %s}]}'),
    "csv": ("text/csv", "x\n%s\n"),
}


def save_sleepy(path: Path, tmp: Path, with_params: bool) -> Path:
    """The sleepy model; a params schema keeps it off the fast path (MLflow's path only)."""
    code = tmp / "sleepy.py"
    code.write_text(SLEEPY_MODEL)
    params = ParamSchema([ParamSpec("scale", "double", 1.0)]) if with_params else None
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]), params=params)
    mlflow.pyfunc.save_model(path, python_model=str(code), signature=signature,
                             pip_requirements=HOST_ONLY)
    return path


STREAMING_MODEL = """
import time
import mlflow


class Streamer(mlflow.pyfunc.PythonModel):
    \"\"\"Yields `count` chunks `delay` s apart; raises at chunk `fail_at`; sleeps `stall` s
    before chunk `stall_at`.\"\"\"

    def predict(self, context, model_input, params=None):
        return ["whole"]

    def predict_stream(self, context, model_input, params=None):
        params = params or {}
        for i in range(int(params.get("count", 5))):
            if i == int(params.get("fail_at", -1)):
                raise ValueError(f"failed at chunk {i}")
            if i == int(params.get("stall_at", -1)):
                time.sleep(float(params.get("stall", 3)))
            time.sleep(float(params.get("delay", 0.2)))
            yield {"index": i, "prompt": str(model_input.get("prompt", ""))[:20]}


mlflow.models.set_model(Streamer())
"""


STREAMING_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]),
    params=ParamSchema([ParamSpec("count", "long", 5), ParamSpec("delay", "double", 0.2),
                        ParamSpec("fail_at", "long", -1), ParamSpec("stall_at", "long", -1),
                        ParamSpec("stall", "double", 3.0)]))


def save_streamer(path: Path) -> Path:
    code = path.parent / "streamer.py"
    code.write_text(STREAMING_MODEL)
    mlflow.pyfunc.save_model(path, python_model=str(code), signature=STREAMING_SIGNATURE,
                             pip_requirements=HOST_ONLY)
    return path


class MixedModel(mlflow.pyfunc.PythonModel):
    """Strings, longs, doubles and booleans in; params change the answer."""

    def predict(self, context, model_input, params=None):
        params = params or {}
        scale = params.get("scale", 1.0)
        return pd.DataFrame({
            "score": model_input["amount"] * scale + model_input["count"],
            "label": model_input["city"].str.upper() + params.get("suffix", ""),
            "flag": ~model_input["active"],
        })


class TensorModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input).sum(axis=-1)


class LongDoubleModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return (model_input["a"] * 2 + model_input["b"]).to_numpy()


class EchoChat(mlflow.pyfunc.ChatModel):
    """MLflow 3's chat-style model: messages and chat params in, a chat completion out."""

    def predict(self, context, messages, params):
        from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage

        text = " | ".join(f"{m.role}:{m.content}" for m in messages)
        return ChatCompletionResponse(id="echo", created=0, model="echo", choices=[ChatChoice(
            index=0, message=ChatMessage(
                role="assistant",
                content=f"{text} t={params.temperature} max={params.max_tokens}"))])

    def predict_stream(self, context, messages, params):
        from mlflow.types.llm import ChatChoiceDelta, ChatChunkChoice, ChatCompletionChunk

        for word in (messages[-1].content or "").split():
            yield ChatCompletionChunk(id="echo", created=0, model="echo", choices=[
                ChatChunkChoice(index=0, delta=ChatChoiceDelta(role="assistant", content=word))])


def save_chat(path: Path) -> None:
    mlflow.pyfunc.save_model(path, python_model=EchoChat(), pip_requirements=HOST_ONLY)


def save_iris(path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(features, target), path,
                              input_example=features.head(2), pip_requirements=HOST_ONLY)


def save_mixed(path: Path) -> None:
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "city"), ColSpec("long", "count"),
                       ColSpec("double", "amount"), ColSpec("boolean", "active")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("suffix", "string", "")]),
    )
    mlflow.pyfunc.save_model(path, python_model=MixedModel(), signature=signature,
                             pip_requirements=HOST_ONLY)


def save_tensor(path: Path) -> None:
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))]))
    mlflow.pyfunc.save_model(path, python_model=TensorModel(), signature=signature,
                             pip_requirements=HOST_ONLY)


def save_long_double(path: Path) -> None:
    signature = ModelSignature(inputs=Schema([ColSpec("long", "a"), ColSpec("double", "b")]))
    mlflow.pyfunc.save_model(path, python_model=LongDoubleModel(), signature=signature,
                             pip_requirements=HOST_ONLY)


def _save_agent(kind: str) -> Any:
    def save(path: Path) -> None:
        from tests.helpers.agents import save_agent  # which imports HOST_ONLY from here

        save_agent(kind, path)

    return save


REFERENCE_MODELS = {"iris": save_iris, "mixed": save_mixed, "tensor": save_tensor,
                    "long_double": save_long_double, "chat": save_chat, "streamer": save_streamer,
                    "responses_agent": _save_agent("responses"),
                    "chat_agent": _save_agent("chat_agent")}


IRIS_COLS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


ROW = [5.1, 3.5, 1.4, 0.2]


MIXED_COLS = ["city", "count", "amount", "active"]
