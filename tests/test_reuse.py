"""Reusers against a synthetic market whose truth is known.

Three regions (Gaussian blobs in 5-D at different places) each have their own
regression function and their own 3-class rule; one learnware is trained per
region, in process, with its RKME fitted on that region's rows. Users are
drawn from chosen regions, so the right answer for every reuser is known.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from learnware_cli.errors import InputError, LwError
from learnware_cli.reuse import (
    METHODS,
    AveragingReuser,
    EnsemblePruningReuser,
    FeatureAugmentReuser,
    JobSelectorReuser,
    ReusableLearnware,
    ReuseError,
    SingleReuser,
    UserEnsembleReuser,
    evaluate,
    needs_labels,
    uses_labels,
)
from learnware_cli.rkme import fit_rkme

D = 5
CENTERS = np.array([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])
_LINEAR = np.random.default_rng(100).normal(size=(3, D)) * 2.0
_RULES = np.random.default_rng(101).normal(size=(3, D, 3))


def region(r: int, n: int, seed: int) -> np.ndarray:
    """n rows (n, 5) of region r."""
    return CENTERS[r] + np.random.default_rng(seed).normal(size=(n, D))


def linear_target(r: int, X: np.ndarray) -> np.ndarray:
    """Region r's regression truth: its own linear map (n,)."""
    return (X - CENTERS[r]) @ _LINEAR[r] + 3.0 * r


def hard_target(r: int, X: np.ndarray) -> np.ndarray:
    """A non-linear truth (n,) that 100 rows cannot teach a model but a learnware with 3000 rows knows."""
    Z = X - CENTERS[r]
    return 3 * np.sin(2 * Z[:, 0]) + 2 * np.cos(1.5 * Z[:, 1] * Z[:, 2]) + Z[:, 3] ** 2 - 2 * np.abs(Z[:, 4]) + 2 * r


def class_rule(r: int, X: np.ndarray) -> np.ndarray:
    """Region r's 3-class rule (n,): argmax of its own linear scores."""
    return np.argmax((X - CENTERS[r]) @ _RULES[r], axis=1)


def mse(y, pred) -> float:
    return evaluate("Regression", y, pred)[1]


def accuracy(y, pred) -> float:
    return evaluate("Classification", y, pred)[1]


# -- stand-in models --------------------------------------------------------


class Broken:
    """A model whose worker has died: every call raises (after ``ok_calls`` successful ones)."""

    def __init__(self, inner=None, ok_calls: int = 0):
        self.inner, self.ok_calls, self.calls = inner, ok_calls, 0

    def _tick(self):
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("worker timed out")

    def predict(self, X):
        self._tick()
        return self.inner.predict(X)

    def predict_proba(self, X):
        self._tick()
        return self.inner.predict_proba(X)


class Noise:
    """Pure noise, deterministic per input: regression values or class labels unrelated to X."""

    def __init__(self, n_classes=None):
        self.n_classes = n_classes

    def predict(self, X):
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(X).tobytes()))
        if self.n_classes:
            return rng.integers(0, self.n_classes, len(X))
        return rng.normal(0.0, 10.0, len(X))


class Fixed:
    """Every row gets the same class probabilities; ``hide_proba`` makes it a label-only model."""

    def __init__(self, proba, hide_proba=False):
        self.proba, self.hide_proba = np.asarray(proba, dtype=float), hide_proba

    def predict(self, X):
        return np.full(len(X), int(np.argmax(self.proba)))

    def predict_proba(self, X):
        if self.hide_proba:
            raise NotImplementedError("no probabilities")
        return np.tile(self.proba, (len(X), 1))


# -- the market ---------------------------------------------------------------


@pytest.fixture(scope="module")
def specs():
    """RKME (k=20) of 500 rows per region, and those rows."""
    rows = [region(r, 500, seed=r) for r in range(3)]
    return [fit_rkme(x, k=20) for x in rows], rows


