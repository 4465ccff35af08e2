"""Train and register a small scikit-learn model, for ``make serve`` and the tests.

``python -m mlflow_docker_target.demo`` logs a LogisticRegression on the iris data set (shipped
with scikit-learn, so nothing is downloaded) to the current tracking URI, registers it, points
the alias ``champion`` at it and prints ``models:/<name>@champion``.
"""

from __future__ import annotations

import argparse

import mlflow
from mlflow.tracking import MlflowClient


def register_demo_model(name: str = "iris-demo", c: float = 1.0) -> str:
    """Log and register one version; ``c`` (inverse regularisation) changes its predictions."""
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    features = pd.DataFrame(features)
    model = LogisticRegression(C=c, max_iter=500).fit(features, target)
    with mlflow.start_run(run_name=f"{name}-C{c}"):
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(3),
                                        registered_model_name=name)
    version = info.registered_model_version
    MlflowClient().set_registered_model_alias(name, "champion", str(version))
    return f"models:/{name}/{version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="iris-demo")
    parser.add_argument("--if-missing", action="store_true",
                        help="register only when the model has no champion yet")
    args = parser.parse_args()
    if args.if_missing:
        try:
            MlflowClient().get_model_version_by_alias(args.name, "champion")
            print(f"models:/{args.name}@champion")
            return
        except mlflow.exceptions.MlflowException:
            pass
    register_demo_model(args.name)
    print(f"models:/{args.name}@champion")


if __name__ == "__main__":
    main()
