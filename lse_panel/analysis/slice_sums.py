"""Slice search's sufficient statistics: candidates coded as small integers, sums per slice in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import numba
import numpy as np

from lse_panel.analysis.conditions import Compare

__all__ = [
    "CLINICAL_BINS",
    "COUNT",
    "POSITIVE",
    "SUM",
    "SUM_SQ",
    "Bins",
    "CandidateCodes",
    "encode_candidates",
    "pair_sums",
    "single_sums",
    "slice_mask",
    "triple_sums",
]

@dataclass(frozen=True)
class Bins:
    """Cut points a continuous phenotype is split at, and the units they are written in.

    A phenotype is cut at ``x < c1``, ``c1 <= x < c2``, ..., ``x >= ck``; the search also tries
    the tails ``x < cj`` and ``x >= cj``. The bins apply only when the phenotype's units match
    ``units`` (or either is blank), so an ``lvef`` stored as a fraction is not cut at 40.
    """

    cuts: tuple[float, ...]
    units: str = ""
    source: str = ""


CLINICAL_BINS: dict[str, Bins] = {
    "age": Bins((40, 50, 60, 70, 80), "years", "decades"),
    "bmi": Bins((18.5, 25, 30, 35), "kg/m²", "WHO: underweight, overweight, obese classes I and II"),
    "lvef": Bins((40, 50), "%", "ESC 2021 heart failure: reduced < 40, mildly reduced 40–49"),
    "qrs_duration": Bins((100, 120), "ms", "incomplete and complete bundle-branch block"),
    "sbp": Bins((120, 140, 160), "mmHg", "ESC/ESH: high-normal, grade 1 and grade 2 hypertension"),
    "heart_rate": Bins((60, 100), "bpm", "bradycardia, tachycardia"),
    "pr_interval": Bins((120, 200), "ms", "short PR, first-degree AV block"),
    "qtc": Bins((450, 470), "ms", "prolonged QTc in men, in women"),
}
"""Clinical cut points by phenotype name, used where a bundle has a phenotype of that name and
units. Extend or override per call with ``find_slices(..., bins={"egfr": Bins((60, 90), "mL/min")})``."""

# Per-subject sums accumulated for every slice: count, Σ excess, Σ excess², Σ max(excess, 0), where
# excess = loss − the cohort's mean loss (centring keeps the variances free of cancellation).
COUNT, SUM, SUM_SQ, POSITIVE = range(4)



# ----------------------------------------------------------------------------- candidate encoding


@dataclass
class CandidateCodes:
    """Every candidate phenotype as a small integer code per subject, and the items (code ranges) tried."""

    names: list[str]
    codes: np.ndarray  # (F, n) uint8; the last code of each feature means missing
    codes_t: np.ndarray  # (n, F), the same codes subject-major for the accumulation kernels
    width: np.ndarray  # (F,) codes per feature, the missing code included
    item_feature: np.ndarray  # (I,) feature of each item
    item_lo: np.ndarray  # (I,) an item holds where lo <= code < hi
    item_hi: np.ndarray
    item_conditions: list[tuple[Compare, ...]]

    def items_of(self) -> list[np.ndarray]:
        """Each feature's item ids, in increasing order."""
        return [np.flatnonzero(self.item_feature == f) for f in range(len(self.names))]

    def row_of(self, items: Sequence[int]) -> int:
        """Row of a one- or two-item slice in :func:`single_sums`'s rows followed by :func:`pair_sums`'s."""
        if len(items) == 1:
            return int(items[0])
        i, j = sorted(int(v) for v in items)  # item ids increase with the feature
        a, b = int(self.item_feature[i]), int(self.item_feature[j])
        counts, first, block = self._layout
        return int(self.item_feature.size + block[a, b] + (i - first[a]) * counts[b] + (j - first[b]))

    @cached_property
    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.bincount(self.item_feature, minlength=len(self.names))
        first = np.concatenate([[0], np.cumsum(counts)])
        # Pairs of features come in np.triu_indices order, (0, 1), (0, 2), ..., (1, 2), ..., as in pair_sums.
        a, b = np.triu_indices(len(self.names), k=1)
        block = np.zeros((len(self.names), len(self.names)), dtype=np.int64)
        block[a, b] = np.concatenate([[0], np.cumsum(counts[a] * counts[b])[:-1]]) if a.size else []
        return counts, first, block