@pytest.fixture(scope="module")
def linear_lws(specs):
    """One LinearRegression learnware per region, knowing only its own region's map."""
    spec_list, rows = specs
    lws = []
    for r in range(3):
        y = linear_target(r, rows[r]) + 0.1 * np.random.default_rng(10 + r).normal(size=len(rows[r]))
        lws.append(ReusableLearnware(f"lin{r}", LinearRegression().fit(rows[r], y), spec_list[r], "Regression"))
    return lws


@pytest.fixture(scope="module")
def class_lws(specs):
    """One LogisticRegression learnware (3 classes, with predict_proba) per region."""
    spec_list, rows = specs
    models = [LogisticRegression(max_iter=2000).fit(rows[r], class_rule(r, rows[r])) for r in range(3)]
    return [ReusableLearnware(f"clf{r}", models[r], spec_list[r], "Classification", 3) for r in range(3)]


@pytest.fixture(scope="module")
def hard_lws():
    """Gradient-boosting learnwares trained on 3000 rows of the non-linear truth of regions 0 and 1."""
    lws = []
    for r in range(2):
        X = region(r, 3000, seed=20 + r)
        y = hard_target(r, X) + 0.1 * np.random.default_rng(30 + r).normal(size=len(X))
        model = HistGradientBoostingRegressor(max_iter=300, random_state=0).fit(X, y)
        lws.append(ReusableLearnware(f"hard{r}", model, None, "Regression"))
    return lws


def two_region_user(target, n_per_region: int, seed: int):
    """A user drawn 50/50 from regions 0 and 1 -> X (2n, 5), y (2n,)."""
    X = np.vstack([region(0, n_per_region, seed), region(1, n_per_region, seed + 1)])
    y = np.concatenate([target(0, X[:n_per_region]), target(1, X[n_per_region:])])
    return X, y


# -- job selector ---------------------------------------------------------------


def test_job_selector_beats_every_single_learnware_on_a_two_region_user(linear_lws):
    X, y = two_region_user(linear_target, 300, seed=200)
    reuser = JobSelectorReuser(linear_lws).fit()
    pred = reuser.predict(X)
    alone = [mse(y, lw.model.predict(X)) for lw in linear_lws]
    # Each learnware alone is wrong on (at least) half the rows; routing makes every row right.
    assert min(alone) > 5.0
    assert mse(y, pred) < 0.05 * min(alone)
    truth = np.repeat([0, 1], 300)
    assert np.mean(reuser.route(X) == truth) > 0.97
    assert reuser.failures_ == []


def test_job_selector_follows_the_user_mixture_weights(specs, linear_lws):
    X, y = two_region_user(linear_target, 300, seed=210)
    user_spec = fit_rkme(X, k=20)
    reuser = JobSelectorReuser(linear_lws, user_spec=user_spec, herd_rows=600, min_herd_rows=40).fit()
    # The user has no region-2 rows, so region 2 gets only the floor of herded rows.
    assert reuser.herd_counts_["lin2"] == 40
    assert min(reuser.herd_counts_["lin0"], reuser.herd_counts_["lin1"]) > 200
    assert mse(y, reuser.predict(X)) < 1.0


def test_job_selector_with_one_learnware_routes_everything_to_it(linear_lws):
    X, _ = two_region_user(linear_target, 50, seed=220)
    reuser = JobSelectorReuser(linear_lws[:1]).fit(X)
    np.testing.assert_allclose(reuser.predict(X), linear_lws[0].model.predict(X))


# -- user labels: feature augmentation and user ensemble ----------------------


def test_feature_augment_and_user_ensemble_beat_a_model_on_the_labels_alone(hard_lws):
    X_lab = region(0, 100, seed=300)
    y_lab = hard_target(0, X_lab) + 0.1 * np.random.default_rng(301).normal(size=100)
    X_test = region(0, 2000, seed=302)
    y_test = hard_target(0, X_test)
    baselines = {
        "ridge": Ridge(),
        "forest": RandomForestRegressor(n_estimators=200, random_state=0),
        "boosting": HistGradientBoostingRegressor(random_state=0),
    }
    best_alone = min(mse(y_test, m.fit(X_lab, y_lab).predict(X_test)) for m in baselines.values())
    fa = FeatureAugmentReuser(hard_lws).fit(X_lab, y_lab)
    ue = UserEnsembleReuser(hard_lws).fit(X_lab, y_lab)
    assert mse(y_test, fa.predict(X_test)) < 0.3 * best_alone
    assert mse(y_test, ue.predict(X_test)) < 0.3 * best_alone
    # The validation split puts most weight on the learnware that knows region 0.
    assert ue.used_ids_ == ["hard0", "hard1"] and len(ue.weights_) == 3  # then the user model's weight
    assert ue.weights_[0] > 0.5


