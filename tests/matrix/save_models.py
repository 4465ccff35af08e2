"""Save the matrix's models with this interpreter's MLflow; run in each version's virtualenv.

    python save_models.py OUT_DIR

Writes OUT_DIR/<flavor>/ (an MLflow model) and OUT_DIR/<flavor>/expected.json: the model's own
predictions, loaded back with this MLflow, for the rows in OUT_DIR/input.json.
"""

import importlib
import inspect
import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scaled_sum import ScaledSum  # noqa: E402

COLUMNS = ["a", "b", "c", "d"]


def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.RandomState(7)
    frame = pd.DataFrame(rng.rand(200, 4), columns=COLUMNS)
    target = ((frame.a + frame.b * 2 - frame.c) > 0.9).astype(int).to_numpy()
    return frame, target


def save(flavor: str, out: Path, frame: pd.DataFrame, target: np.ndarray) -> None:
    path = out / flavor
    shutil.rmtree(path, ignore_errors=True)  # what a failed earlier run left
    if flavor == "sklearn":
        from sklearn.ensemble import RandomForestClassifier
        model = RandomForestClassifier(n_estimators=10, random_state=0).fit(frame, target)
        save_model = importlib.import_module("mlflow.sklearn").save_model
        extra = ({"skops_trusted_types": ["sklearn.tree._tree.Tree"]}  # skops, MLflow >= 3.x
                 if "skops_trusted_types" in inspect.signature(save_model).parameters else {})
        save_model(model, str(path), input_example=frame.head(3),
                   signature=infer_signature(frame, model.predict(frame)), **extra)
    elif flavor == "lightgbm":
        import lightgbm
        model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame, target)
        importlib.import_module("mlflow.lightgbm").save_model(
            model, str(path), input_example=frame.head(3),
            signature=infer_signature(frame, model.predict(frame)))
    elif flavor == "xgboost":
        import xgboost
        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(frame, target)
        importlib.import_module("mlflow.xgboost").save_model(
            model, str(path), input_example=frame.head(3),
            signature=infer_signature(frame, model.predict(frame)))
    elif flavor == "pyfunc":
        weights = {"a": 1.5, "b": -2.0, "c": 0.25, "d": 4.0}
        with tempfile.TemporaryDirectory() as tmp:
            weights_file = Path(tmp) / "weights.json"
            weights_file.write_text(json.dumps(weights))
            mlflow.pyfunc.save_model(
                str(path), python_model=ScaledSum(), artifacts={"weights": str(weights_file)},
                code_paths=[str(HERE / "scaled_sum.py")], input_example=frame.head(3),
                signature=infer_signature(frame, frame.a * 1.0))
    loaded = mlflow.pyfunc.load_model(str(path))
    predictions = loaded.predict(frame.head(20))
    values = np.asarray(predictions).tolist()
    (path / "expected.json").write_text(json.dumps(values))


def main(out: Path, flavors: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame, target = data()
    (out / "input.json").write_text(json.dumps(
        {"dataframe_split": frame.head(20).to_dict(orient="split", index=False)}))
    for flavor in flavors:
        if not (out / flavor / "expected.json").is_file():
            save(flavor, out, frame, target)
    print(f"mlflow {mlflow.__version__}: saved {', '.join(flavors)} in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or ["sklearn", "lightgbm", "xgboost", "pyfunc"])
