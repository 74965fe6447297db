"""A learnware wrapping a fitted scikit-learn estimator (written by `lw pack`).

Loadable by the reference `learnware` package and by the lw market worker.
Classifiers predict class indices 0..C-1 (positions in the estimator's
classes_, listed in semantic_specification.json Output.Description) and
offer predict_proba with one column per class; regressors predict their
output columns.
"""

import os

import joblib
import numpy as np

from learnware.model import BaseModel


class SklearnLearnware(BaseModel):
    def __init__(self, input_shape=(1,), output_shape=(1,), model_file="model.joblib"):
        super().__init__(input_shape=tuple(input_shape), output_shape=tuple(output_shape))
        here = os.path.dirname(os.path.abspath(__file__))
        self.model = joblib.load(os.path.join(here, model_file))
        self.classes = getattr(self.model, "classes_", None)
        if self.classes is not None and hasattr(self.model, "predict_proba"):
            self.predict_proba = self._predict_proba

    def fit(self, X, y):
        self.model.fit(np.asarray(X), np.asarray(y))

    def predict(self, X):
        pred = self.model.predict(np.asarray(X))
        if self.classes is not None:
            return np.searchsorted(self.classes, pred).astype(np.int64)
        return np.asarray(pred, dtype=np.float64)

    def _predict_proba(self, X):
        return np.asarray(self.model.predict_proba(np.asarray(X)), dtype=np.float64)

    def finetune(self, X, y):
        pass