def test_label_methods_on_classification(class_lws):
    X_lab = region(0, 100, seed=310)
    y_lab = class_rule(0, X_lab)
    X_test = region(0, 1000, seed=311)
    y_test = class_rule(0, X_test)
    alone = accuracy(y_test, LogisticRegression(max_iter=2000).fit(X_lab, y_lab).predict(X_test))
    learnware = accuracy(y_test, class_lws[0].model.predict(X_test))
    assert learnware > alone + 0.03  # 500 rows beat 100
    for reuser in (FeatureAugmentReuser(class_lws), UserEnsembleReuser(class_lws), EnsemblePruningReuser(class_lws)):
        pred = reuser.fit(X_lab, y_lab).predict(X_test)
        assert pred.dtype.kind == "i"
        assert accuracy(y_test, pred) > alone + 0.03, type(reuser).__name__


# -- averaging --------------------------------------------------------------------


class WorkerLike(Fixed):
    """Like the market's ModelWorker: says in info() that it has no predict_proba, whose call would fail."""

    def info(self):
        return {"has_predict_proba": False}

    def predict_proba(self, X):
        raise RuntimeError("model has no predict_proba")


def _fixed_lws(hide_c=False, weights=(1.0, 1.0, 1.0)):
    models = [Fixed([0.9, 0.1]), Fixed([0.4, 0.6]), Fixed([0.4, 0.6], hide_proba=hide_c)]
    return [ReusableLearnware(n, m, None, "Classification", 2, w) for n, m, w in zip("ABC", models, weights)]


def test_averaging_classification_uses_probabilities_when_all_have_them():
    X = np.zeros((4, D))
    # Mean probabilities (0.567, 0.433) pick class 0 although two of three models say 1.
    pred = AveragingReuser(_fixed_lws()).fit().predict(X)
    np.testing.assert_array_equal(pred, [0, 0, 0, 0])
    assert pred.dtype.kind == "i"


def test_averaging_classification_falls_back_to_a_vote_without_probabilities():
    X = np.zeros((4, D))
    reuser = AveragingReuser(_fixed_lws(hide_c=True)).fit()
    np.testing.assert_array_equal(reuser.predict(X), [1, 1, 1, 1])  # 2 votes to 1
    assert reuser.failures_ == []  # a model without predict_proba is not a failure
    declared = _fixed_lws()
    declared[2].model = WorkerLike([0.4, 0.6])
    reuser = AveragingReuser(declared).fit()
    np.testing.assert_array_equal(reuser.predict(X), [1, 1, 1, 1])
    assert reuser.failures_ == []
    weighted = AveragingReuser(_fixed_lws(hide_c=True, weights=(3.0, 1.0, 1.0)), use_weights=True).fit()
    np.testing.assert_array_equal(weighted.predict(X), [0, 0, 0, 0])  # 3 against 2


def test_averaging_regression_is_the_weighted_mean(linear_lws):
    X, _ = two_region_user(linear_target, 20, seed=400)
    outs = np.stack([lw.model.predict(X) for lw in linear_lws])
    np.testing.assert_allclose(AveragingReuser(linear_lws).fit().predict(X), outs.mean(axis=0))
    lws = [ReusableLearnware(lw.id, lw.model, lw.spec, lw.task, None, w) for lw, w in zip(linear_lws, (1, 3, 0))]
    np.testing.assert_allclose(AveragingReuser(lws, use_weights=True).fit().predict(X), 0.25 * outs[0] + 0.75 * outs[1])


# -- ensemble pruning -----------------------------------------------------------


