"""How two groups of subjects differ, phenotype by phenotype: effect sizes, tests, false-discovery control."""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

import numba
import numpy as np
import pandas as pd
from scipy import stats

from lse_panel.analysis.histograms import Binning
from lse_panel.analysis.privacy import PrivacyPolicy

PhenotypeType = Literal["continuous", "binary", "categorical"]

COLUMNS = [
    "phenotype", "type", "n_a", "n_b", "mean_a", "mean_b", "sd_a", "sd_b", "difference",
    "effect", "effect_kind", "statistic", "test", "p_value", "q_value", "reason",
]  # fmt: skip
"""The columns of :func:`compare_groups`'s table, in order."""

_MAX_CODE = 4096
"""Binary and categorical phenotypes are small non-negative integer codes; larger codes are refused."""


@numba.njit(nogil=True, cache=True)
def _group_moments(values, member):  # pragma: no cover - compiled
    # Count, mean and Σ(x − mean)² for group A (bit 1) and B (bit 2) in two passes over the column:
    # two passes, not running sums of x², so the variance matches scipy's to rounding.
    n = np.zeros(2)
    s = np.zeros(2)
    for i in range(values.shape[0]):
        bits = member[i]
        v = np.float64(values[i])
        if bits == 0 or not math.isfinite(v):
            continue
        for g in range(2):
            if (bits >> g) & 1:
                n[g] += 1.0
                s[g] += v
    mean = np.zeros(2)
    for g in range(2):
        mean[g] = s[g] / n[g] if n[g] > 0 else np.nan
    m2 = np.zeros(2)
    for i in range(values.shape[0]):
        bits = member[i]
        v = np.float64(values[i])
        if bits == 0 or not math.isfinite(v):
            continue
        for g in range(2):
            if (bits >> g) & 1:
                m2[g] += (v - mean[g]) * (v - mean[g])
    return n, mean, m2


@numba.njit(nogil=True, cache=True)
def _group_code_counts(codes, member, n_codes):  # pragma: no cover - compiled
    # Codes outside 0..n_codes-1 (a missing-value code such as -1) are not counted.
    counts = np.zeros((2, n_codes), dtype=np.int64)
    for i in range(codes.shape[0]):
        bits = member[i]
        c = codes[i]
        if bits == 0 or c < 0 or c >= n_codes:
            continue
        for g in range(2):
            if (bits >> g) & 1:
                counts[g, c] += 1
    return counts


def group_bits(group_a: np.ndarray, group_b: np.ndarray | None, n: int) -> np.ndarray:
    """uint8 per subject: bit 0 for group A, bit 1 for group B (the complement of A when ``None``).

    Parameters
    ----------
    group_a, group_b
        Rows or boolean masks; ``group_b`` ``None`` means everyone outside ``group_a``.
    n
        Subjects.
    """
    member = np.zeros(n, dtype=np.uint8) if group_b is not None else np.full(n, 2, dtype=np.uint8)
    a = _as_group(group_a, n, "group_a")
    if group_b is None:
        member[a] = 1
        return member
    member[a] |= 1
    member[_as_group(group_b, n, "group_b")] |= 2
    return member