def _nice(value: float) -> float:
    """Three significant digits, so a quantile cut reads ``51.4``, not ``51.37264``."""
    return float(f"{value:.3g}") if value != 0 else 0.0


def _units_match(bins: Bins, spec: Any) -> bool:
    return not bins.units or not getattr(spec, "units", "") or bins.units == spec.units


def _continuous_items(name: str, column: np.ndarray, binnings: list[tuple[float, ...]]):
    """Codes for one continuous column and the ranges of codes (bins, lower and upper tails) to try."""
    col = np.asarray(column)
    dtype = col.dtype if col.dtype.kind == "f" else np.dtype(np.float64)
    col = col.astype(dtype, copy=False)
    finite = col[np.isfinite(col)]
    if finite.size == 0:
        return np.zeros(col.shape, np.uint8), 1, []
    lo, hi = float(finite.min()), float(finite.max())
    # A cut is compared in the column's own dtype, exactly as conditions.evaluate compares it, so a
    # slice's rule re-applies to the same subjects; cuts that collapse in that dtype are merged.
    cut_of: dict[float, float] = {}
    kept = []
    for cuts in binnings:
        kept_cuts = []
        for c in cuts:
            typed = float(np.asarray(c, dtype=dtype))
            if lo < typed <= hi:
                cut_of.setdefault(typed, float(c))
                kept_cuts.append(typed)
        kept.append(sorted(set(kept_cuts)))
    union = np.array(sorted(cut_of), dtype=dtype)
    top = union.size + 1  # codes 0..union.size are values; top is missing
    codes = np.searchsorted(union, col, side="right").astype(np.uint8)
    codes[~np.isfinite(col)] = top
    index = {c: i + 1 for i, c in enumerate(union.tolist())}
    ranges: set[tuple[int, int]] = set()
    for cuts in kept:
        ks = [index[c] for c in cuts]
        edges = [0, *ks, top]
        ranges.update(zip(edges[:-1], edges[1:]))
        ranges.update((0, k) for k in ks)
        ranges.update((k, top) for k in ks)
    ranges.discard((0, top))
    items = []
    for a, b in sorted(ranges):
        parts = []
        if a > 0:
            parts.append(Compare(name, ">=", cut_of[float(union[a - 1])]))
        if b < top:
            parts.append(Compare(name, "<", cut_of[float(union[b - 1])]))
        items.append((a, b, tuple(parts)))
    return codes, top + 1, items


def _categorical_items(name: str, column: np.ndarray, categories: Sequence[str]):
    k = len(categories)
    col = np.asarray(column)
    codes = np.where((col >= 0) & (col < k), col, k).astype(np.uint8)
    return codes, k + 1, [(c, c + 1, (Compare(name, "==", label),)) for c, label in enumerate(categories)]


def _quantile_cuts(column: np.ndarray, n_bins: int) -> tuple[float, ...]:
    col = np.asarray(column, dtype=np.float64)
    finite = col[np.isfinite(col)]
    if finite.size == 0 or n_bins < 2:
        return ()
    return tuple(sorted({_nice(q) for q in np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])}))


