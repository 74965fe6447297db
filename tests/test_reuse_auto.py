"""AutoReuser (`lw reuse --method auto`): every method scored by cross-validation on the user's labels.

Uses the synthetic regions of test_reuse: three Gaussian blobs in 5-D, each
with its own regression map and 3-class rule, one learnware per region.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression

from learnware_cli.errors import InputError
from learnware_cli.reuse import METHODS, AutoReuser, JobSelectorReuser, ReusableLearnware, evaluate
from learnware_cli.rkme import fit_rkme
from test_reuse import ThreeWay, TwoWay, class_rule, linear_target, region, two_region_user

ALL = ["single", "average", "job-selector", "ensemble-pruning", "feature-augment", "user-ensemble"]


class Counting:
    """A model that records the rows of every call (the expensive worker calls auto must not repeat)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[np.ndarray] = []

    def predict(self, X):
        self.calls.append(np.array(X))
        return self.inner.predict(X)

    def predict_proba(self, X):
        self.calls.append(np.array(X))
        return self.inner.predict_proba(X)

    @property
    def rows(self) -> int:
        return sum(len(c) for c in self.calls)


@pytest.fixture(scope="module")
def specs():
    rows = [region(r, 500, seed=r) for r in range(3)]
    return [fit_rkme(x, k=20) for x in rows], rows


def _linear(specs, weights=(1.0, 1.0, 1.0)):
    """Fresh counting LinearRegression learnwares, one per region."""
    spec_list, rows = specs
    lws = []
    for r in range(3):
        y = linear_target(r, rows[r]) + 0.1 * np.random.default_rng(10 + r).normal(size=len(rows[r]))
        model = Counting(LinearRegression().fit(rows[r], y))
        lws.append(ReusableLearnware(f"lin{r}", model, spec_list[r], "Regression", None, weights[r]))
    return lws


def test_auto_scores_every_method_and_picks_the_job_selector_for_a_two_region_user(specs):
    lws = _linear(specs)
    X_lab, y_lab = two_region_user(linear_target, 30, seed=800)
    X, y = two_region_user(linear_target, 200, seed=801)
    reuser = AutoReuser(lws).fit(X_lab, y_lab)
    assert list(reuser.cv_scores_) == ALL and reuser.skipped_ == {}
    assert reuser.metric_ == "mse" and reuser.n_folds_ == 5 and reuser.n_labeled_ == 60
    assert reuser.chosen_ == min(reuser.cv_scores_, key=reuser.cv_scores_.get) == "job-selector"
    assert "lowest cross-validated MSE" in reuser.reason_ and "60 labeled rows" in reuser.reason_
    assert isinstance(reuser.reuser_, JobSelectorReuser)
    # single and average are wrong on half the rows; routing gets both halves
    assert reuser.cv_scores_["job-selector"] < 0.1 * min(reuser.cv_scores_["single"], reuser.cv_scores_["average"])
    pred = reuser.predict(X)
    assert evaluate("Regression", y, pred)[1] < 1.0
    assert {"lin0", "lin1"} <= set(reuser.used_ids_)  # the learnwares that received rows


def test_models_answer_the_labeled_rows_once(specs):
    """Cross-validation runs on answers kept in memory: each learnware sees the labeled rows once,
    and after the choice only the new rows."""
    lws = _linear(specs)
    X_lab, y_lab = two_region_user(linear_target, 30, seed=810)
    X = region(2, 50, seed=811)
    for methods in (None, ["feature-augment"], ["user-ensemble", "ensemble-pruning"]):
        for lw in lws:
            lw.model.calls.clear()
        reuser = AutoReuser(lws, methods=methods).fit(X_lab, y_lab)
        for lw in lws:
            assert lw.model.rows == len(X_lab), (methods, reuser.chosen_, lw.id)
            np.testing.assert_array_equal(np.vstack(lw.model.calls), X_lab)
        reuser.predict(X)
        new_rows = sum(lw.model.rows for lw in lws) - 3 * len(X_lab)
        # the job selector routes each row once; feature augmentation and pruning's subset ask each of theirs
        assert new_rows == len(X) * (1 if reuser.chosen_ == "job-selector" else len(reuser.used_ids_)), reuser.chosen_


