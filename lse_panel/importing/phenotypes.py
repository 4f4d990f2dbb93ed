"""Phenotype columns from the user's table: types inferred (continuous, binary, categorical), overridable, coded for the bundle.

Inference, column by column: numbers with two distinct values are *binary*, other numbers
*continuous*; text (or booleans) with two values is *binary*, with up to 127 *categorical*.
Text with more distinct values (free text, dates) is left out and reported. The spec overrides
any of it (``[phenotypes.columns.NAME]`` with ``type``, ``units``, ``description``,
``categories``). For a numeric column, ``categories`` label its distinct values in increasing
order (``sex`` coded 0/1 with ``categories = ["female", "male"]``); for a text column they list
the values, in the order the codes should take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lse_panel.cohort.schema import PhenotypeSpec, target_task
from lse_panel.importing.spec import PhenotypeInput
from lse_panel.importing.tables import TableError, _unknown_column

MAX_CATEGORIES = 127
"""Categories are stored as int8 codes (``-1`` missing)."""


@dataclass
class PhenotypeTable:
    """The coded phenotypes of the cohort, their specs, the chosen targets, and what was left out."""

    columns: dict[str, np.ndarray]
    specs: dict[str, PhenotypeSpec]
    targets: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)

    def report(self) -> list[str]:
        """One line per phenotype (type, units, missing share, target or not), then the ones left out."""
        lines = []
        for name, spec in self.specs.items():
            values = self.columns[name]
            missing = float(np.mean(~np.isfinite(values) if spec.type == "continuous" else values < 0)) if len(values) else 0.0
            kind = spec.type if spec.type == "continuous" else f"{spec.type} {list(spec.categories)}"
            target = f"target ({self.targets[name]})" if name in self.targets else "not a target"
            lines.append(f"  {name}: {kind}{' ' + spec.units if spec.units else ''}, {missing:.1%} missing, {target}")
        lines += [f"  left out {name}: {why}" for name, why in self.skipped.items()]
        return lines


def build_phenotypes(frame: pd.DataFrame, source: PhenotypeInput, *, min_per_class: int) -> PhenotypeTable:
    """Infer or apply each column's type, code it, and choose the targets.

    Parameters
    ----------
    frame
        The phenotype table in cohort row order, without the id column.
    source
        The spec's ``[phenotypes]`` entry.
    min_per_class
        The fewest subjects a target needs per class (classifications) or in all (regressions),
        so every cross-fitting fold can learn: the number of folds.

    Raises
    ------
    TableError
        An unknown column in ``include``/``exclude``/``rename``/``columns``/``targets``, a value
        outside declared categories, a text value in a continuous column, an unsuitable target.
    """
    file = source.file
    for name in source.rename:
        if name not in frame.columns:
            raise _unknown_column(file, name, "phenotypes.rename", list(frame.columns))
    frame = frame.rename(columns=dict(source.rename))
    available = list(frame.columns)  # include, exclude, columns and targets use the names after renaming
    for key, listed in (("include", source.include or ()), ("exclude", source.exclude), ("columns", source.columns)):
        for name in listed:
            if name not in available:
                raise _unknown_column(file, name, f"phenotypes.{key}", available)
    names = [name for name in (source.include or available) if name not in source.exclude]
    columns: dict[str, np.ndarray] = {}
    specs: dict[str, PhenotypeSpec] = {}
    skipped: dict[str, str] = {}
    for name in names:
        _check_name(name, file)
        override = dict(source.columns.get(name, {}))
        try:
            coded = _code_column(name, frame[name], override, file)
        except _Skip as why:
            if override or source.include:
                raise TableError(f"{file}: column {name!r}: {why}. Declare its type in [phenotypes.columns.{name}] or exclude it.") from None
            skipped[name] = str(why)
            continue
        columns[name], specs[name] = coded
    targets = _choose_targets(columns, specs, source, file, min_per_class)
    return PhenotypeTable(columns, specs, targets, skipped)


class _Skip(Exception):
    """A column that inference cannot type (left out unless the user asked for it)."""


def _check_name(name: str, file: Path) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 64 or any(ord(c) < 32 for c in name) or "/" in name:
        raise TableError(
            f"{file}: column name {name!r} cannot name a phenotype (1-64 printable characters, no '/'). "
            f"Rename it with [phenotypes.rename] \"{name}\" = \"new_name\"."
        )


def _code_column(name: str, series: pd.Series, override: Mapping[str, Any], file: Path) -> tuple[np.ndarray, PhenotypeSpec]:
    declared = override.get("type")
    if declared not in (None, "continuous", "binary", "categorical"):
        raise TableError(f"{file}: phenotypes.columns.{name}.type is {declared!r}; use continuous, binary or categorical.")
    units, description = str(override.get("units", "")), str(override.get("description", ""))
    categories = override.get("categories")
    if categories is not None and not (isinstance(categories, list) and all(isinstance(c, (str, int, float, bool)) for c in categories)):
        raise TableError(f"{file}: phenotypes.columns.{name}.categories must be a list of labels.")
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if pd.api.types.is_datetime64_any_dtype(series):
        raise _Skip("dates are not phenotypes (convert to a number, e.g. age in years)")
    present = series.dropna()
    if declared == "continuous" or (declared is None and numeric and present.nunique() != 2):
        values = pd.to_numeric(series, errors="coerce")
        bad = values.isna() & series.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableError(f"{file}: column {name!r} is continuous but holds {series.iloc[row]!r} (cohort row {row + 1}). "
                             "Fix the value, leave it empty for missing, or declare the column categorical.")
        values = values.to_numpy(dtype=np.float64)
        if np.isinf(values).any():
            row = int(np.flatnonzero(np.isinf(values))[0])
            raise TableError(f"{file}: column {name!r} holds an infinite value (cohort row {row + 1}). Use an empty cell for missing.")
        return values.astype(np.float32), PhenotypeSpec(name, "continuous", units, description)
    levels = np.sort(present.unique()) if numeric else sorted(present.astype(str).unique())
    if declared is None and len(levels) > MAX_CATEGORIES:
        raise _Skip(f"text with {len(levels):,} distinct values")
    if categories is not None:
        labels = [str(c) for c in categories]
        if numeric:
            if len(levels) > len(labels):
                raise TableError(f"{file}: column {name!r} has {len(levels)} distinct values {list(levels)[:8]} but "
                                 f"phenotypes.columns.{name}.categories lists {len(labels)}; give one label per value.")
            lookup = {float(v): i for i, v in enumerate(levels)}
        else:
            extra = [v for v in levels if v not in labels]
            if extra:
                raise TableError(f"{file}: column {name!r} holds {extra[:5]}, not among phenotypes.columns.{name}.categories "
                                 f"{labels}. Add them, or fix the values.")
            lookup = {label: i for i, label in enumerate(labels)}
    else:
        labels = [_label(v) for v in levels]
        lookup = {(float(v) if numeric else v): i for i, v in enumerate(levels)}
    if len(labels) > MAX_CATEGORIES:
        raise TableError(f"{file}: column {name!r} has {len(labels)} categories; at most {MAX_CATEGORIES} fit. Group them first.")
    keys = series.map(lambda v: float(v) if numeric else str(v), na_action="ignore") if len(series) else series
    codes = keys.map(lookup).fillna(-1).to_numpy(dtype=np.int8)
    kind = declared or ("binary" if len(labels) == 2 else "categorical")
    if kind == "binary" and len(labels) != 2:
        raise TableError(f"{file}: column {name!r} is declared binary but has {len(labels)} categories {labels[:8]}. "
                         "Declare it categorical, or give two categories.")
    return codes, PhenotypeSpec(name, kind, units, description, tuple(labels))


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _choose_targets(columns: dict[str, np.ndarray], specs: dict[str, PhenotypeSpec], source: PhenotypeInput,
                    file: Path, min_per_class: int) -> dict[str, str]:
    reasons = {name: _unsuitable(columns[name], spec, min_per_class) for name, spec in specs.items()}
    if source.targets is None:
        return {name: str(target_task(spec)) for name, spec in specs.items() if reasons[name] is None}
    targets = {}
    for name in source.targets:
        if name not in specs:
            raise TableError(f"{file}: phenotypes.targets names {name!r}, which is not an imported phenotype "
                             f"(imported: {', '.join(specs) or 'none'}).")
        if reasons[name]:
            raise TableError(f"{file}: {name!r} cannot be a target: {reasons[name]}. Remove it from phenotypes.targets.")
        targets[name] = str(target_task(specs[name]))
    return targets


def _unsuitable(values: np.ndarray, spec: PhenotypeSpec, min_per_class: int) -> str | None:
    task = target_task(spec)
    if task is None:
        return f"{len(spec.categories)} categories (the cross-fitted probes predict a number or one of two classes)"
    if task == "regression":
        finite = values[np.isfinite(values)]
        if finite.size < 2 * min_per_class:
            return f"only {finite.size} subjects have a value"
        if np.ptp(finite) == 0:
            return "every subject has the same value"
        return None
    counts = np.bincount(values[values >= 0].astype(np.int64), minlength=2)
    if counts.min() < min_per_class:
        return f"class {spec.categories[int(counts.argmin())]!r} has {int(counts.min())} subjects (fewer than the {min_per_class} folds)"
    return None