def test_ensemble_pruning_drops_a_pure_noise_learnware(specs, linear_lws):
    _, rows = specs
    X_other = region(0, 300, seed=500)
    second = LinearRegression().fit(X_other, linear_target(0, X_other) + np.random.default_rng(501).normal(size=300))
    lws = [
        ReusableLearnware("noise", Noise(), None, "Regression"),
        linear_lws[0],
        ReusableLearnware("lin0-b", second, None, "Regression"),
    ]
    X_lab, X_test = region(0, 100, seed=502), region(0, 1000, seed=503)
    reuser = EnsemblePruningReuser(lws).fit(X_lab, linear_target(0, X_lab))
    assert "noise" not in reuser.used_ids_
    pruned = mse(linear_target(0, X_test), reuser.predict(X_test))
    everything = mse(linear_target(0, X_test), AveragingReuser(lws).fit().predict(X_test))
    assert pruned < 0.05 * everything


def test_ensemble_pruning_drops_a_noise_classifier_and_searches_greedily_beyond_the_limit(class_lws):
    lws = [ReusableLearnware("noise", Noise(3), None, "Classification", 3), class_lws[0], class_lws[1]]
    X_lab = region(0, 100, seed=510)
    y_lab = class_rule(0, X_lab)
    for limit in (10, 1):  # exhaustive, then greedy forward selection
        reuser = EnsemblePruningReuser(lws, max_exhaustive=limit).fit(X_lab, y_lab)
        assert reuser.used_ids_ == ["clf0"]


# -- failures -------------------------------------------------------------------


def _fit_predict(method: str, lws, X, y, **params):
    reuser = METHODS[method](lws, **params)
    reuser.fit(X, y) if uses_labels(method) else reuser.fit()
    return reuser, reuser.predict(X)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_failing_learnware_is_reported_and_left_out(method, linear_lws):
    broken = ReusableLearnware("broken", Broken(linear_lws[1].model), linear_lws[1].spec, "Regression")
    lws = [broken, linear_lws[0], linear_lws[1]]  # the broken one is ranked first
    X, y = two_region_user(linear_target, 60, seed=600)
    reuser, pred = _fit_predict(method, lws, X, y)
    assert reuser.failures_ == [("broken", "RuntimeError: worker timed out")]
    assert pred.shape == (120,) and np.all(np.isfinite(pred))
    if method == "single":
        np.testing.assert_allclose(pred, linear_lws[0].model.predict(X))  # fell back to the next-ranked
    if method == "job-selector":
        assert mse(y, pred) < 1.0  # region-1 rows were re-routed to lin1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_all_learnwares_failing_raises_reuse_error(method, linear_lws):
    lws = [ReusableLearnware(f"dead{r}", Broken(), linear_lws[r].spec, "Regression") for r in range(2)]
    X, y = two_region_user(linear_target, 30, seed=610)
    with pytest.raises(ReuseError) as info:
        _fit_predict(method, lws, X, y)
    assert "dead0: RuntimeError: worker timed out" in str(info.value)
    assert "dead1" in str(info.value)
    assert isinstance(info.value, LwError) and info.value.exit_code == 2


def test_a_learnware_failing_mid_prediction_is_dropped_from_every_row(class_lws):
    flaky = ReusableLearnware("flaky", Broken(class_lws[1].model, ok_calls=1), None, "Classification", 3)
    X = region(0, 230, seed=620)
    seen = []
    reuser = AveragingReuser([class_lws[0], flaky], batch_size=50, progress=lambda *report: seen.append(report)).fit()
    pred = reuser.predict(X)
    # Its first batch was answered, but a half-averaged result would be inconsistent: all rows come from clf0.
    np.testing.assert_array_equal(pred, class_lws[0].model.predict(X))
    assert reuser.failures_ == [("flaky", "RuntimeError: worker timed out")]
    assert reuser.used_ids_ == ["clf0"]
    assert seen == [(50, 230), (100, 230), (150, 230), (200, 230), (230, 230)]


# -- registry and helpers --------------------------------------------------------


