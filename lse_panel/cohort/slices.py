"""Slice search on a cohort: the columns it needs, read and checked, for :func:`~lse_panel.analysis.slices.find_slices`."""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.conditions import parse_condition
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.analysis.selection import lasso_mask
from lse_panel.analysis.slices import find_slices
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import FilterStep, LassoStep

__all__ = ["combine_failures", "find_failures", "slice_members", "slice_rule"]


def _close(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def _predicted_by(cohort: Cohort, target: str) -> dict[str, np.ndarray]:
    if target not in cohort.phenotype_specs:
        raise ValueError(
            f"unknown target {target!r}.{_close(target, list(cohort.phenotype_specs))} "
            f"This cohort's phenotypes: {', '.join(cohort.phenotype_specs)}."
        )
    if not cohort.predictions:
        where = f" {cohort.path}" if cohort.path else ""
        raise ValueError(
            f"the bundle{where} has no cross-fitted predictions, so there is no accuracy to search. "
            "Run `lse build` on it (the cross-fit step) first."
        )
    by_kind = {kind: per[target] for kind, per in cohort.predictions.items() if target in per}
    if not by_kind:
        predicted = sorted({name for per in cohort.predictions.values() for name in per})
        raise ValueError(
            f"no latent kind has predictions of {target!r}; predicted phenotypes: {', '.join(predicted)}."
        )
    return by_kind


def _latents(latent: str | Sequence[str] | None, available: Sequence[str], target: str) -> list[str]:
    if latent is None:
        return ["fused"] if "fused" in available else list(available)
    wanted = list(available) if latent == "all" else [latent] if isinstance(latent, str) else list(latent)
    for kind in wanted:
        if kind not in available:
            raise ValueError(
                f"no predictions of {target!r} from latent kind {kind!r}.{_close(kind, available)} "
                f"Use one of: {', '.join(available)}, or 'all'."
            )
    if not wanted:
        raise ValueError("no latent kind to search: pass one, a list, or 'all'.")
    return wanted


def find_failures(
    cohort: Cohort,
    target: str,
    *,
    latent: str | Sequence[str] | None = None,
    candidates: Sequence[str] | None = None,
    include_target: bool = False,
    projections: str | Sequence[str] | None = "all",
    **options: Any,
) -> pd.DataFrame:
    """Where the cohort's embedding predicts ``target`` worst: the top slices, as a DataFrame.

    Reads the target, its cross-fitted predictions from every latent kind, the candidate
    phenotypes and the 2-D maps from ``cohort`` and runs
    :func:`~lse_panel.analysis.slices.find_slices` (whose docstring says how slices are found,
    tested and ranked, and lists the columns returned).

    Parameters
    ----------
    cohort
        Any cohort (a bundle opened with ``open_bundle``, or one built in memory).
    target
        The phenotype whose prediction is judged, e.g. ``"lvef"``.
    latent
        The latent kind whose failures are searched, a list of kinds, or ``"all"`` (each searched
        separately); default ``"fused"`` when present, else all. Every kind's metrics are shown
        side by side whatever is searched.
    candidates
        Phenotypes to slice on; default every phenotype but the target.
    include_target
        Also slice on the target itself (by default left out: a predictor that shrinks towards
        the mean always errs most in the target's own tails, which would crowd out every other
        finding).
    projections
        Maps to look for failing regions on: ``"all"`` (default), a list of keys such as
        ``"fused/umap"``, or None for no region search.
    **options
        Passed on to :func:`~lse_panel.analysis.slices.find_slices` (``max_conditions``, ``fdr``,
        ``top``, ``loss``, ``bins``, ``policy``...).

    Returns
    -------
    pandas.DataFrame
        :func:`~lse_panel.analysis.slices.find_slices`'s table; ``attrs["target"]`` names the target.
    """
    by_kind = _predicted_by(cohort, target)
    search = _latents(latent, list(by_kind), target)
    specs = cohort.phenotype_specs
    if candidates is None:
        names = [n for n in specs if n != target or include_target]
    else:
        names = list(candidates)
        for name in names:
            if name not in specs:
                raise ValueError(f"unknown candidate phenotype {name!r}.{_close(name, list(specs))}")
        if include_target and target not in names:
            names.append(target)
    if projections == "all":
        keys = list(cohort.projections)
    else:
        keys = list(projections or [])
        for key in keys:
            if key not in cohort.projections:
                raise ValueError(
                    f"no projection {key!r}.{_close(key, list(cohort.projections))} "
                    f"This cohort has: {', '.join(cohort.projections) or 'none'}."
                )
    task = cohort.prediction_tasks().get(target) or ("regression" if specs[target].type == "continuous" else "classification")
    frame = find_slices(
        cohort.phenotype(target),
        by_kind,
        {name: cohort.phenotype(name) for name in names},
        {name: specs[name] for name in names},
        task=task,
        search=search,
        projections={key: cohort.projection(key) for key in keys},
        **options,
    )
    frame.attrs["target"] = target
    return frame


def slice_members(cohort: Cohort, row: Any) -> np.ndarray:
    """The subjects a found slice's rule selects, as a boolean mask (one row of :func:`find_failures`).

    A phenotype slice's rule is parsed and evaluated as a filter would be; a region's polygon is
    tested with the lasso rule on its projection, as a saved ``LassoStep`` would be.
    """
    if row["kind"] == "phenotype":
        return evaluate(parse_condition(row["rule"], cohort.phenotype_specs), cohort.phenotype_columns, cohort.phenotype_specs)
    coords = cohort.projection(row["projection"])
    return lasso_mask(coords[:, 0], coords[:, 1], np.asarray(row["polygon_x"]), np.asarray(row["polygon_y"]), on_nan="exclude")


def slice_rule(row: Any) -> FilterStep | LassoStep:
    """A found slice as a subgroup rule step (one row of :func:`find_failures`).

    A phenotype slice becomes a :class:`~lse_panel.cohort.rules.FilterStep` of its condition, a
    region a :class:`~lse_panel.cohort.rules.LassoStep` of its polygon on its projection; a
    subgroup saved with it re-applies (``apply_rule``) to the subjects :func:`slice_members` gives.
    """
    if row["kind"] == "phenotype":
        return FilterStep(condition=row["condition"].to_json(), text=str(row["rule"]))
    return LassoStep(str(row["projection"]), tuple(row["polygon_x"]), tuple(row["polygon_y"]))


def combine_failures(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One table from :func:`find_failures` results of separate latent kinds (each searched on its own).

    Every kind's search is independent (its own tests and false-discovery control), so searching
    the kinds one at a time and combining them gives the table ``latent="all"`` gives; done
    this way, each kind's result can be cached and progress shown between kinds. ``attrs`` keeps
    the first frame's, with ``tried`` and ``ci_level`` merged over the kinds.
    """
    if not frames:
        raise ValueError("no slice-search results to combine: search at least one latent kind.")
    found = [f for f in frames if not f.empty]  # (concatenating empty tables muddles the column types)
    result = pd.concat(found, ignore_index=True) if len(found) > 1 else (found or list(frames))[0].copy()
    result.attrs = {
        **frames[0].attrs,
        "tried": {k: v for f in frames for k, v in f.attrs.get("tried", {}).items()},
        "ci_level": {k: v for f in frames for k, v in f.attrs.get("ci_level", {}).items()},
    }
    return result
