"""How two groups of subjects differ, phenotype by phenotype, from per-group sums: effect sizes, tests, false-discovery control."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numba
import numpy as np
import pandas as pd
from scipy import special, stats

from lse_panel.analysis.histograms import Binning
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.selection import group_rows

PhenotypeType = Literal["continuous", "binary", "categorical"]

COLUMNS = [
    "phenotype", "type", "n_a", "n_b", "mean_a", "mean_b", "sd_a", "sd_b", "difference",
    "effect", "effect_kind", "statistic", "test", "p_value", "q_value", "reason",
]  # fmt: skip
"""The columns of :func:`compare_groups`'s table, in order."""

_MAX_CODE = 4096
"""Binary and categorical phenotypes are small non-negative integer codes; larger codes are refused."""


# ----------------------------------------------------------------------------- per-group statistics


@numba.njit(nogil=True, cache=True)
def _moments(values, shift, rows):  # pragma: no cover - compiled
    # Count, Σ(x − shift) and Σ(x − shift)² over the finite values at ``rows``. With the shift at the
    # cohort's mean, the variance Σ(x−c)² − (Σ(x−c))²/n keeps ~15 digits (no two-pass needed).
    out = np.zeros(3)
    for k in range(rows.shape[0]):
        v = np.float64(values[rows[k]])
        if math.isfinite(v):
            d = v - shift
            out[0] += 1.0
            out[1] += d
            out[2] += d * d
    return out


@numba.njit(nogil=True, cache=True)
def _code_counts(codes, rows, n_codes):  # pragma: no cover - compiled
    # Codes outside 0..n_codes-1 (a missing-value code such as -1) are not counted.
    counts = np.zeros(n_codes, dtype=np.int64)
    for k in range(rows.shape[0]):
        c = codes[rows[k]]
        if 0 <= c < n_codes:
            counts[c] += 1
    return counts


@dataclass(frozen=True, eq=False)
class PhenotypeStatistics:
    """Sufficient statistics of one group for comparing phenotypes; they add across parts and subtract.

    Attributes
    ----------
    values
        Per phenotype: for a continuous one ``[n, Σ(x − c), Σ(x − c)²]`` (float64, ``c`` its
        shift); for a binary or categorical one the count of each code (int64).
    shift
        Per continuous phenotype, the shift ``c`` (the cohort's mean), shared by every group.
    """

    values: Mapping[str, np.ndarray]
    shift: Mapping[str, float]

    def _combine(self, other: PhenotypeStatistics, sign: int) -> PhenotypeStatistics:
        if not isinstance(other, PhenotypeStatistics):
            return NotImplemented  # type: ignore[return-value]
        if set(other.values) != set(self.values) or dict(other.shift) != dict(self.shift):
            raise ValueError("these phenotype statistics come from different phenotypes or shifts.")
        return PhenotypeStatistics({k: v + sign * other.values[k] for k, v in self.values.items()}, self.shift)

    def __add__(self, other: PhenotypeStatistics) -> PhenotypeStatistics:
        return self._combine(other, 1)

    def __sub__(self, other: PhenotypeStatistics) -> PhenotypeStatistics:
        return self._combine(other, -1)


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