def test_registry_and_evaluate():
    assert set(METHODS) == {"single", "average", "job-selector", "ensemble-pruning", "feature-augment", "user-ensemble", "auto"}
    assert [m for m in METHODS if needs_labels(m)] == ["ensemble-pruning", "feature-augment", "user-ensemble"]
    assert [m for m in METHODS if uses_labels(m)] == ["ensemble-pruning", "feature-augment", "user-ensemble", "auto"]
    with pytest.raises(InputError):
        needs_labels("nope")
    assert evaluate("Classification", [0, 1, 1, 2], [0, 1, 2, 2]) == ("accuracy", 0.75)
    assert evaluate("regression", [0.0, 2.0], [1.0, 2.0]) == ("mse", 0.5)


def test_bad_inputs_are_input_errors(linear_lws, class_lws):
    with pytest.raises(InputError):
        SingleReuser([]).fit()
    with pytest.raises(InputError):
        AveragingReuser([linear_lws[0], class_lws[0]]).fit()  # mixed tasks
    with pytest.raises(InputError):
        FeatureAugmentReuser(linear_lws).fit(np.zeros((5, D)), None)  # labels needed
    with pytest.raises(InputError):
        ReusableLearnware("x", None, None, "clustering")


def test_a_weight_must_be_finite_and_not_negative():
    for bad in (-0.1, float("nan"), float("inf"), "heavy"):
        with pytest.raises(InputError, match="weight"):
            ReusableLearnware("x", None, None, "Regression", weight=bad)


# -- one fitted state: used_ids_, and no prediction before fit -----------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_predict_before_fit_is_not_fitted_error(method, linear_lws):
    from sklearn.exceptions import NotFittedError

    calls = Broken(linear_lws[0].model, ok_calls=10**6)
    lws = [ReusableLearnware("lin0", calls, linear_lws[0].spec, "Regression"), linear_lws[1]]
    with pytest.raises(NotFittedError):
        METHODS[method](lws).predict(region(0, 10, seed=700))
    assert calls.calls == 0  # it did not fit itself, nor call a model


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_reuser_names_what_it_used_in_used_ids(method, linear_lws):
    X, y = two_region_user(linear_target, 40, seed=710)
    reuser = METHODS[method](linear_lws)
    reuser.fit(X, y) if uses_labels(method) else reuser.fit()
    after_fit = list(reuser.used_ids_)
    assert after_fit and set(after_fit) <= {"lin0", "lin1", "lin2"}, after_fit
    reuser.predict(X)
    assert reuser.used_ids_ and set(reuser.used_ids_) <= set(after_fit)
    assert all(isinstance(i, str) for i in reuser.used_ids_)
    for old in ("used_", "selected_ids_", "component_ids_", "route_ids_", "routes_", "components_", "selected_"):
        assert not hasattr(reuser, old), old
    assert "Attributes" in type(reuser).__doc__ and "used_ids_" in type(reuser).__doc__


def test_used_ids_follow_the_fallbacks(linear_lws):
    X, _ = two_region_user(linear_target, 20, seed=720)
    broken = ReusableLearnware("broken", Broken(), linear_lws[1].spec, "Regression")
    single = SingleReuser([broken, linear_lws[0]]).fit()
    assert single.used_ids_ == ["broken"]
    single.predict(X)
    assert single.used_ids_ == ["lin0"]
    average = AveragingReuser([linear_lws[0], broken, linear_lws[2]]).fit()
    assert average.used_ids_ == ["lin0", "broken", "lin2"]
    average.predict(X)
    assert average.used_ids_ == ["lin0", "lin2"]


def test_a_failed_refit_leaves_the_reuser_unfitted(linear_lws, class_lws):
    from sklearn.exceptions import NotFittedError

    reuser = AveragingReuser(linear_lws).fit()
    reuser.learnwares = [linear_lws[0], class_lws[0]]  # mixed tasks
    with pytest.raises(InputError):
        reuser.fit()
    with pytest.raises(NotFittedError):
        reuser.predict(np.zeros((2, D)))


# -- mixture weights: weight 0 means "not part of the mixture" ------------------


def _with_weights(lws, weights):
    return [ReusableLearnware(lw.id, lw.model, lw.spec, lw.task, lw.n_classes, w) for lw, w in zip(lws, weights)]


