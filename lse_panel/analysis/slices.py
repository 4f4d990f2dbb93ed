"""Where the embedding fails: the subgroups whose cross-fitted predictions are worst, found by search."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lse_panel.analysis.conditions import And, Condition, PhenotypeSpec
from lse_panel.analysis.metrics import METRICS, Task, subgroup_metrics
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.selection import lasso_mask
from lse_panel.analysis.slice_regions import high_loss_regions
from lse_panel.analysis.slice_stats import (
    LOSS_NAMES,
    LOSSES,
    Loss,
    benjamini_hochberg,
    loss_given_target,
    per_subject_loss,
    welch_greater,
)
from lse_panel.analysis.slice_sums import (
    CLINICAL_BINS,
    COUNT,
    SUM,
    Bins,
    CandidateCodes,
    encode_candidates,
    pair_sums,
    single_sums,
    slice_mask,
    triple_sums,
)
from lse_panel.config import SETTINGS

__all__ = ["CLINICAL_BINS", "LOSSES", "Bins", "benjamini_hochberg", "find_slices", "loss_given_target", "per_subject_loss"]


# ----------------------------------------------------------------------------- the search


@dataclass
class _Slice:
    """One short-listed slice of one search, before folding."""

    kind: str  # "phenotype" or "region"
    excess: float
    n: int
    sums: np.ndarray  # the test's (count, Σ excess, Σ excess²) for the slice and its rest
    rest: np.ndarray
    p: float
    q: float = math.nan
    row: int = -1  # index of its p-value among every test of the search
    key: np.ndarray | None = None  # phenotype: item ids, -1 padded
    projection: str = ""
    polygon: tuple[np.ndarray, np.ndarray] | None = None
    mask: np.ndarray | None = None  # the rule's members (missing loss included)


@dataclass
class _Outcome:
    """What one latent kind's search returns."""

    kept: list[_Slice]
    tried: dict[str, int]
    ci_level: float
    mean_loss: float
    n_valid: int


def _limits(n_valid: int, floor: int, min_fraction: float, max_fraction: float) -> tuple[int, int]:
    return max(floor, math.ceil(min_fraction * n_valid), 1), math.floor(max_fraction * n_valid)


def _fold_nested(
    short: list[_Slice], features: CandidateCodes, totals: np.ndarray, alpha: float, sums_of
) -> list[_Slice]:
    """Drop a conjunction that adds nothing over its parent, and a parent whose failure is all in a child.

    A conjunction C adds nothing over a parent P (C with one condition fewer, or any short-listed
    slice whose every condition is implied by one of C's on the same bins) when C's loss is not
    significantly higher than that of the rest of P (one-sided Welch at ``alpha``). Conversely, a
    short-listed P with a child C that does add something is C diluted when the rest of P is not
    significantly worse than the subjects outside P; then P is dropped.
    """
    phen = [s for s in short if s.kind == "phenotype"]
    if not phen:
        return short
    n_features = len(features.names)
    lo = np.zeros((len(phen), n_features), dtype=np.int64)
    hi = np.tile(features.width, (len(phen), 1))
    for r, s in enumerate(phen):
        for item in s.key[s.key >= 0]:
            f = features.item_feature[item]
            lo[r, f], hi[r, f] = features.item_lo[item], features.item_hi[item]
    inside = ((lo[:, None, :] >= lo[None, :, :]) & (hi[:, None, :] <= hi[None, :, :])).all(axis=2)
    np.fill_diagonal(inside, False)
    child, parent = np.nonzero(inside)
    c_sums = np.array([phen[c].sums for c in child]).reshape(-1, 3)
    p_sums = np.array([phen[p].sums for p in parent]).reshape(-1, 3)
    # Parents by dropping one condition, short-listed or not (too big, say, to be tried themselves).
    own_child, own_parent = [], []
    for r, s in enumerate(phen):
        items = s.key[s.key >= 0]
        if items.size < 2:
            continue
        for drop in range(items.size):
            own_child.append(r)
            own_parent.append(sums_of(np.delete(items, drop)))
    all_child = np.concatenate([child, np.array(own_child, dtype=np.int64)])
    all_c = np.vstack([c_sums, np.array([phen[r].sums for r in own_child]).reshape(-1, 3)])
    all_p = np.vstack([p_sums, np.array(own_parent).reshape(-1, 3)])
    adds = welch_greater(*all_c.T, *(all_p - all_c).T)[3] < alpha
    dropped = set(all_child[~adds].tolist())
    left = p_sums - c_sums  # a short-listed parent's members outside its child
    dilutes = welch_greater(*left.T, *(totals[None, :3] - p_sums).T)[3] >= alpha
    dropped |= set(parent[adds[: child.size] & dilutes].tolist())
    gone = {id(phen[r]) for r in dropped}
    return [s for s in short if id(s) not in gone]


