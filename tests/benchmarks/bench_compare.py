"""Group comparison at 500k subjects: three saved subgroups against the comparison group on every phenotype.

Run: ``.venv/bin/python tests/benchmarks/bench_compare.py [--n 500000] [--repeat 5]``.

Times, in one run: the phenotype comparison (``compare_groups`` per group, BH q-values, privacy
floor), the accuracy metrics of every latent kind in every group (``subgroup_metrics`` on the
cached prepared metrics), the histograms, the whole pane update (everything but Bokeh), and, as
the baseline, the stock route: gather each group's values with pandas and call
``scipy.stats.ttest_ind`` / ``chi2_contingency`` per phenotype.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from lse_panel.analysis.accuracy import accuracy_by_group
from lse_panel.analysis.compare import compare_with_reference, distribution_frames
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.derived import phenotype_binning, prepared_metrics
from lse_panel.components.compare import ComparePane
from lse_panel.components.state import ExplorerState
from lse_panel.testing import tiny_cohort


def timed(fn: Callable[[], object], repeat: int, warm: int = 1) -> float:
    """Median seconds of ``fn()`` after ``warm`` untimed calls."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    prepared_metrics(cohort)
    print(f"prepared metrics (once per process, --setup): {time.perf_counter() - start:.2f} s")

    columns, specs = cohort.phenotype_columns, cohort.phenotype_specs
    prepared = prepared_metrics(cohort)
    t_compare = timed(
        lambda: compare_with_reference(columns, specs, groups, rest, reference_label="rest", policy=policy), args.repeat
    )
    t_metrics = timed(lambda: accuracy_by_group(prepared, {"rest": rest, **groups}, policy=policy), args.repeat)
    t_hist = timed(
        lambda: [distribution_frames(phenotype_binning(cohort, p), {"rest": rest, **groups}, policy=policy)
                 for p in cohort.phenotype_specs],
        args.repeat,
    )
    pane = ComparePane(state, phenotypes=list(cohort.phenotype_specs))
    pane.subgroups = names
    t_pane = timed(pane._update, args.repeat)
    phenotypes = cohort.phenotypes
    t_stock = timed(lambda: stock_compare(phenotypes, cohort.phenotype_specs, groups, rest), args.repeat)

    print(f"\nthree subgroups vs the rest of a {state.n_selected:,}-subject selection, "
          f"{len(cohort.phenotype_specs)} phenotypes, median of {args.repeat}:")  # fmt: skip
    print(f"  compare_groups ×3 (+ BH, privacy floor) : {1e3 * t_compare:8.1f} ms")
    print(f"  accuracy metrics, 4 groups × 3 latents    : {1e3 * t_metrics:8.1f} ms")
    print(f"  compare + metrics                         : {1e3 * (t_compare + t_metrics):8.1f} ms")
    print(f"  histograms, 4 groups × all phenotypes     : {1e3 * t_hist:8.1f} ms")
    print(f"  whole pane update (selection + 3 groups)  : {1e3 * t_pane:8.1f} ms (no Bokeh)")
    print(f"  baseline: pandas gather + scipy tests ×3  : {1e3 * t_stock:8.1f} ms "
          f"(compare_groups is {t_stock / t_compare:.1f}× faster)")  # fmt: skip


if __name__ == "__main__":
    main()
