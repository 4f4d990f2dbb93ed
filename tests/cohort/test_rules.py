"""Subgroup rules: steps combined like the selection tools, JSON round trips, clear errors."""

from __future__ import annotations

from typing import Callable

import json

import numpy as np
import pytest

from lse_panel.analysis.conditions import ConditionError
from lse_panel.analysis.selection import box_mask, combine, lasso_mask
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import (
    BoxStep,
    FilterStep,
    IdsStep,
    LassoStep,
    SubgroupError,
    apply_rule,
    rule_from_json,
    rule_to_json,
)
from lse_panel.cohort.subgroups import SubgroupStore

N = 400


def test_apply_rule_combines_steps_like_the_selection_tools(source: Cohort, draw_lasso: Callable[[Cohort], LassoStep]) -> None:
    xy = source.projection("ecg/pca")
    box = BoxStep("ecg/pca", (-1.0, -1.0, 2.0, 3.0))
    lasso = draw_lasso(source)
    lasso_add = LassoStep(lasso.projection, lasso.xs, lasso.ys, mode="add")
    drop = IdsStep(source.ids[:50], mode="subtract")
    keep = FilterStep(condition={"kind": "compare", "name": "af", "op": "==", "value": "no"}, mode="intersect")
    expected = np.flatnonzero(box_mask(xy[:, 0], xy[:, 1], box.bounds))
    fused = source.projection("fused/umap")
    expected = combine(expected, np.flatnonzero(lasso_mask(fused[:, 0], fused[:, 1], lasso.xs, lasso.ys)), "add")
    expected = combine(expected, np.arange(50), "subtract")
    expected = combine(expected, np.flatnonzero(np.asarray(source.phenotype("af")) == 0), "intersect")
    np.testing.assert_array_equal(apply_rule([box, lasso_add, drop, keep], source), expected)
    # Through JSON and back, the rule is the same rule.
    data = json.loads(json.dumps(rule_to_json([box, lasso_add, drop, keep])))
    assert rule_from_json(data) == (box, lasso_add, drop, keep)
    np.testing.assert_array_equal(apply_rule(data, source), expected)
    # A lone first step: intersect selects its own subjects, subtract everyone else.
    only_af = apply_rule([keep], source)
    np.testing.assert_array_equal(only_af, np.flatnonzero(np.asarray(source.phenotype("af")) == 0))
    np.testing.assert_array_equal(apply_rule([drop], source), np.arange(50, N))
    assert apply_rule([], source).size == 0


def test_rule_errors_name_what_is_missing(source: Cohort) -> None:
    with pytest.raises(SubgroupError, match="projection 'fused/tsne'"):
        apply_rule([BoxStep("fused/tsne", (0, 0, 1, 1))], source)
    with pytest.raises(SubgroupError, match="latent kind"):
        BoxStep("umap", (0, 0, 1, 1))
    with pytest.raises(SubgroupError, match="'box', 'lasso', 'filter', 'ids'"):
        rule_from_json([{"mode": "new", "circle": [0, 0, 1]}])
    with pytest.raises(SubgroupError, match="phenotype 'bmi'"):
        apply_rule([FilterStep(ranges={"bmi": (20, 25)})], source)
    with pytest.raises(ConditionError, match="unknown phenotype 'bmi'"):
        apply_rule([FilterStep(condition={"kind": "between", "name": "bmi", "lo": 1, "hi": 2})], source)
    # A stored condition is checked when the subgroup is saved, not first when it is re-applied.
    with pytest.raises(ConditionError, match="unknown phenotype 'bmi'"):
        bad = FilterStep(condition={"kind": "compare", "name": "bmi", "op": ">", "value": 1})
        SubgroupStore(source).save("x", [1], [bad])
    assert SubgroupStore(source).names() == []
    with pytest.raises(ConditionError, match="line 1, column 6"):
        FilterStep.from_text("age >> 60", source)
    step = FilterStep.from_text(" age > 60 ", source, mode="intersect")
    assert (step.mode, step.text) == ("intersect", "age > 60")
    assert step.condition == {"kind": "compare", "name": "age", "op": ">", "value": 60.0}
