"""Cross-fitting: no subject is predicted by a model that saw it, and the predictions carry signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lse_panel.analysis.crossfit import cross_fit_predictions, fold_ids


def test_fold_ids_partition_and_are_reproducible():
    folds = fold_ids(103, n_splits=5, seed=3)
    assert folds.shape == (103,)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).min() >= 20
    np.testing.assert_array_equal(folds, fold_ids(103, n_splits=5, seed=3))
    assert not np.array_equal(folds, fold_ids(103, n_splits=5, seed=4))
    with pytest.raises(ValueError, match="at least 2"):
        fold_ids(10, n_splits=1)
    with pytest.raises(ValueError, match="cannot split"):
        fold_ids(3, n_splits=5)


def test_no_leakage_noise_target_is_unpredictable_out_of_fold():
    # More dimensions than subjects: a ridge fit nearly interpolates its training data, so a model
    # that had seen a subject would reproduce that subject's pure-noise target. Out of fold it cannot.
    rng = np.random.default_rng(0)
    n, d = 200, 600
    latents = rng.normal(size=(n, d)).astype(np.float32)
    noise = rng.normal(size=n)
    targets = pd.DataFrame({"noise": noise})
    in_sample = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(latents, noise).predict(latents)
    assert np.corrcoef(in_sample, noise)[0, 1] > 0.99  # the leak this test would catch
    pred = cross_fit_predictions(latents, targets, {"noise": "regression"}, n_splits=5, seed=1)["noise"]
    assert pred.dtype == np.float32 and pred.shape == (n,)
    assert abs(np.corrcoef(pred, noise)[0, 1]) < 0.3
    assert np.median(np.abs(pred - noise)) > 0.3  # no subject gets its own noise back


def test_each_fold_is_predicted_by_a_model_fitted_on_the_other_folds_only():
    rng = np.random.default_rng(1)
    n, d = 300, 8
    latents = rng.normal(size=(n, d))
    y = latents @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    folds = fold_ids(n, n_splits=4, seed=7)
    pred = cross_fit_predictions(latents, {"y": y}, {"y": "regression"}, n_splits=4, seed=7)["y"]
    base = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    for k in range(4):
        train, held = folds != k, folds == k
        expected = clone(base).fit(latents[train], y[train]).predict(latents[held])
        np.testing.assert_allclose(pred[held], expected, rtol=1e-5, atol=1e-5)
    # Changing a held-out subject's target cannot change its own prediction.
    y2 = y.copy()
    y2[0] += 1000.0
    pred2 = cross_fit_predictions(latents, {"y": y2}, {"y": "regression"}, n_splits=4, seed=7)["y"]
    assert pred2[0] == pred[0]
    assert not np.allclose(pred2[folds != folds[0]], pred[folds != folds[0]])


def test_predictions_carry_signal_and_handle_missing_targets():
    rng = np.random.default_rng(2)
    n, d = 2_000, 16
    latents = rng.normal(size=(n, d)).astype(np.float32)
    age = 50 + 5 * latents[:, 0] + rng.normal(size=n)
    lvef = 60 + 3 * latents[:, 1] + rng.normal(size=n)
    af = (latents[:, 2] + 0.5 * rng.normal(size=n) > 1).astype(np.int8)
    lvef[:100] = np.nan
    af[100:150] = -1  # missing code
    targets = pd.DataFrame({"age": age, "lvef": lvef, "af": af})
    tasks = {"age": "regression", "lvef": "regression", "af": "classification"}
    out = cross_fit_predictions(latents, targets, tasks, max_train=800)
    assert set(out) == set(tasks)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    assert r2_score(age, out["age"]) > 0.9
    ok = np.isfinite(lvef)
    assert r2_score(lvef[ok], out["lvef"][ok]) > 0.8
    labelled = af >= 0
    assert roc_auc_score(af[labelled], out["af"][labelled]) > 0.9
    assert ((out["af"] >= 0) & (out["af"] <= 1)).all()


def test_single_class_training_part_predicts_the_prevalence():
    rng = np.random.default_rng(3)
    latents = rng.normal(size=(50, 3))
    out = cross_fit_predictions(latents, {"rare": np.zeros(50, dtype=np.int8)}, {"rare": "classification"})
    np.testing.assert_array_equal(out["rare"], 0.0)


def test_crossfit_errors_name_the_problem():
    latents = np.zeros((20, 2))
    with pytest.raises(ValueError, match="not in targets"):
        cross_fit_predictions(latents, {"a": np.zeros(20)}, {"b": "regression"})
    with pytest.raises(ValueError, match="latents have 20 rows"):
        cross_fit_predictions(latents, {"a": np.zeros(19)}, {"a": "regression"})
    with pytest.raises(ValueError, match="must be 'regression' or 'classification'"):
        cross_fit_predictions(latents, {"a": np.zeros(20)}, {"a": "ordinal"})
    bad = latents.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        cross_fit_predictions(bad, {"a": np.zeros(20)}, {"a": "regression"})
    with pytest.raises(ValueError, match="folds has shape"):
        cross_fit_predictions(latents, {"a": np.zeros(20)}, {"a": "regression"}, folds=np.zeros(3))


def test_joint_fit_of_regressions_equals_separate_fits():
    # Regressions with the same missing-value pattern share one multi-output ridge: same numbers.
    rng = np.random.default_rng(4)
    latents = rng.normal(size=(400, 6))
    targets = {"a": latents[:, 0] + rng.normal(size=400), "b": latents[:, 1] + rng.normal(size=400)}
    tasks = {"a": "regression", "b": "regression"}
    joint = cross_fit_predictions(latents, targets, tasks, seed=2)
    for name in tasks:
        alone = cross_fit_predictions(latents, targets, {name: "regression"}, seed=2)[name]
        np.testing.assert_allclose(joint[name], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("missing_share", [0.1, 0.8])
def test_regressions_with_missing_values_equal_a_pipeline_on_the_valid_rows(missing_share: float):
    # Each fold's Gram matrix is shared; a target's missing rows are taken out of it (few) or
    # its valid rows summed directly (many missing): either way, the pipeline's numbers.
    rng = np.random.default_rng(5)
    n, d = 500, 7
    latents = rng.normal(loc=3.0, size=(n, d)) * rng.uniform(0.5, 4, size=d)
    y = latents @ rng.normal(size=d) + rng.normal(size=n)
    y[rng.random(n) < missing_share] = np.nan
    folds = fold_ids(n, n_splits=5, seed=1)
    pred = cross_fit_predictions(latents, {"y": y}, {"y": "regression"}, n_splits=5, seed=1, alpha=3.0)["y"]
    base = make_pipeline(StandardScaler(), Ridge(alpha=3.0))
    for k in range(5):
        train = (folds != k) & np.isfinite(y)
        expected = clone(base).fit(latents[train], y[train]).predict(latents[folds == k])
        np.testing.assert_allclose(pred[folds == k], expected, rtol=1e-5, atol=1e-4)


def test_classifications_fitted_together_match_scikit_learn_fold_by_fold():
    # The logistic regressions of a fold are optimised jointly; each must land on the optimum
    # scikit-learn finds for it alone (tightly converged), missing labels left out.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(8)
    n, d = 1_200, 5
    latents = rng.normal(loc=2.0, size=(n, d)) * rng.uniform(0.5, 3, size=d)
    targets = {f"c{j}": (latents @ rng.normal(size=d) + rng.logistic(size=n) > j).astype(float) for j in range(3)}
    targets["c1"][rng.random(n) < 0.2] = np.nan  # missing labels
    tasks = {name: "classification" for name in targets}
    pred = cross_fit_predictions(latents, targets, tasks, n_splits=4, seed=3, C=0.5)
    folds = fold_ids(n, n_splits=4, seed=3)
    for name, y in targets.items():
        for k in range(4):
            train = (folds != k) & np.isfinite(y)
            scaler = StandardScaler().fit(latents[folds != k])  # standardised over the fold's training rows
            model = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(scaler.transform(latents[train]), y[train])
            expected = model.predict_proba(scaler.transform(latents[folds == k]))[:, 1]
            np.testing.assert_allclose(pred[name][folds == k], expected, atol=2e-4)