def _as_group(group: np.ndarray, n: int, what: str) -> np.ndarray:
    g = np.asarray(group)
    if g.dtype == np.bool_:
        if g.shape != (n,):
            raise ValueError(f"{what} is a boolean mask of shape {g.shape}; the table has {n} rows.")
        return g
    if g.ndim != 1 or (g.size and g.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be 1-D integer indices or a boolean mask; got {g.dtype} {g.shape}.")
    if g.size and (g.min() < 0 or g.max() >= n):
        raise ValueError(f"{what} has indices outside 0..{n - 1}.")
    return g


def _type_of(spec: Any) -> str:
    kind = getattr(spec, "type", spec)
    if kind not in ("continuous", "binary", "categorical"):
        raise ValueError(f"phenotype type must be 'continuous', 'binary' or 'categorical'; got {kind!r}.")
    return kind


def _nan_row(name: str, kind: str, reason: str, **known: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update(phenotype=name, type=kind, effect_kind="", test="", reason=reason)
    row.update(known)
    return row


def _continuous(name: str, moments: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    n, mean, m2 = moments
    na, nb = int(n[0]), int(n[1])
    known = {"n_a": na, "n_b": nb, "mean_a": mean[0], "mean_b": mean[1]}
    if na < 2 or nb < 2:
        return _nan_row(name, "continuous", f"fewer than 2 values in a group (n_a={na}, n_b={nb})", **known)
    var_a, var_b = m2[0] / (na - 1), m2[1] / (nb - 1)
    known.update(sd_a=math.sqrt(var_a), sd_b=math.sqrt(var_b), difference=mean[0] - mean[1])
    pooled = math.sqrt((m2[0] + m2[1]) / (na + nb - 2))
    if var_a == 0.0 and var_b == 0.0:
        return _nan_row(name, "continuous", "no variation within either group", **known)
    # Welch's t from the moments just computed: the same test as ttest_ind(a, b, equal_var=False)
    # without gathering both groups' values again.
    result = stats.ttest_ind_from_stats(
        mean[0], math.sqrt(var_a), na, mean[1], math.sqrt(var_b), nb, equal_var=False
    )
    return {
        **_nan_row(name, "continuous", ""),
        **known,
        "effect": (mean[0] - mean[1]) / pooled,
        "effect_kind": "cohen_d",
        "statistic": float(result.statistic),
        "test": "welch_t",
        "p_value": float(result.pvalue),
    }


def _codes(name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        # Missing as NaN: give it a code that is not counted.
        values = np.where(np.isfinite(values), values, -1)
        if not np.array_equal(values, np.round(values)):
            raise ValueError(f"phenotype {name!r} is declared binary/categorical but holds non-integer values.")
        values = values.astype(np.int64)
    elif values.dtype.kind == "b":
        values = values.astype(np.int8)
    elif values.dtype.kind not in "iu":
        raise ValueError(f"phenotype {name!r} must hold integer codes; got dtype {values.dtype}.")
    return values


def _binary(name: str, counts: np.ndarray) -> dict[str, Any]:
    counts = _padded(counts, 2)[:, :2]
    na, nb = int(counts[0].sum()), int(counts[1].sum())
    known: dict[str, Any] = {"n_a": na, "n_b": nb}
    if na == 0 or nb == 0:
        return _nan_row(name, "binary", f"a group has no values (n_a={na}, n_b={nb})", **known)
    pa, pb = counts[0, 1] / na, counts[1, 1] / nb
    known.update(
        mean_a=pa,
        mean_b=pb,
        sd_a=math.sqrt(pa * (1 - pa)),
        sd_b=math.sqrt(pb * (1 - pb)),
        difference=pa - pb,
        effect=2 * math.asin(math.sqrt(pa)) - 2 * math.asin(math.sqrt(pb)),
        effect_kind="cohen_h",
    )
    if counts[:, 1].sum() == 0 or counts[:, 0].sum() == 0:
        return _nan_row(name, "binary", "only one value present in both groups", **known)
    # Pearson's chi-square on the 2 × 2 table without Yates' correction: the square of the
    # two-proportion z statistic, with the same p-value.
    result = stats.chi2_contingency(counts, correction=False)
    return {**_nan_row(name, "binary", ""), **known, "statistic": float(result.statistic), "test": "chi2",
            "p_value": float(result.pvalue)}  # fmt: skip


def _categorical(name: str, counts: np.ndarray) -> dict[str, Any]:
    counts = counts[:, counts.sum(axis=0) > 0]  # a category neither group has carries no information
    na, nb = int(counts[0].sum()), int(counts[1].sum())
    known: dict[str, Any] = {"n_a": na, "n_b": nb, "effect_kind": "cramers_v"}
    if na == 0 or nb == 0:
        return _nan_row(name, "categorical", f"a group has no values (n_a={na}, n_b={nb})", **known)
    if counts.shape[1] < 2:
        return _nan_row(name, "categorical", "only one category present in both groups", **known)
    result = stats.chi2_contingency(counts, correction=False)
    # Cramér's V for a 2 × k table: sqrt(chi² / n); a magnitude, so it has no sign.
    return {**_nan_row(name, "categorical", ""), **known, "effect": math.sqrt(result.statistic / (na + nb)),
            "statistic": float(result.statistic), "test": "chi2", "p_value": float(result.pvalue)}  # fmt: skip


def _columns(table: pd.DataFrame | Mapping[str, np.ndarray], specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The compared phenotypes' columns as 1-D arrays of one length, or a ValueError naming the bad one."""
    names = list(specs)
    columns = {}
    for name in names:
        try:
            col = table[name]
        except KeyError:
            raise ValueError(f"phenotype {name!r} is in specs but not in the table; columns: {list(table.keys())}.") from None
        columns[name] = np.asarray(col.to_numpy() if isinstance(col, pd.Series) else col)
        if columns[name].ndim != 1:
            raise ValueError(f"phenotype {name!r} must be a 1-D column; got shape {columns[name].shape}.")
    for name in names:
        if columns[name].shape[0] != columns[names[0]].shape[0]:
            raise ValueError(f"phenotype {name!r} has {columns[name].shape[0]} rows; {names[0]!r} has {columns[names[0]].shape[0]}.")
    return columns


def _padded(counts: np.ndarray, width: int) -> np.ndarray:
    if counts.shape[1] >= width:
        return counts
    return np.pad(counts, ((0, 0), (0, width - counts.shape[1])))


PhenotypeStatistics = tuple[np.ndarray, np.ndarray, np.ndarray] | np.ndarray
"""What a comparison needs of one phenotype in two groups: ``(n, mean, m2)`` (each of shape ``(2,)``) of a
continuous phenotype, or the ``(2, k)`` code counts of a binary or categorical one."""


def comparison_statistics(
    columns: Mapping[str, np.ndarray], specs: Mapping[str, PhenotypeType | Any], member: np.ndarray
) -> dict[str, PhenotypeStatistics]:
    """The sufficient statistics of a two-group comparison, one O(n) pass per phenotype.

    They merge across row blocks (:func:`merge_comparison_statistics`), so a cluster computes them per
    partition and adds; :func:`comparison_table` turns them into the table.

    Parameters
    ----------
    columns
        Phenotype name → values, every column the same length as ``member``.
    specs
        The phenotypes to compare, name → type or spec.
    member
        uint8 per subject: bit 0 for group A, bit 1 for group B (:func:`group_bits`).

    Returns
    -------
    dict
        Phenotype → :data:`PhenotypeStatistics`.
    """
    out: dict[str, PhenotypeStatistics] = {}
    for name in specs:
        kind = _type_of(specs[name])
        values = columns[name]
        if kind == "continuous":
            out[name] = _group_moments(values, member)
            continue
        codes = _codes(name, values)
        top = int(codes.max()) + 1 if codes.size else 0
        if top > _MAX_CODE:
            raise ValueError(f"phenotype {name!r} has category codes up to {top - 1}; at most {_MAX_CODE - 1} are supported.")
        out[name] = _group_code_counts(codes, member, max(top, 2 if kind == "binary" else 1))
    return out


def merge_comparison_statistics(parts: list[dict[str, PhenotypeStatistics]]) -> dict[str, PhenotypeStatistics]:
    """Statistics of the union of disjoint row blocks: counts add, moments combine exactly (Chan et al.).

    Parameters
    ----------
    parts
        :func:`comparison_statistics` of each block (e.g. each partition of a cluster's cohort).

    Returns
    -------
    dict
        Phenotype → statistics of all blocks together.
    """
    merged: dict[str, PhenotypeStatistics] = {}
    for part in parts:
        for name, value in part.items():
            found = merged.get(name)
            if found is None:
                merged[name] = value
            elif isinstance(value, tuple):
                merged[name] = _merge_moments(found, value)  # type: ignore[arg-type]
            else:
                width = max(found.shape[1], value.shape[1])  # type: ignore[union-attr]
                merged[name] = _padded(found, width) + _padded(value, width)  # type: ignore[arg-type]
    return merged


def _merge_moments(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(nb > 0, mb, 0.0) - np.where(na > 0, ma, 0.0)
        mean = np.where(na == 0, mb, np.where(nb == 0, ma, ma + delta * nb / np.where(n > 0, n, 1)))
        m2 = np.where(na == 0, m2b, np.where(nb == 0, m2a, m2a + m2b + delta * delta * na * nb / np.where(n > 0, n, 1)))
    return n, mean, m2


def comparison_table(specs: Mapping[str, PhenotypeType | Any], statistics: Mapping[str, PhenotypeStatistics]) -> pd.DataFrame:
    """:func:`compare_groups`' table from :func:`comparison_statistics` (merged or not).

    Parameters
    ----------
    specs
        The phenotypes compared, name → type or spec.
    statistics
        Phenotype → its statistics.

    Returns
    -------
    pandas.DataFrame
        One row per phenotype with :data:`COLUMNS`, sorted by ``|effect|`` descending (NaN last).
    """
    handlers = {"continuous": _continuous, "binary": _binary, "categorical": _categorical}
    rows = [handlers[_type_of(specs[name])](name, statistics[name]) for name in specs]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame[["n_a", "n_b"]] = frame[["n_a", "n_b"]].fillna(0).astype(np.int64)
    tested = frame["p_value"].notna().to_numpy()
    if tested.any():
        frame.loc[tested, "q_value"] = stats.false_discovery_control(frame.loc[tested, "p_value"].to_numpy(), method="bh")
    order = np.argsort(-frame["effect"].abs().fillna(-1.0).to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def compare_groups(
    table: pd.DataFrame | Mapping[str, np.ndarray],
    specs: Mapping[str, PhenotypeType | Any],
    group_a: np.ndarray,
    group_b: np.ndarray | None = None,
) -> pd.DataFrame:
    """Compare two groups on every phenotype, largest standardised difference first.

    Per type:

    - continuous: means and SDs (ddof=1); ``difference`` = mean A − mean B; ``effect`` = Cohen's
      d with the pooled SD; Welch's unequal-variance t-test (``scipy.stats.ttest_ind_from_stats``
      on the groups' moments: the same numbers as ``ttest_ind(a, b, equal_var=False)``).
    - binary (codes 0/1): ``mean_*`` are the prevalences of 1, ``sd_*`` = sqrt(p(1 − p));
      ``difference`` = p_A − p_B; ``effect`` = Cohen's h = 2·asin√p_A − 2·asin√p_B (the
      standardised difference for proportions, on the same small/medium/large scale as d);
      Pearson's chi-square on the 2 × 2 table without continuity correction, which equals the
      two-proportion z-test.
    - categorical (codes 0..k−1): chi-square on the 2 × k table; ``effect`` = Cramér's V (≥ 0).

    ``q_value`` is the Benjamini–Hochberg adjusted p-value (``scipy.stats.false_discovery_control``)
    over the phenotypes that have one. Missing values (NaN, or codes outside the categories such as
    −1) are left out; ``n_a``/``n_b`` count the rest. Rows that cannot be tested (a group too small,
    no variation) keep NaN with a ``reason``. Everything is exact at any size: one O(n) pass per
    phenotype, no subsampling.

    Parameters
    ----------
    table
        Phenotypes, one row per subject (DataFrame or mapping of 1-D arrays); may be memory-mapped.
    specs
        ``{phenotype: "continuous" | "binary" | "categorical"}``, or ``PhenotypeSpec`` objects
        (anything with a ``type``); the phenotypes to compare.
    group_a
        Indices (or a boolean mask) of the first group, e.g. the selection.
    group_b
        The second group; ``None`` means everyone not in ``group_a``. Groups may overlap.

    Returns
    -------
    pandas.DataFrame
        One row per phenotype with :data:`COLUMNS`, sorted by ``|effect|`` descending (NaN last).
    """
    if not specs:
        return pd.DataFrame(columns=COLUMNS)
    columns = _columns(table, specs)
    n = next(iter(columns.values())).shape[0]
    member = group_bits(group_a, group_b, n)
    return comparison_table(specs, comparison_statistics(columns, specs, member))


TABLE_COLUMNS = ["group", "reference", *COLUMNS, "hidden"]
"""Columns of :func:`compare_with_reference`'s table: each group's :func:`compare_groups` rows, labelled."""


def compare_with_reference(
    table: pd.DataFrame | Mapping[str, np.ndarray],
    specs: Mapping[str, Any],
    groups: Mapping[str, np.ndarray],
    reference: np.ndarray | None,
    *,
    reference_label: str = "comparison",
    policy: PrivacyPolicy | None = None,
) -> pd.DataFrame:
    """Each group against one reference group on every phenotype of ``specs``, with the privacy floor applied.

    Parameters
    ----------
    table
        Phenotype name → values (e.g. ``cohort.phenotype_columns``).
    specs
        The phenotypes compared, name → spec (or type), as :func:`compare_groups` takes them.
    groups
        ``{label: rows or mask}``, e.g. the selection and saved subgroups.
    reference
        Rows or mask of the comparison group; ``None`` means, for each group, everyone outside it.
    reference_label
        Written in the ``reference`` column.
    policy
        Rows where either group has fewer non-missing values than ``policy.min_group_size`` are
        masked (:meth:`PrivacyPolicy.filter_table`) and flagged in ``hidden``.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS`: for each group, :func:`compare_groups`' rows (sorted by
        ``|effect|``, with BH q-values over that group's phenotypes).
    """
    columns = _columns(table, specs)
    n = next(iter(columns.values())).shape[0] if columns else 0
    statistics = {
        label: comparison_statistics(columns, specs, group_bits(rows, reference, n)) for label, rows in groups.items()
    }
    return comparison_tables(specs, statistics, reference_label=reference_label, policy=policy)


def comparison_tables(
    specs: Mapping[str, Any],
    statistics: Mapping[str, Mapping[str, PhenotypeStatistics]],
    *,
    reference_label: str = "comparison",
    policy: PrivacyPolicy | None = None,
) -> pd.DataFrame:
    """:func:`compare_with_reference`'s table from each group's :func:`comparison_statistics` against the reference.

    Parameters
    ----------
    specs
        The phenotypes compared.
    statistics
        ``{label: statistics of that group (bit 0) and the reference (bit 1)}``, from one pass over
        the cohort or merged from a cluster's partitions.
    reference_label, policy
        As :func:`compare_with_reference`.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS`.
    """
    policy = policy if policy is not None else PrivacyPolicy()
    parts = [
        comparison_table(specs, stats_).assign(group=label, reference=reference_label)
        for label, stats_ in statistics.items()
    ]
    if not parts or not specs:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    long = pd.concat(parts, ignore_index=True)
    hidden = np.minimum(long["n_a"].to_numpy(), long["n_b"].to_numpy()) < policy.min_group_size
    long = policy.filter_table(long, ["n_a", "n_b"])
    long["hidden"] = hidden
    return long[TABLE_COLUMNS]


def distribution_frames(
    binning: Binning, groups: Mapping[str, np.ndarray | None], *, policy: PrivacyPolicy | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One phenotype's distribution in each group (the phenotype's shared bins), leaving out groups below the floor.

    Parameters
    ----------
    binning
        The phenotype's bins over the whole cohort.
    groups
        ``{label: rows, mask, or None for everyone}``.
    policy
        A group with fewer non-missing values than ``policy.min_group_size`` is not drawn.

    Returns
    -------
    frame : pandas.DataFrame
        :func:`~lse_panel.analysis.histograms.histogram_frame` (continuous) or
        :func:`~lse_panel.analysis.histograms.category_frame` output for the drawn groups.
    hidden : dict
        ``{label: reason}`` for the groups left out.
    """
    policy = policy if policy is not None else PrivacyPolicy()
    counts: dict[str, np.ndarray] = {}
    hidden: dict[str, str] = {}
    for label, rows in groups.items():
        c = binning.counts(rows)
        reason = policy.check(int(c.sum()), label)
        if reason is None:
            counts[label] = c
        else:
            hidden[label] = reason
    return binning.frame(counts), hidden
