"""Group comparison at 500k subjects: three saved subgroups against the comparison group on every phenotype.

Run: ``.venv/bin/python tests/benchmarks/bench_compare.py [--n 500000] [--repeat 5]``.

Times, in one run: the phenotype comparison (each group's phenotype statistics, the rest's by
subtraction, tests, BH q-values, privacy floor), the accuracy metrics of every latent kind in every
group (from the groups' sufficient statistics), the histograms, the whole pane update (everything
but Bokeh), and, as the baseline, the stock route: gather each group's values with pandas and call
``scipy.stats.ttest_ind`` / ``chi2_contingency`` per phenotype. Each timed call starts from a new
GroupSet, so no per-selection cache answers it.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import pandas as pd
from _common import machine_load, timed
from scipy import stats

from lse_panel.analysis.accuracy import accuracy_by_group
from lse_panel.analysis.compare import compare_with_reference, distribution_frames
from lse_panel.analysis.groups import COMPARISON, GroupSet
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.derived import (
    cohort_statistics,
    latent_sums,
    metric_sums,
    phenotype_binning,
    phenotype_sums,
    phenotype_total,
    prepared_metrics,
)
from lse_panel.components.compare import ComparePane
from lse_panel.components.state import ExplorerState
from lse_panel.testing import tiny_cohort


def stock_compare(phenotypes: pd.DataFrame, specs: dict, groups: dict[str, np.ndarray], reference: np.ndarray) -> None:
    """What one would write without this package: gather values, call scipy per phenotype and group."""
    ref = phenotypes.iloc[np.flatnonzero(reference)]
    for rows in groups.values():
        part = phenotypes.iloc[rows]
        p_values = []
        for name, spec in specs.items():
            a, b = part[name].dropna().to_numpy(), ref[name].dropna().to_numpy()
            if spec.type == "continuous":
                p_values.append(stats.ttest_ind(a, b, equal_var=False).pvalue)
            else:
                k = len(spec.categories)
                counts = [np.bincount(x.astype(np.int64), minlength=k) for x in (a, b)]
                table = np.vstack(counts)
                p_values.append(stats.chi2_contingency(table, correction=False).pvalue)
        stats.false_discovery_control(np.asarray(p_values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    cohort = tiny_cohort(args.n)
    print(f"cohort of {args.n:,} subjects built in {time.perf_counter() - start:.1f} s "
          f"({len(cohort.phenotype_specs)} phenotypes, {len(cohort.predictions)} latent kinds)")  # fmt: skip
    state = ExplorerState(cohort)
    store = state.store
    store.save_condition("older", "age >= 65")
    store.save_condition("women", 'sex == "female"')
    store.save_condition("af", 'af == "yes" or lv_mass > 140')
    names = store.names()
    groups = {name: store.members(name) for name in names}
    print("subgroups: " + ", ".join(f"{k} {v.size:,}" for k, v in groups.items()))

    rng = np.random.default_rng(0)
    state.select(np.sort(rng.choice(args.n, args.n // 10, replace=False)))
    rest = np.ones(args.n, dtype=bool)
    rest[state.selection] = False
    policy = PrivacyPolicy()

    start = time.perf_counter()
    prepared_metrics(cohort), cohort_statistics(cohort), phenotype_total(cohort)
    print(f"prepared metrics and cohort totals (once per process, --setup): {time.perf_counter() - start:.2f} s")

    specs = cohort.phenotype_specs
    sums, total = phenotype_sums(cohort), partial(phenotype_total, cohort)

    def fresh() -> GroupSet:
        return GroupSet(args.n, state.selection, "rest", extra=groups, policy=policy, sums=latent_sums(cohort),
                        metric_sums=metric_sums(cohort))  # fmt: skip

    def compare(g: GroupSet) -> None:
        statistics = {label: g.sum_over(label, "phenotypes", total, sums.rows_sum) for label in (COMPARISON, *names)}
        compare_with_reference({k: statistics[k] for k in names}, statistics[COMPARISON], specs,
                               reference_label="rest", policy=policy)  # fmt: skip

    def histograms(g: GroupSet) -> None:
        for p in specs:
            binning = phenotype_binning(cohort, p)
            counts = {label: g.sum_over(label, ("bins", p), lambda b=binning: b.cohort_counts, binning.counts)
                      for label in (COMPARISON, *names)}  # fmt: skip
            distribution_frames(binning, counts, policy=policy)

    t_compare = timed(lambda _: compare(fresh()), args.repeat)
    t_metrics = timed(
        lambda _: accuracy_by_group(fresh(), {COMPARISON: "rest", **{k: k for k in names}}, policy=policy), args.repeat
    )
    t_hist = timed(lambda _: histograms(fresh()), args.repeat)
    pane = ComparePane(state, phenotypes=list(specs))
    pane.subgroups = names

    def pane_update(i: int) -> None:
        state.select(state.selection[i % 2 :])  # a new selection each time (the pane watches it): nothing cached

    t_pane = timed(pane_update, args.repeat)
    phenotypes = cohort.phenotypes
    t_stock = timed(lambda _: stock_compare(phenotypes, specs, groups, rest), args.repeat)

    print(f"\nthree subgroups vs the rest of a {state.n_selected:,}-subject selection, "
          f"{len(specs)} phenotypes, median of {args.repeat} ({machine_load()}):")  # fmt: skip
    print(f"  phenotype comparison ×3 (+ BH, privacy floor) : {t_compare}")
    print(f"  accuracy metrics, 4 groups × 3 latents        : {t_metrics}")
    print(f"  histograms, 4 groups × all phenotypes         : {t_hist}")
    print(f"  whole pane update (selection + 3 groups)      : {t_pane} (no Bokeh)")
    print(f"  baseline: pandas gather + scipy tests ×3      : {t_stock} "
          f"(the comparison is {t_stock.cpu / t_compare.cpu:.1f}× faster in CPU)")  # fmt: skip


if __name__ == "__main__":
    main()
