"""Reusing learnwares on a user's data: scikit-learn-style reusers and a registry of them.

Each reuser takes the ranked ``learnwares`` (``ReusableLearnware``) in its
constructor; ``fit(X, y)`` (``fit()`` for the label-free ones) then
``predict(X)``; predict before fit raises scikit-learn's ``NotFittedError``.
Every fitted reuser names the learnwares its predictions come from in
``used_ids_`` and those it left out in ``failures_``; each class's docstring
lists its other attributes. Methods that need the user's labels say so
through ``needs_labels``, those that learn from them when given through
``uses_labels``. ``AutoReuser`` ("auto") scores the others by cross-validation
on the labeled rows and uses the best. Importing this package does not
import JAX (only the job selector's fit does).
"""

from __future__ import annotations

from learnware_cli.errors import InputError
from learnware_cli.reuse.auto import CANDIDATES, AutoReuser
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

METHODS: dict[str, type[BaseReuser]] = {**CANDIDATES, "auto": AutoReuser}


def get_method(method: str) -> type[BaseReuser]:
    """The reuser class registered under ``method``; InputError naming the choices otherwise."""
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise InputError(f"unknown reuse method {method!r} (choose from {', '.join(METHODS)})") from None


def needs_labels(method: str) -> bool:
    """Whether ``method`` must be fitted on labeled user rows."""
    return get_method(method).needs_labels


def uses_labels(method: str) -> bool:
    """Whether ``method`` learns from labeled user rows when they are given."""
    return get_method(method).uses_labels


__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "TASKS",
    "METHODS",
    "AutoReuser",
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
    "uses_labels",
]