@dataclass(frozen=True, eq=False)
class PhenotypeSums:
    """A cohort's phenotypes ready to sum over any rows: codes converted and shifts fixed once.

    Build with :meth:`build`; :meth:`rows_sum` gives a group's :class:`PhenotypeStatistics` in
    one pass over its rows (the ``rows_sum`` a :meth:`GroupSet.sum_over` takes).

    Attributes
    ----------
    specs
        Phenotype → type (``"continuous"``, ``"binary"``, ``"categorical"``).
    columns
        Continuous values, or integer codes of binary/categorical phenotypes.
    shift
        Per continuous phenotype, its mean over the cohort.
    n_codes
        Per binary/categorical phenotype, the number of codes counted.
    """

    specs: Mapping[str, str]
    columns: Mapping[str, np.ndarray]
    shift: Mapping[str, float]
    n_codes: Mapping[str, int]

    @property
    def n(self) -> int:
        return next(iter(self.columns.values())).shape[0] if self.columns else 0

    @classmethod
    def build(cls, table: pd.DataFrame | Mapping[str, np.ndarray], specs: Mapping[str, PhenotypeType | Any]) -> PhenotypeSums:
        """Read the columns of ``specs`` from ``table`` and check them.

        Parameters
        ----------
        table
            Phenotypes, one row per subject (DataFrame or mapping of 1-D arrays); may be memory-mapped.
        specs
            ``{phenotype: "continuous" | "binary" | "categorical"}``, or ``PhenotypeSpec`` objects
            (anything with a ``type``).
        """
        kinds = {name: _type_of(spec) for name, spec in specs.items()}
        columns: dict[str, np.ndarray] = {}
        shift: dict[str, float] = {}
        n_codes: dict[str, int] = {}
        n = None
        for name, kind in kinds.items():
            try:
                col = table[name]
            except KeyError:
                raise ValueError(f"phenotype {name!r} is in specs but not in the table; columns: {list(table.keys())}.") from None
            col = np.asarray(col.to_numpy() if isinstance(col, pd.Series) else col)
            if col.ndim != 1:
                raise ValueError(f"phenotype {name!r} must be a 1-D column; got shape {col.shape}.")
            if n is None:
                n = col.shape[0]
            elif col.shape[0] != n:
                raise ValueError(f"phenotype {name!r} has {col.shape[0]} rows; {next(iter(kinds))!r} has {n}.")
            if kind == "continuous":
                finite = col[np.isfinite(col)] if col.dtype.kind == "f" else col
                shift[name] = float(finite.mean(dtype=np.float64)) if finite.size else 0.0
            else:
                col = _codes(name, col)
                top = int(col.max()) + 1 if col.size else 0
                if kind == "categorical" and top > _MAX_CODE:
                    raise ValueError(
                        f"phenotype {name!r} has category codes up to {top - 1}; at most {_MAX_CODE - 1} are supported."
                    )
                n_codes[name] = 2 if kind == "binary" else max(top, 1)
            columns[name] = col
        return cls(kinds, columns, shift, n_codes)

    def rows_sum(self, rows: np.ndarray) -> PhenotypeStatistics:
        """The :class:`PhenotypeStatistics` of the subjects at ``rows`` (indices or a boolean mask)."""
        rows = group_rows(rows, self.n)
        values = {
            name: _moments(col, self.shift[name], rows) if name in self.shift else _code_counts(col, rows, self.n_codes[name])
            for name, col in self.columns.items()
        }
        return PhenotypeStatistics(values, self.shift)


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


def _continuous(name: str, a: np.ndarray, b: np.ndarray, shift: float) -> dict[str, Any]:
    na, nb = int(a[0]), int(b[0])
    mean_a = shift + a[1] / na if na else math.nan
    mean_b = shift + b[1] / nb if nb else math.nan
    known = {"n_a": na, "n_b": nb, "mean_a": mean_a, "mean_b": mean_b}
    if na < 2 or nb < 2:
        return _nan_row(name, "continuous", f"fewer than 2 values in a group (n_a={na}, n_b={nb})", **known)
    m2a, m2b = max(a[2] - a[1] * a[1] / na, 0.0), max(b[2] - b[1] * b[1] / nb, 0.0)
    var_a, var_b = m2a / (na - 1), m2b / (nb - 1)
    known.update(sd_a=math.sqrt(var_a), sd_b=math.sqrt(var_b), difference=mean_a - mean_b)
    pooled = math.sqrt((m2a + m2b) / (na + nb - 2))
    # Relative to the spread around the shift: below ~1e-12 the values are all equal.
    if m2a <= 1e-12 * a[2] and m2b <= 1e-12 * b[2]:
        return _nan_row(name, "continuous", "no variation within either group", **known)
    # Welch's t from the moments: the same test as ttest_ind(a, b, equal_var=False) without
    # gathering both groups' values; scipy.special directly, as ttest_ind_from_stats costs ~0.3 ms
    # a call in checks and wrapping (19 phenotypes × every group, on every selection).
    sa, sb = var_a / na, var_b / nb
    t = (mean_a - mean_b) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa * sa / (na - 1) + sb * sb / (nb - 1))
    return {
        **_nan_row(name, "continuous", ""),
        **known,
        "effect": (mean_a - mean_b) / pooled,
        "effect_kind": "cohen_d",
        "statistic": t,
        "test": "welch_t",
        "p_value": float(2.0 * special.stdtr(df, -abs(t))),
    }