def _fold_overlapping(
    short: list[_Slice], sums_in: np.ndarray, jaccard: float, alpha: float, top: int, member_of
) -> list[_Slice]:
    """Keep slices in score order, folding any that a slice kept before already accounts for.

    A slice is folded when its members overlap a kept slice's by Jaccard ≥ ``jaccard``, or when
    its members outside every kept slice are not significantly worse (one-sided Welch at
    ``alpha``) than the subjects outside both: its failure is one already shown.
    """
    valid = sums_in[:, COUNT] > 0
    totals = sums_in.sum(axis=0)
    kept: list[_Slice] = []
    kept_sets: list[tuple[np.ndarray, int]] = []
    covered = np.zeros(valid.size, dtype=bool)
    for s in short:
        s.mask = member_of(s)
        members = s.mask & valid
        size = int(np.count_nonzero(members))
        if any(
            (inter := int(np.count_nonzero(members & other))) / max(size + other_size - inter, 1) >= jaccard
            for other, other_size in kept_sets
        ):
            continue
        if kept:
            fresh = sums_in[members & ~covered, :3].sum(axis=0)
            outside = totals[:3] - sums_in[members | covered, :3].sum(axis=0)
            if welch_greater(*fresh, *outside)[3] >= alpha:
                continue
        kept.append(s)
        kept_sets.append((members, size))
        covered |= members
        if len(kept) == top:
            break
    return kept


def _phenotype_condition(features: CandidateCodes, key: np.ndarray) -> Condition:
    items = sorted(key[key >= 0].tolist(), key=lambda i: (features.item_feature[i], i))
    parts = [c for item in items for c in features.item_conditions[item]]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _region_slices(
    projections: Mapping[str, np.ndarray],
    sums_in: np.ndarray,
    excess: np.ndarray,
    limits: tuple[int, int, int],
    *,
    first_row: int,
    grid: int,
    z: float,
    max_regions: int,
    seed: int,
) -> list[_Slice]:
    """Failing regions of each map, drawn on one random half of the subjects and tested on the other.

    Chosen by the loss, a region would pass any test on the subjects it was drawn from. Its test
    columns (sums, p-value, excess scaled to the whole cohort) come from the held-out half; its
    size ``n`` counts every subject inside.
    """
    lo_n, hi_n, floor = limits
    valid = sums_in[:, COUNT] > 0
    n_valid = int(valid.sum())
    discover = np.random.default_rng(seed).random(valid.size) < 0.5
    held = valid & ~discover
    held_totals = sums_in[held].sum(axis=0)
    scale = n_valid / max(int(held.sum()), 1)
    found = []
    for name, coords in projections.items():
        x, y = coords[:, 0], coords[:, 1]
        for xs, ys in high_loss_regions(
            x, y, valid & discover, excess, grid=grid, z=z, min_count=max(2 * floor, 20), max_regions=max_regions, seed=seed
        ):
            inside = lasso_mask(x, y, xs, ys, on_nan="exclude")
            n_in = int(np.count_nonzero(inside & valid))
            if not (lo_n <= n_in <= hi_n and n_valid - n_in >= floor):
                continue
            s = sums_in[inside & held].sum(axis=0)
            rest = held_totals[:3] - s[:3]
            p = float(welch_greater(*s[:3], *rest)[3])
            found.append(_Slice("region", float(s[SUM]) * scale, n_in, s[:3], rest, p, row=first_row + len(found),
                                projection=name, polygon=(xs, ys), mask=inside))
    return found


