"""find_failures on a cohort: rules that re-select their members, every latent side by side, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.conditions import parse_condition
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.slices import find_failures, slice_members
from lse_panel.testing import tiny_cohort


def _with_failure(rule: str, *, latent: str = "ecg", target: str = "lvef", n: int = 6_000) -> tuple[Cohort, np.ndarray]:
    """A tiny cohort whose ``latent`` predictions of ``target`` are corrupted where ``rule`` holds."""
    cohort = tiny_cohort(n, seed=3)
    planted = evaluate(parse_condition(rule, cohort.phenotype_specs), cohort.phenotype_columns, cohort.phenotype_specs)
    pred = cohort.predictions[latent][target].copy()
    pred[planted] += np.random.default_rng(0).normal(0, 15, planted.sum()).astype(np.float32)
    cohort.predictions[latent] = {**cohort.predictions[latent], target: pred}
    return cohort, planted


def test_planted_failure_is_found_and_its_rule_reselects_it() -> None:
    rule = 'age >= 70 and sex == "female"'
    cohort, planted = _with_failure(rule)
    found = find_failures(cohort, "lvef", latent="ecg", projections=None)
    top = found.iloc[0]
    assert top["rule"] == rule and top["latent"] == "ecg"
    assert np.array_equal(slice_members(cohort, top), planted)
    assert found.attrs["target"] == "lvef"
    assert "lvef" not in " ".join(found["rule"])  # the target is not a candidate by default
    assert top["mae_ecg"] > 2 * top["mae_mri"]  # the other latents, side by side, do not fail there


def test_region_slice_reselects_its_members_on_its_map() -> None:
    cohort, _ = _with_failure('age >= 70 and sex == "female"')
    coords = cohort.projection("fused/umap")
    distance = np.hypot(*(coords - coords[0]).T)
    planted = distance < np.quantile(distance, 0.05)  # a blob of 5% of the subjects
    pred = cohort.predictions["fused"]["lvef"].copy()
    pred[planted] += 25
    cohort.predictions["fused"] = {**cohort.predictions["fused"], "lvef": pred}
    found = find_failures(cohort, "lvef", latent="fused", projections=["fused/umap"], candidates=["sex"])
    region = found[found["kind"] == "region"].iloc[0]
    members = slice_members(cohort, region)
    assert members.sum() == region["n"]
    assert (members & planted).sum() / (members | planted).sum() > 0.5


def test_all_latents_are_searched_separately() -> None:
    cohort, _ = _with_failure('sex == "male" and af == "yes"', latent="mri")
    found = find_failures(cohort, "lvef", latent="all", projections=None)
    assert set(found.attrs["tried"]) == {"ecg", "mri", "fused"}
    assert found[found["latent"] == "mri"].iloc[0]["rule"] == 'sex == "male" and af == "yes"'
    with_target = find_failures(cohort, "lvef", latent="mri", projections=None, include_target=True, only_significant=False)
    assert with_target["rule"].str.contains("lvef").any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (dict(target="lvfe"), r"unknown target 'lvfe'. Did you mean 'lvef'"),
        (dict(target="lvef", latent="ekg"), r"no predictions of 'lvef' from latent kind 'ekg'. Did you mean 'ecg'"),
        (dict(target="lvef", candidates=["agee"]), r"unknown candidate phenotype 'agee'. Did you mean 'age'"),
        (dict(target="lvef", projections=["fused/tsne"]), r"no projection 'fused/tsne'"),
    ],
)
def test_bad_arguments_are_named(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        find_failures(tiny_cohort(300), **call)


def test_a_cohort_without_predictions_is_refused() -> None:
    cohort = tiny_cohort(300)
    cohort.predictions = {}
    with pytest.raises(ValueError, match="no cross-fitted predictions.*lse build"):
        find_failures(cohort, "lvef")
    cohort = tiny_cohort(300)
    cohort.predictions = {kind: {k: v for k, v in per.items() if k != "lvef"} for kind, per in cohort.predictions.items()}
    with pytest.raises(ValueError, match="no latent kind has predictions of 'lvef'"):
        find_failures(cohort, "lvef")