def _binary(name: str, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    counts = np.stack([a, b])
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
    statistic, p_value = _chi_square(counts)
    return {**_nan_row(name, "binary", ""), **known, "statistic": statistic, "test": "chi2", "p_value": p_value}


def _chi_square(counts: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square of a contingency table (no continuity correction) and its p-value.

    ``scipy.stats.chi2_contingency(counts, correction=False)``'s numbers, without its ~0.3 ms of
    checks per call.
    """
    observed = counts.astype(np.float64)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    return statistic, float(special.chdtrc(dof, statistic))


def _categorical(name: str, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    counts = np.stack([a, b])
    counts = counts[:, counts.sum(axis=0) > 0]  # a category neither group has carries no information
    na, nb = int(counts[0].sum()), int(counts[1].sum())
    known: dict[str, Any] = {"n_a": na, "n_b": nb, "effect_kind": "cramers_v"}
    if na == 0 or nb == 0:
        return _nan_row(name, "categorical", f"a group has no values (n_a={na}, n_b={nb})", **known)
    if counts.shape[1] < 2:
        return _nan_row(name, "categorical", "only one category present in both groups", **known)
    statistic, p_value = _chi_square(counts)
    # Cramér's V for a 2 × k table: sqrt(chi² / n); a magnitude, so it has no sign.
    return {**_nan_row(name, "categorical", ""), **known, "effect": math.sqrt(statistic / (na + nb)),
            "statistic": statistic, "test": "chi2", "p_value": p_value}  # fmt: skip


def compare_statistics(a: PhenotypeStatistics, b: PhenotypeStatistics, specs: Mapping[str, Any]) -> pd.DataFrame:
    """Compare two groups on every phenotype of ``specs`` from their statistics, largest standardised difference first.

    The tests and effect sizes are those of :func:`compare_groups`, which documents them.

    Parameters
    ----------
    a, b
        The groups' :class:`PhenotypeStatistics` (from one :class:`PhenotypeSums`).
    specs
        Phenotype → type or spec; the phenotypes compared, in this order before sorting.

    Returns
    -------
    pandas.DataFrame
        One row per phenotype with :data:`COLUMNS`, sorted by ``|effect|`` descending (NaN last).
    """
    names = list(specs)
    if not names:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for name in names:
        kind = _type_of(specs[name])
        if kind == "continuous":
            rows.append(_continuous(name, a.values[name], b.values[name], a.shift[name]))
        else:
            rows.append((_binary if kind == "binary" else _categorical)(name, a.values[name], b.values[name]))
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
    no variation) keep NaN with a ``reason``. Everything is exact at any size, computed from each
    group's :class:`PhenotypeStatistics` (one pass over its rows; the complement by subtraction).

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
    sums = PhenotypeSums.build(table, specs)
    a = sums.rows_sum(group_rows(group_a, sums.n, "group_a"))
    if group_b is None:
        b = sums.rows_sum(np.arange(sums.n)) - a
    else:
        b = sums.rows_sum(group_rows(group_b, sums.n, "group_b"))
    return compare_statistics(a, b, specs)


TABLE_COLUMNS = ["group", "reference", *COLUMNS, "hidden"]
"""Columns of :func:`compare_with_reference`'s table: each group's :func:`compare_groups` rows, labelled."""


def compare_with_reference(
    statistics: Mapping[str, PhenotypeStatistics],
    reference: PhenotypeStatistics,
    specs: Mapping[str, Any],
    *,
    reference_label: str = "comparison",
    policy: PrivacyPolicy | None = None,
) -> pd.DataFrame:
    """Each group against one reference group on every phenotype of ``specs``, with the privacy floor applied.

    Parameters
    ----------
    statistics
        ``{label: PhenotypeStatistics}``, e.g. of the selection and saved subgroups.
    reference
        The comparison group's statistics.
    specs
        The phenotypes compared, name → spec (or type).
    reference_label
        Written in the ``reference`` column.
    policy
        Rows where either group has fewer non-missing values than ``policy.min_group_size`` are
        masked (:meth:`PrivacyPolicy.filter_table`) and flagged in ``hidden``.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS`: for each group, :func:`compare_statistics`' rows (sorted by
        ``|effect|``, with BH q-values over that group's phenotypes).
    """
    policy = policy if policy is not None else PrivacyPolicy()
    parts = [
        compare_statistics(s, reference, specs).assign(group=label, reference=reference_label)
        for label, s in statistics.items()
    ]
    if not parts:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    long = pd.concat(parts, ignore_index=True)
    hidden = np.minimum(long["n_a"].to_numpy(), long["n_b"].to_numpy()) < policy.min_group_size
    long = policy.filter_table(long, ["n_a", "n_b"])
    long["hidden"] = hidden
    return long[TABLE_COLUMNS]


def distribution_frames(
    binning: Binning, counts: Mapping[str, np.ndarray], *, policy: PrivacyPolicy | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One phenotype's distribution in each group (the phenotype's shared bins), leaving out groups below the floor.

    Parameters
    ----------
    binning
        The phenotype's bins over the whole cohort.
    counts
        ``{label: subjects per bin}`` (``binning.counts(rows)``, or a cached sum).
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
    shown: dict[str, np.ndarray] = {}
    hidden: dict[str, str] = {}
    for label, c in counts.items():
        reason = policy.check(int(np.sum(c)), label)
        if reason is None:
            shown[label] = c
        else:
            hidden[label] = reason
    return binning.frame(shown), hidden
