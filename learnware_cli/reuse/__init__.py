"""Reusing learnwares on a user's data: scikit-learn-style reusers and a registry of them.

Each reuser takes the ranked ``learnwares`` (``ReusableLearnware``) in its
constructor; ``fit(X, y)`` then ``predict(X)``. Methods that need the user's
labels say so through ``needs_labels``. Importing this package does not
import JAX (only the job selector's fit does).
"""

from __future__ import annotations

from learnware_cli.errors import InputError
from learnware_cli.reuse.base import (
    CLASSIFICATION,
    REGRESSION,
    TASKS,
    BaseReuser,
    ModelOutput,
    ReusableLearnware,
    ReuseError,
)
from learnware_cli.reuse.combine import average_outputs, evaluate
from learnware_cli.reuse.feature_augment import FeatureAugmentReuser
from learnware_cli.reuse.job_selector import JobSelectorReuser
from learnware_cli.reuse.pruning import EnsemblePruningReuser
from learnware_cli.reuse.simple import AveragingReuser, SingleReuser
from learnware_cli.reuse.user_ensemble import UserEnsembleReuser

METHODS: dict[str, type[BaseReuser]] = {
    "single": SingleReuser,
    "average": AveragingReuser,
    "job-selector": JobSelectorReuser,
    "ensemble-pruning": EnsemblePruningReuser,
    "feature-augment": FeatureAugmentReuser,
    "user-ensemble": UserEnsembleReuser,
}


def get_method(method: str) -> type[BaseReuser]:
    """The reuser class registered under ``method``; InputError naming the choices otherwise."""
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise InputError(f"unknown reuse method {method!r} (choose from {', '.join(METHODS)})") from None


def needs_labels(method: str) -> bool:
    """Whether ``method`` must be fitted on labeled user rows."""
    return get_method(method).needs_labels


__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "TASKS",
    "METHODS",
    "AveragingReuser",
    "BaseReuser",
    "EnsemblePruningReuser",
    "FeatureAugmentReuser",
    "JobSelectorReuser",
    "ModelOutput",
    "ReusableLearnware",
    "ReuseError",
    "SingleReuser",
    "UserEnsembleReuser",
    "average_outputs",
    "evaluate",
    "get_method",
    "needs_labels",
]