def _search(
    features: CandidateCodes,
    loss: np.ndarray,
    projections: Mapping[str, np.ndarray],
    *,
    max_conditions: int,
    fdr: float,
    top: int,
    floor: int,
    min_fraction: float,
    max_fraction: float,
    jaccard: float,
    only_significant: bool,
    regions: bool,
    grid: int,
    region_z: float,
    max_regions: int,
    max_parents: int,
    seed: int,
) -> _Outcome:
    """One latent kind's search: every slice scored, tested, short-listed, folded; the top returned."""
    valid = np.isfinite(loss)
    n_valid = int(valid.sum())
    lo_n, hi_n = _limits(n_valid, floor, min_fraction, max_fraction)
    tried = {"phenotype": 0, "pruned": 0, "region": 0}
    if n_valid == 0 or lo_n > hi_n:
        return _Outcome([], tried, 1.0, math.nan, n_valid)
    mean_loss = float(loss[valid].mean())
    excess = np.where(valid, loss - mean_loss, 0.0)
    sums_in = np.column_stack([valid.astype(np.float64), excess, excess * excess, np.maximum(excess, 0.0)])
    totals = sums_in.sum(axis=0)

    keys, sums = single_sums(features, sums_in)
    if max_conditions >= 2 and len(features.names) >= 2:
        two_keys, two_sums = pair_sums(features, sums_in)
        keys, sums = np.vstack([keys, two_keys]), np.vstack([sums, two_sums])
    by_row = sums  # every one- and two-condition slice, in CandidateCodes.row_of order
    size_ok = (sums[:, COUNT] >= lo_n) & (sums[:, COUNT] <= hi_n) & (totals[COUNT] - sums[:, COUNT] >= floor)
    pool = max(10 * top, 200)
    if max_conditions >= 3 and len(features.names) >= 3:
        ranked = np.sort(np.where(size_ok, sums[:, SUM], -np.inf))[::-1]
        threshold = max(float(ranked[min(pool, ranked.size) - 1]), 0.0)
        parents = (keys[:, 1] >= 0) & size_ok
        t_keys, t_sums, n_possible = triple_sums(
            features, sums_in, keys[parents], sums[parents], threshold, max_parents, valid
        )
        t_ok = (t_sums[:, COUNT] >= lo_n) & (t_sums[:, COUNT] <= hi_n) & (totals[COUNT] - t_sums[:, COUNT] >= floor)
        tried["pruned"] = n_possible - t_keys.shape[0]
        keys, sums = np.vstack([keys, t_keys]), np.vstack([sums, t_sums])
        size_ok = np.concatenate([size_ok, t_ok])
    keys, sums = keys[size_ok], sums[size_ok]
    rest = totals[None, :3] - sums[:, :3]
    p = welch_greater(*sums[:, :3].T, *rest.T)[3]
    tried["phenotype"] = int(keys.shape[0])
    found = [
        _Slice("phenotype", float(sums[r, SUM]), int(sums[r, COUNT]), sums[r, :3], rest[r], float(p[r]), row=int(r),
               key=keys[r])
        for r in np.argsort(-sums[:, SUM], kind="stable")[:pool]
        if sums[r, SUM] > 0
    ]
    all_p = [p]

    if regions and projections:
        region_slices = _region_slices(
            projections, sums_in, excess, (lo_n, hi_n, floor), first_row=keys.shape[0], grid=grid, z=region_z,
            max_regions=max_regions, seed=seed,
        )
        found.extend(region_slices)
        all_p.append(np.array([s.p for s in region_slices]))
        tried["region"] = len(region_slices)
    n_tests = sum(tried.values())
    q = benjamini_hochberg(np.concatenate(all_p), n_tests)
    for s in found:
        s.q = float(q[s.row])
    # The bar every slice shown must clear on its own: the p-value BH's cut-off has at this search's
    # R discoveries among m tests, fdr·R/m. Folding tests use it, so a slice that is kept carries
    # a discovery of its own; intervals use 1 − fdr·R/m, the false-coverage-rate level of
    # Benjamini & Yekutieli (2005), so the intervals of the slices shown hold together despite the search.
    bar = fdr * max(int(np.count_nonzero(q <= fdr)), 1) / max(n_tests, 1)
    short = [s for s in found if s.sums[1] > 0 and (s.q <= fdr or not only_significant)]
    short.sort(key=lambda s: -s.excess)
    # Without significance asked for, folding compares point estimates (p ≥ 0.5: no excess at all).
    fold_at = bar if only_significant else 0.5
    short = _fold_nested(short[:pool], features, totals, fold_at, lambda items: by_row[features.row_of(items), :3])

    def member_of(s: _Slice) -> np.ndarray:
        return s.mask if s.mask is not None else slice_mask(features, s.key, np.ones(loss.size, dtype=bool))

    kept = _fold_overlapping(short, sums_in, jaccard, fold_at, top, member_of)
    ci_level = 1.0 - bar
    return _Outcome(kept, tried, ci_level, mean_loss, n_valid)


# ----------------------------------------------------------------------------- the public entry