def test_auto_on_classification_reports_accuracy(specs):
    spec_list, rows = specs
    models = [LogisticRegression(max_iter=2000).fit(rows[r], class_rule(r, rows[r])) for r in range(3)]
    lws = [ReusableLearnware(f"clf{r}", models[r], spec_list[r], "Classification", 3) for r in range(3)]
    X_lab = region(0, 60, seed=820)
    X = region(0, 500, seed=821)
    reuser = AutoReuser(lws).fit(X_lab, class_rule(0, X_lab))
    assert reuser.metric_ == "accuracy" and list(reuser.cv_scores_) == ALL
    assert reuser.chosen_ == max(reuser.cv_scores_, key=reuser.cv_scores_.get)
    assert "highest cross-validated accuracy" in reuser.reason_
    pred = reuser.predict(X)
    assert pred.dtype.kind == "i"
    assert evaluate("Classification", class_rule(0, X), pred)[1] > 0.9


def test_auto_skips_combiners_that_would_mix_label_spaces():
    X_lab = region(0, 40, seed=830)
    reuser = AutoReuser([*TWO_LABEL_SPACES()]).fit(X_lab, class_rule(0, X_lab))
    assert set(reuser.skipped_) >= {"average", "user-ensemble", "job-selector"}
    assert "three: 3" in reuser.skipped_["average"] and "two: 2" in reuser.skipped_["average"]
    assert "average" not in reuser.cv_scores_ and "user-ensemble" not in reuser.cv_scores_
    assert reuser.cv_scores_[reuser.chosen_] == 1.0
    X = region(0, 100, seed=831)
    assert evaluate("Classification", class_rule(0, X), reuser.predict(X))[1] == 1.0


def TWO_LABEL_SPACES():
    return [
        ReusableLearnware("three", ThreeWay(), None, "Classification", 3),
        ReusableLearnware("two", TwoWay(), None, "Classification", 2),
    ]


@pytest.mark.parametrize("n_labeled", [0, 6])
def test_few_labels_fall_back_to_the_label_free_default(specs, n_labeled):
    lws = _linear(specs)
    X_lab, y_lab = two_region_user(linear_target, n_labeled // 2, seed=840)
    reuser = AutoReuser(lws)
    reuser.fit(X_lab, y_lab) if n_labeled else reuser.fit()
    assert reuser.chosen_ == "job-selector" and reuser.cv_scores_ == {} and reuser.n_folds_ == 0
    assert ("no labeled rows" if not n_labeled else f"only {n_labeled} labeled rows") in reuser.reason_
    assert all(lw.model.rows == 0 for lw in lws)  # nothing was scored, so nothing was asked
    assert reuser.predict(region(0, 10, seed=841)).shape == (10,)
    one = AutoReuser(lws[:1]).fit()
    assert one.chosen_ == "single" and one.used_ids_ == ["lin0"]


def test_methods_needing_two_learnwares_are_skipped_with_one(specs):
    lws = _linear(specs)[:1]
    X_lab, y_lab = two_region_user(linear_target, 20, seed=850)
    reuser = AutoReuser(lws).fit(X_lab, y_lab)
    assert list(reuser.cv_scores_) == ["single", "feature-augment", "user-ensemble"]
    assert set(reuser.skipped_) == {"average", "job-selector", "ensemble-pruning"}


def test_auto_is_a_scikit_learn_estimator(specs):
    reuser = AutoReuser(_linear(specs), methods=["single", "feature-augment"], cv=3)
    params = reuser.get_params()
    assert params["methods"] == ["single", "feature-augment"] and params["cv"] == 3
    assert clone(reuser).get_params()["cv"] == 3
    assert METHODS["auto"] is AutoReuser
    for bad in ({"methods": ["nope"]}, {"methods": []}, {"cv": 1}, {"min_labeled_rows": -1}):
        with pytest.raises(InputError):
            AutoReuser(_linear(specs), **bad).fit()
    with pytest.raises(InputError):
        AutoReuser(_linear(specs)).fit(None, np.zeros(3))
