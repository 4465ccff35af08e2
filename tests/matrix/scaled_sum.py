"""A custom pyfunc shipped with ``code_paths``: a weighted sum whose weights are an artifact."""

import json

import mlflow.pyfunc


class ScaledSum(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["weights"]) as fh:
            self.weights = json.load(fh)

    def predict(self, context, model_input, params=None):
        return sum(model_input[column] * weight for column, weight in self.weights.items())