def encode_candidates(
    candidates: Mapping[str, np.ndarray], specs: Mapping[str, Any], quantile_bins: int, bins: Mapping[str, Bins]
) -> CandidateCodes:
    names, codes, widths = [], [], []
    item_feature, item_lo, item_hi, item_conditions = [], [], [], []
    for name, column in candidates.items():
        spec = specs[name]
        if spec.type == "continuous":
            binnings = [_quantile_cuts(column, quantile_bins)]
            if name in bins and _units_match(bins[name], spec):
                binnings.append(tuple(bins[name].cuts))
            code, width, items = _continuous_items(name, column, binnings)
        else:
            if len(spec.categories) > 254:
                raise ValueError(
                    f"phenotype {name!r} has {len(spec.categories)} categories; slices are searched on at most "
                    "254. Leave it out of the candidates or group its categories."
                )
            code, width, items = _categorical_items(name, column, spec.categories)
        if not items:
            continue
        f = len(names)
        names.append(name)
        codes.append(code)
        widths.append(width)
        for lo, hi, conds in items:
            item_feature.append(f)
            item_lo.append(lo)
            item_hi.append(hi)
            item_conditions.append(conds)
    n = len(next(iter(candidates.values()))) if candidates else 0
    stacked = np.vstack(codes) if codes else np.zeros((0, n), np.uint8)
    return CandidateCodes(
        names=names,
        codes=stacked,
        codes_t=np.ascontiguousarray(stacked.T),
        width=np.array(widths, dtype=np.int64),
        item_feature=np.array(item_feature, dtype=np.int64),
        item_lo=np.array(item_lo, dtype=np.int64),
        item_hi=np.array(item_hi, dtype=np.int64),
        item_conditions=item_conditions,
    )


# ----------------------------------------------------------------------------- sums per slice


@numba.njit(nogil=True, cache=True)
def _pair_tables(codes_t, sums_in, first, second, width, offsets, total):  # pragma: no cover - compiled
    # One pass over the subjects serves every pair of features: each subject adds its sums to the
    # cell (its code on the first feature, its code on the second) of every pair's 2-D table.
    n_sums = sums_in.shape[1]
    out = np.zeros((total, n_sums))
    for i in range(codes_t.shape[0]):
        if sums_in[i, 0] == 0.0:
            continue
        for p in range(first.shape[0]):
            cell = offsets[p] + codes_t[i, first[p]] * width[second[p]] + codes_t[i, second[p]]
            for k in range(n_sums):
                out[cell, k] += sums_in[i, k]
    return out


@numba.njit(nogil=True, cache=True)
def _feature_tables(codes_t, sums_in, rows, offsets, total):  # pragma: no cover - compiled
    # The 1-D table of every feature over the given subjects (a slice's members, or everyone).
    n_sums = sums_in.shape[1]
    out = np.zeros((total, n_sums))
    for r in range(rows.shape[0]):
        i = rows[r]
        for f in range(codes_t.shape[1]):
            cell = offsets[f] + codes_t[i, f]
            for k in range(n_sums):
                out[cell, k] += sums_in[i, k]
    return out


def _prefix(table: np.ndarray) -> np.ndarray:
    """Cumulative sums along the code axes with a leading zero, so a range sum is two lookups."""
    out = table
    for axis in range(table.ndim - 1):
        out = np.cumsum(out, axis=axis)
        pad = [(0, 0)] * table.ndim
        pad[axis] = (1, 0)
        out = np.pad(out, pad)
    return out


def single_sums(features: CandidateCodes, sums_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(features.width)])
    rows = np.flatnonzero(sums_in[:, COUNT] > 0)
    tables = _feature_tables(features.codes_t, sums_in, rows, offsets, int(offsets[-1]))
    out = np.empty((features.item_feature.size, sums_in.shape[1]))
    for f, items in enumerate(features.items_of()):
        prefix = _prefix(tables[offsets[f] : offsets[f + 1]])
        out[items] = prefix[features.item_hi[items]] - prefix[features.item_lo[items]]
    keys = np.full((out.shape[0], 3), -1, dtype=np.int64)
    keys[:, 0] = np.arange(out.shape[0])
    return keys, out