def test_single_skips_a_zero_weight_top_learnware(linear_lws):
    X, _ = two_region_user(linear_target, 20, seed=730)
    counted = Broken(linear_lws[0].model, ok_calls=10**6)
    lws = _with_weights([ReusableLearnware("lin0", counted, None, "Regression"), linear_lws[1]], (0.0, 1.0))
    reuser = SingleReuser(lws).fit()
    np.testing.assert_allclose(reuser.predict(X), linear_lws[1].model.predict(X))
    assert reuser.used_ids_ == ["lin1"] and counted.calls == 0
    # every weight 0 says nothing: the ranking decides again
    assert SingleReuser(_with_weights(linear_lws, (0, 0, 0))).fit().used_ids_ == ["lin0"]


def test_average_gives_a_zero_weight_learnware_no_share(linear_lws):
    X, _ = two_region_user(linear_target, 20, seed=740)
    outs = [lw.model.predict(X) for lw in linear_lws]
    lws = _with_weights(linear_lws, (0.5, 0.0, 0.5))
    for use_weights in (False, True):
        reuser = AveragingReuser(lws, use_weights=use_weights).fit()
        np.testing.assert_allclose(reuser.predict(X), (outs[0] + outs[2]) / 2)
        assert reuser.used_ids_ == ["lin0", "lin2"]


def test_job_selector_routes_no_rows_to_a_zero_weight_learnware(linear_lws):
    X, y = two_region_user(linear_target, 100, seed=750)
    # lin1 knows the region of half the rows, but the mixture gave it weight 0: the reuser must respect that
    reuser = JobSelectorReuser(_with_weights(linear_lws, (0.7, 0.0, 0.3))).fit()
    assert set(reuser.herd_counts_) == {"lin0", "lin2"}
    assert not np.isin(reuser.route(X), [1]).any()
    reuser.predict(X)
    assert "lin1" not in reuser.used_ids_


@pytest.mark.parametrize("method", ["ensemble-pruning", "feature-augment", "user-ensemble", "auto"])
def test_label_methods_leave_zero_weight_learnwares_out(method, linear_lws):
    X, y = two_region_user(linear_target, 40, seed=760)
    reuser = METHODS[method](_with_weights(linear_lws, (1.0, 0.0, 1.0))).fit(X, y)
    reuser.predict(X)
    assert "lin1" not in reuser.used_ids_


# -- classifiers with different numbers of classes ------------------------------


class ThreeWay:
    """A perfect 3-class model of region 0's rule."""

    def predict(self, X):
        return class_rule(0, X)

    def predict_proba(self, X):
        return np.eye(3)[class_rule(0, X)]


class TwoWay:
    """A 2-class model (it knows another task) that is confident about class 1."""

    def predict(self, X):
        return np.ones(len(X), dtype=np.int64)

    def predict_proba(self, X):
        return np.tile([0.0, 1.0], (len(X), 1))


def _mixed_class_counts():
    return [
        ReusableLearnware("three", ThreeWay(), None, "Classification", 3),
        ReusableLearnware("two", TwoWay(), None, "Classification", 2),
    ]


@pytest.mark.parametrize("method", ["average", "user-ensemble"])
def test_combiners_refuse_classifiers_with_different_class_counts(method):
    X = region(0, 60, seed=770)
    reuser = METHODS[method](_mixed_class_counts())
    with pytest.raises(InputError) as info:
        reuser.fit(X, class_rule(0, X)) if uses_labels(method) else reuser.fit()
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "three: 3" in message and "two: 2" in message and method in message


def test_other_reusers_never_mix_label_spaces():
    X = region(0, 200, seed=780)
    y = class_rule(0, X)
    lws = _mixed_class_counts()
    pruning = EnsemblePruningReuser(lws).fit(X[:100], y[:100])
    assert pruning.used_ids_ == ["three"]  # the subset {three, two} is never formed
    assert accuracy(y[100:], pruning.predict(X[100:])) == 1.0
    augmented = FeatureAugmentReuser(lws).fit(X[:100], y[:100])  # each gives its own columns: fine
    assert accuracy(y[100:], augmented.predict(X[100:])) > 0.95
    assert accuracy(y, SingleReuser(lws).fit().predict(X)) == 1.0
