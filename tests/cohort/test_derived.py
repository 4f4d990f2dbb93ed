"""Values derived from a cohort alone: computed once per process, shared, and gone with the cohort."""

from __future__ import annotations

import gc

import numpy as np

from lse_panel.cohort import derived
from lse_panel.testing import tiny_cohort


def test_each_value_is_computed_once_per_cohort() -> None:
    cohort = tiny_cohort(300)
    calls = []
    first = derived.derived(cohort, "x", lambda: calls.append(1) or object())
    assert derived.derived(cohort, "x", lambda: calls.append(1) or object()) is first and calls == [1]
    assert derived.cohort_metrics(cohort) is derived.cohort_metrics(cohort)
    assert derived.prepared_metrics(cohort) is derived.prepared_metrics(cohort)
    assert derived.cohort_metrics(tiny_cohort(50)) is not derived.cohort_metrics(cohort)  # another cohort
    np.testing.assert_allclose(derived.latent_total(cohort, "fused"), cohort.latent("fused").sum(0, dtype=np.float64))
    # The sidebar and the comparison pane bin a phenotype on the same edges.
    assert derived.phenotype_binning(cohort, "age") is derived.phenotype_binning(cohort, "age", 30)
    assert derived.phenotype_binning(cohort, "sex").categories == ("female", "male")


def test_values_go_with_their_cohort() -> None:
    cohort = tiny_cohort(100)
    derived.latent_total(cohort, "fused")
    sums = derived.latent_sums(cohort)
    np.testing.assert_allclose(sums.rows_sum("fused", np.arange(10)), cohort.latent("fused")[:10].sum(0), rtol=1e-6)
    metric_sums = derived.metric_sums(cohort)
    assert metric_sums.total() is derived.cohort_statistics(cohort)
    gc.collect()  # other tests' cohorts that are already garbage
    before = len(derived._VALUES)
    del cohort, sums, metric_sums
    gc.collect()
    assert len(derived._VALUES) == before - 1
