"""Subject ids joined explicitly across inputs: one id type, no duplicates, counts per input, the match reported.

Ids may arrive as integers from one file and as text from another (an AnnData's ``obs_names`` are
always text, a CSV's eids integers): text ids that all spell integers in canonical form
(``"1000001"``, not ``"01000001"``) are read as integers when another input has integer ids;
otherwise every input's ids are compared as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lse_panel.cohort.schema import BundleError

_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")


class JoinError(BundleError):
    """The inputs' ids do not line up; the message gives the counts per input and what to do."""


def shown(value: Any) -> str:
    """An id as the user wrote it (``1000001``, ``'A-17'``), not as numpy prints it (``np.int64(1000001)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def read_ids(values: Any, label: str) -> np.ndarray:
    """One input's ids as int64 or text (numpy ``U``), checked: no missing, no duplicates.

    Parameters
    ----------
    values
        A ``pyarrow`` array or numpy array of ids, in file order.
    label
        How the error messages name this input (its file and role).

    Raises
    ------
    JoinError
        Missing ids (with their rows), non-integral numbers, duplicates (with examples and rows).
    """
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        nulls = values.is_null()
        if values.null_count:
            rows = np.flatnonzero(np.asarray(nulls.to_numpy(zero_copy_only=False)))
            raise JoinError(f"{label}: {len(rows)} row(s) without an id, e.g. row {rows[0] + 1}. Every row needs a subject id.")
        values = values.to_numpy(zero_copy_only=False)
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        ids = values.astype(np.int64)
    elif values.dtype.kind == "f":
        if not np.isfinite(values).all() or not (values == np.round(values)).all():
            bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
            raise JoinError(f"{label}: id {shown(values[bad[0]])} at row {bad[0] + 1} is not a whole number. Ids are integers or text.")
        ids = values.astype(np.int64)
    else:
        ids = np.asarray([str(v).strip() for v in values], dtype=str)
        empty = np.flatnonzero(ids == "")
        if empty.size:
            raise JoinError(f"{label}: {empty.size} row(s) with an empty id, e.g. row {empty[0] + 1}. Every row needs a subject id.")
    _check_unique(ids, label)
    return ids


def _check_unique(ids: np.ndarray, label: str) -> None:
    # Sort-based, not np.unique: numpy 2.4's hash-based unique is ~30x slower on 500k ids.
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if repeated.size:
        first = ordered[repeated[0]]
        rows = np.sort(order[ordered == first])[:3] + 1
        n_dupes = len(pd.unique(ordered[1:][repeated]))
        raise JoinError(
            f"{label}: {n_dupes} duplicate id(s), e.g. {shown(first)} at rows {', '.join(map(str, rows))} "
            "(counting from 1, header excluded). Each subject must appear once: deduplicate the table."
        )


def harmonise(inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """Bring every input's ids to one type; returns them and a note of any conversion made."""
    kinds = {label: ids.dtype.kind == "U" for label, ids in inputs.items()}
    if not any(kinds.values()) or all(kinds.values()):
        return inputs, ""
    text = [label for label, is_text in kinds.items() if is_text]
    if all(all(_CANONICAL_INT.fullmatch(v) for v in inputs[label][:]) for label in text):
        return {label: ids.astype(np.int64) if kinds[label] else ids for label, ids in inputs.items()}, (
            f"text ids of {', '.join(text)} read as integers to match the other inputs"
        )
    return {label: ids.astype(str) for label, ids in inputs.items()}, (
        "integer ids compared as text, since some inputs have ids that are not integers"
    )


@dataclass
class JoinResult:
    """The cohort's ids and where each input's rows go.

    Attributes
    ----------
    ids
        The cohort's subject ids, in the order of the first input.
    rows
        Input label → bundle row of each of its rows (``-1``: not in the cohort).
    counts
        Input label → ``(rows in the input, rows in the cohort)``.
    notes
        Lines for the import report.
    """

    ids: np.ndarray
    rows: dict[str, np.ndarray]
    counts: dict[str, tuple[int, int]]
    notes: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """The join, one line per input, then the notes."""
        lines = [f"{label}: {n:,} subjects, {matched:,} in the cohort" for label, (n, matched) in self.counts.items()]
        return lines + [f"cohort: {len(self.ids):,} subjects"] + self.notes


def join_ids(inputs: dict[str, np.ndarray], *, allow_partial: bool) -> JoinResult:
    """Join the inputs on subject id: every input must hold the same subjects, or (``allow_partial``) the intersection is kept.

    Parameters
    ----------
    inputs
        Label → that input's ids (from :func:`read_ids`), the first one setting the cohort's order.
    allow_partial
        Keep the subjects every input has, and say how many each input loses.

    Raises
    ------
    JoinError
        The inputs hold different subjects and ``allow_partial`` is off (the message gives each
        input's count, its unmatched ids and the two ways out), or nothing matches at all.
    """
    inputs, note = harmonise(inputs)
    labels = list(inputs)
    base = inputs[labels[0]]
    keep = np.ones(len(base), dtype=bool)
    for label in labels[1:]:
        keep &= pd.Index(inputs[label]).get_indexer(base) >= 0
    ids = base[keep]
    index = pd.Index(ids)
    rows = {label: index.get_indexer(values).astype(np.int64) for label, values in inputs.items()}
    counts = {label: (len(inputs[label]), int((rows[label] >= 0).sum())) for label in labels}
    notes = [note] if note else []
    if len(ids) == 0:
        raise JoinError(
            "no subject id is in every input: " + "; ".join(f"{label} has {n:,}" for label, (n, _) in counts.items())
            + _examples(inputs) + ". Check that every file uses the same id column (set id_column per input if not)."
        )
    mismatched = {label: n - matched for label, (n, matched) in counts.items() if n != matched}
    if mismatched:
        lines = [f"{label}: {n:,} subjects, {matched:,} in every input" for label, (n, matched) in counts.items()]
        if not allow_partial:
            missing = []
            for label in mismatched:
                example = inputs[label][rows[label] < 0][:3].tolist()
                missing.append(f"{label} has {mismatched[label]:,} not in all the others (e.g. {example})")
            raise JoinError(
                "the inputs hold different subjects: " + "; ".join(lines) + ". " + "; ".join(missing)
                + ". Fix the files, or pass --allow-partial (allow_partial = true in [cohort]) to keep the "
                f"{len(ids):,} subjects every input has."
            )
        notes.append(
            f"--allow-partial: kept the {len(ids):,} subjects every input has; dropped "
            + ", ".join(f"{n:,} of {label}" for label, n in mismatched.items())
        )
    return JoinResult(ids, rows, counts, notes)


def _examples(inputs: dict[str, np.ndarray]) -> str:
    return " (first ids: " + "; ".join(f"{label}: {ids[:2].tolist()}" for label, ids in inputs.items()) + ")"


def match_rows(cohort_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bundle row of each of ``values`` (``-1`` where the cohort lacks it), after :func:`harmonise` against the cohort."""
    harmonised, _ = harmonise({"cohort": cohort_ids, "input": values})
    return pd.Index(harmonised["cohort"]).get_indexer(harmonised["input"]).astype(np.int64)