def _loss(truth, prediction, task, loss, given_target) -> np.ndarray:
    values = per_subject_loss(truth, prediction, task, loss)
    return loss_given_target(values, truth, task) if given_target else values


def _check_inputs(truth, predictions, candidates, specs, task, search, projections, max_conditions, fdr, top):
    n = np.asarray(truth).shape[0] if np.ndim(truth) == 1 else None
    if n is None:
        raise ValueError(f"truth must be 1-D (one value per subject); got shape {np.shape(truth)}.")
    if task not in LOSSES:
        raise ValueError(f"task must be 'regression' or 'classification'; got {task!r}.")
    if not predictions:
        raise ValueError("no predictions given: pass {latent kind: cross-fitted predictions of the target}.")
    unknown = [k for k in search if k not in predictions]
    if unknown:
        raise ValueError(f"no predictions from latent kind {unknown[0]!r}; there are: {', '.join(predictions)}.")
    for kind, values in predictions.items():
        if np.shape(values) != (n,):
            raise ValueError(f"predictions[{kind!r}] has shape {np.shape(values)}; expected ({n},), one per subject.")
    for name, column in candidates.items():
        if name not in specs:
            raise ValueError(f"candidate {name!r} has no phenotype spec (type, categories); pass specs[{name!r}].")
        if np.shape(column) != (n,):
            raise ValueError(f"candidate {name!r} has shape {np.shape(column)}; expected ({n},), one per subject.")
    for name, coords in projections.items():
        if np.shape(coords) != (n, 2):
            raise ValueError(f"projection {name!r} has shape {np.shape(coords)}; expected ({n}, 2).")
    if max_conditions not in (1, 2, 3):
        raise ValueError(f"max_conditions must be 1, 2 or 3; got {max_conditions!r}.")
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"fdr must lie strictly between 0 and 1; got {fdr!r}.")
    if int(top) < 1:
        raise ValueError(f"top must be at least 1; got {top!r}.")