def pair_sums(features: CandidateCodes, sums_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_features = len(features.names)
    first, second = np.triu_indices(n_features, k=1)
    sizes = features.width[first] * features.width[second]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    tables = _pair_tables(features.codes_t, sums_in, first, second, features.width, offsets, int(offsets[-1]))
    items_of = features.items_of()
    all_keys, all_sums = [], []
    for p, (a, b) in enumerate(zip(first, second)):
        ia, ib = items_of[a], items_of[b]
        if not ia.size or not ib.size:
            continue
        table = tables[offsets[p] : offsets[p + 1]].reshape(features.width[a], features.width[b], -1)
        pre = _prefix(table)
        la, ha = features.item_lo[ia], features.item_hi[ia]
        lb, hb = features.item_lo[ib], features.item_hi[ib]
        rect = pre[np.ix_(ha, hb)] - pre[np.ix_(la, hb)] - pre[np.ix_(ha, lb)] + pre[np.ix_(la, lb)]
        all_sums.append(rect.reshape(-1, sums_in.shape[1]))
        keys = np.full((ia.size * ib.size, 3), -1, dtype=np.int64)
        keys[:, 0] = np.repeat(ia, ib.size)
        keys[:, 1] = np.tile(ib, ia.size)
        all_keys.append(keys)
    if not all_keys:
        return np.zeros((0, 3), np.int64), np.zeros((0, sums_in.shape[1]))
    return np.vstack(all_keys), np.vstack(all_sums)


def slice_mask(features: CandidateCodes, key: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Boolean mask of the subjects a slice (its item ids, -1 padded) holds for."""
    mask = valid.copy()
    for item in key[key >= 0]:
        codes = features.codes[features.item_feature[item]]
        mask &= (codes >= features.item_lo[item]) & (codes < features.item_hi[item])
    return mask


def triple_sums(
    features: CandidateCodes,
    sums_in: np.ndarray,
    parent_keys: np.ndarray,
    parent_sums: np.ndarray,
    threshold: float,
    max_parents: int,
    valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Three-condition slices grown from the promising pairs, SliceLine-style pruned.

    A child of a slice can carry at most the slice's positive excess, Σ max(excess, 0) over its
    members; a pair whose bound is at or below ``threshold`` (the score a slice needs to make the
    short list) cannot have a child worth scoring and is not extended. Of the rest, the
    ``max_parents`` with the largest bound are. Returns the children (deduplicated: a triple grows
    from any of its three pairs) and how many distinct triples exist in all.
    """
    offsets = np.concatenate([[0], np.cumsum(features.width)])
    items_of = features.items_of()
    bound = parent_sums[:, POSITIVE]
    parents = np.flatnonzero(bound > threshold)
    parents = parents[np.argsort(-bound[parents], kind="stable")][:max_parents]
    all_keys, all_sums = [], []
    for parent in parents:
        key = parent_keys[parent]
        used = set(features.item_feature[key[:2]].tolist())
        rows = np.flatnonzero(slice_mask(features, key, valid))
        if rows.size == 0:
            continue
        tables = _feature_tables(features.codes_t, sums_in, rows, offsets, int(offsets[-1]))
        for h, items in enumerate(items_of):
            if h in used or not items.size:
                continue
            prefix = _prefix(tables[offsets[h] : offsets[h + 1]])
            all_sums.append(prefix[features.item_hi[items]] - prefix[features.item_lo[items]])
            keys = np.empty((items.size, 3), dtype=np.int64)
            keys[:, :2] = key[:2]
            keys[:, 2] = items
            all_keys.append(keys)
    counts = np.array([items.size for items in items_of], dtype=np.float64)
    # Distinct triples of items on three different features: the third elementary symmetric polynomial.
    p1, p2, p3 = counts.sum(), (counts**2).sum(), (counts**3).sum()
    n_possible = int(round((p1**3 - 3 * p1 * p2 + 2 * p3) / 6))
    if not all_keys:
        return np.zeros((0, 3), np.int64), np.zeros((0, sums_in.shape[1])), n_possible
    keys = np.sort(np.vstack(all_keys), axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    return keys[first], np.vstack(all_sums)[first], n_possible