def find_slices(
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    candidates: Mapping[str, np.ndarray],
    specs: Mapping[str, PhenotypeSpec],
    *,
    task: Task,
    search: Sequence[str] | None = None,
    projections: Mapping[str, np.ndarray] | None = None,
    loss: Loss | None = None,
    max_conditions: int = SETTINGS.slice_max_conditions,
    quantile_bins: int = 5,
    bins: Mapping[str, Bins] | None = None,
    fdr: float = SETTINGS.slice_fdr,
    top: int = SETTINGS.slice_top,
    min_fraction: float = 0.001,
    max_fraction: float = 0.5,
    jaccard: float = 0.8,
    only_significant: bool = True,
    policy: PrivacyPolicy | None = None,
    regions: bool = True,
    grid: int = 48,
    region_z: float = 3.0,
    max_regions: int = 10,
    max_parents: int = 200,
    given_target: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """The subgroups where a target is predicted worst, found by searching phenotype rules and map regions.

    **What is searched.** Phenotype slices: every candidate's bins alone and, up to
    ``max_conditions``, conjunctions of bins of two (or three) different phenotypes. A continuous
    phenotype is cut at its quantiles (``quantile_bins``, cuts rounded to three significant
    digits) and at clinical cut points where known (:data:`CLINICAL_BINS`, extended by ``bins``);
    each bin and each tail (``x < c``, ``x >= c``) is an item; a category is an item. Every slice
    is written in the condition language (``age >= 70 and sex == "female"``) and
    ``parse_condition`` + ``evaluate`` select the same subjects. Map-region slices: areas of each
    2-D projection where the loss runs high (see :func:`~lse_panel.analysis.slice_regions.high_loss_regions`),
    returned as polygons.

    **How it is scored.** Each subject's loss (:func:`per_subject_loss`: absolute or squared error
    for regression, Brier score or log-loss for classification) drives the test and the ranking;
    R², MAE, AUROC and balanced accuracy are shown beside it for the slices returned. Each candidate
    is coded as a small integer per subject; one pass over the subjects fills the (count, Σ
    excess, Σ excess², Σ positive excess) table of every pair of candidates at once, and every
    slice's sums are range sums of those tables, so no slice costs a pass over the cohort.

    **The test.** A one-sided Welch t-test of the slice's mean loss against the rest of the
    cohort's, from those sums (at these sizes the t approximation is exact enough; the loss's
    right skew makes it, if anything, conservative). Benjamini–Hochberg controls the false
    discovery rate at ``fdr`` over every slice tried: each slice within the size limits, each
    region tested, and each three-condition slice pruned without scoring (counted with p = 1).
    Region slices are drawn on a random half of the subjects and tested on the other half only.
    The interval of the gap is the Welch interval at level 1 − fdr·R/m (R slices significant
    among m tried: Benjamini & Yekutieli's false-coverage-rate adjustment for selected intervals).

    **Ranking and folding.** By excess loss: the slice's size times how far its mean loss is above
    the cohort's (the total loss it carries beyond an average group of that size; SliceLine's
    error excess × size). A conjunction that is not significantly worse than the rest of its parent
    is dropped (it adds nothing), as is a parent whose remainder outside a worse child is not
    worse than the cohort (it is the child, diluted); then any slice sharing ≥ ``jaccard`` of its
    members with a better one is folded into it.

    **Privacy.** No slice smaller than ``policy.min_group_size``, or whose complement is, is tried
    or returned.

    Parameters
    ----------
    truth
        The target, one value per subject (0/1 codes for classification; NaN or -1 missing).
    predictions
        ``{latent kind: cross-fitted predictions of the target}``; each latent's metrics are shown
        side by side for every slice returned.
    candidates, specs
        ``{phenotype: column}`` to slice on, and their specs (type, units, categories).
    task
        ``"regression"`` or ``"classification"``.
    search
        The latent kinds whose failures are searched for (each separately; default all).
    projections
        ``{"<latent>/<method>": (n, 2) coordinates}`` to find map regions on.
    loss
        Per-subject loss (see :func:`per_subject_loss`).
    max_conditions
        1, 2 or 3 conditions per phenotype slice (3 is pruned, see above, and much slower).
    quantile_bins, bins
        Quantile bins per continuous candidate; extra or overriding clinical cut points.
    fdr
        False discovery rate controlled; also the level of the folding tests.
    top
        Slices returned per searched latent kind.
    min_fraction, max_fraction
        Smallest and largest slice tried, as fractions of the subjects with a loss (a slice
        larger than half the cohort is better read as its complement doing well).
    jaccard
        Member overlap above which a slice is folded into a better one.
    only_significant
        Return only slices significant at ``fdr`` (otherwise the best by excess, significant or not).
    policy
        Privacy policy (default: the application's settings).
    regions, grid, region_z, max_regions
        Whether to search map regions, and the region search's grid, flagging threshold (in
        standard errors) and most regions per projection.
    max_parents
        Most two-condition slices extended to three conditions.
    given_target
        Search on the loss beyond what subjects with a similar target value incur
        (:func:`loss_given_target`), so phenotypes that merely track the target's tails drop out;
        ``loss_slice``, ``loss_rest`` and ``gap`` are then in those adjusted terms.
    seed
        Seed for the half split of the region search.

    Returns
    -------
    pandas.DataFrame
        One row per slice and searched latent kind, best first within each kind: ``latent``,
        ``rank``, ``kind`` (``"phenotype"``/``"region"``), ``rule`` (condition text, or a region's
        projection and extent), ``condition`` (the parsed :class:`Condition`, or None), ``projection``,
        ``polygon_x``, ``polygon_y`` (a region's vertices, or None), ``n_conditions``, ``n``,
        ``n_rest``, ``loss`` (its name), ``loss_slice``, ``loss_rest``, ``gap``, ``gap_ci_low``,
        ``gap_ci_high``, ``p_value``, ``q_value``, ``significant``, ``excess``, ``tested_on``
        (``"all"``, or ``"held-out half"`` for regions), ``n_tried``; then, for every latent kind
        ``k`` and metric ``m`` of the task (``r2``, ``mae``; ``auroc``, ``balanced_accuracy``),
        ``m_k`` in the slice and ``m_rest_k`` in the rest. ``attrs`` holds ``task``, ``loss``,
        ``fdr``, ``ci_level`` and ``tried`` (per searched kind: phenotype slices, pruned triples,
        regions).
    """
    projections = dict(projections or {})
    search = list(predictions) if search is None else list(search)
    _check_inputs(truth, predictions, candidates, specs, task, search, projections, max_conditions, fdr, top)
    policy = policy or PrivacyPolicy()
    loss = loss or LOSSES[task][0]
    features = encode_candidates(candidates, specs, quantile_bins, {**CLINICAL_BINS, **dict(bins or {})})
    label = LOSS_NAMES[loss] + (" beyond the target's stratum" if given_target else "")
    rows, tried_by, level_by, masks = [], {}, {}, []
    for latent in search:
        outcome = _search(
            features, _loss(truth, predictions[latent], task, loss, given_target), projections,
            max_conditions=max_conditions, fdr=fdr, top=int(top), floor=max(policy.min_group_size, 2),
            min_fraction=min_fraction, max_fraction=max_fraction, jaccard=jaccard,
            only_significant=only_significant, regions=regions, grid=grid, region_z=region_z,
            max_regions=max_regions, max_parents=max_parents, seed=seed,
        )
        tried_by[latent], level_by[latent] = outcome.tried, outcome.ci_level
        for rank, s in enumerate(outcome.kept, start=1):
            rows.append(_row(s, features, outcome, latent=latent, rank=rank, loss=label, fdr=fdr))
            masks.append(s.mask)
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    frame = _side_by_side(frame, masks, truth, predictions, task, policy)
    frame.attrs.update(
        task=task, loss=label, given_target=given_target, fdr=fdr, ci_level=level_by, tried=tried_by
    )
    return frame


_COLUMNS = [
    "latent", "rank", "kind", "rule", "condition", "projection", "polygon_x", "polygon_y", "n_conditions",
    "n", "n_rest", "loss", "loss_slice", "loss_rest", "gap", "gap_ci_low", "gap_ci_high", "p_value", "q_value",
    "significant", "excess", "tested_on", "n_tried",
]


def _row(s: _Slice, features: CandidateCodes, outcome: _Outcome, *, latent: str, rank: int, loss: str, fdr: float) -> dict:
    """One row of the result table; ``loss`` is the loss's display name."""
    gap, se, df, _p = (float(v) for v in welch_greater(*s.sums, *s.rest))
    half = float(stats.t.ppf(0.5 + outcome.ci_level / 2, df)) * se if math.isfinite(df) else math.nan
    condition = _phenotype_condition(features, s.key) if s.kind == "phenotype" else None
    if condition is not None:
        rule = condition.to_text()
    else:
        xs, ys = s.polygon
        rule = (
            f"region of {s.projection}: x {xs.min():.3g} to {xs.max():.3g}, y {ys.min():.3g} to {ys.max():.3g} "
            f"({len(xs) - 1} vertices)"
        )
    return {
        "latent": latent, "rank": rank, "kind": s.kind, "rule": rule, "condition": condition,
        "projection": s.projection,
        "polygon_x": s.polygon[0].tolist() if s.polygon else None,
        "polygon_y": s.polygon[1].tolist() if s.polygon else None,
        "n_conditions": int((s.key >= 0).sum()) if s.key is not None else 0,
        "n": s.n, "n_rest": outcome.n_valid - s.n, "loss": loss,
        "loss_slice": outcome.mean_loss + float(s.sums[1] / s.sums[0]),
        "loss_rest": outcome.mean_loss + float(s.rest[1] / s.rest[0]),
        "gap": gap, "gap_ci_low": gap - half, "gap_ci_high": gap + half,
        "p_value": s.p, "q_value": s.q, "significant": bool(s.q <= fdr), "excess": s.excess,
        "tested_on": "held-out half" if s.kind == "region" else "all",
        "n_tried": sum(outcome.tried.values()),
    }


def _side_by_side(
    frame: pd.DataFrame,
    masks: list[np.ndarray],
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    task: str,
    policy: PrivacyPolicy,
) -> pd.DataFrame:
    """Every latent kind's metrics in each slice and its rest, as columns ``<metric>_<kind>``, ``<metric>_rest_<kind>``.

    Computed by :func:`~lse_panel.analysis.metrics.subgroup_metrics` (exact, one pass per eight
    groups), so AUROC, which has no per-slice sums, is computed for the returned slices only.
    """
    metrics = METRICS[task]
    columns = {f"{m}{part}_{k}": np.full(len(frame), np.nan) for k in predictions for m in metrics for part in ("", "_rest")}
    if masks:
        groups = {}
        for i, mask in enumerate(masks):
            groups[f"slice {i}"] = mask
            groups[f"rest {i}"] = ~mask
        long = subgroup_metrics(
            {"target": np.asarray(truth)}, {"target": task}, {k: {"target": v} for k, v in predictions.items()},
            groups, intervals=False,
        )
        for rec in long.itertuples(index=False):
            part, i = rec.group.split(" ")
            if policy.allows(rec.n):
                columns[f"{rec.metric}{'' if part == 'slice' else '_rest'}_{rec.latent}"][int(i)] = rec.value
    return pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
