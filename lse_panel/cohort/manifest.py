"""The manifest's structure, checked before any field is used: a damaged manifest is one BundleError naming the field."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import PurePosixPath
from typing import Any, Callable, get_args

from lse_panel.cohort.partitions import LAYOUTS
from lse_panel.cohort.schema import (
    BUILD_STATUSES,
    SCHEMA_VERSION,
    BundleError,
    ImageSequenceModality,
    PhenotypeType,
    SignalModality,
)

__all__ = ["check_manifest"]

_MODALITY_FIELDS = {
    "signal": {f.name for f in fields(SignalModality)} | {"shape"},
    "image_sequence": {f.name for f in fields(ImageSequenceModality)} | {"shape"},
}
_POSITIVE_INTS = {"signal": ("n_samples",), "image_sequence": ("n_frames", "height", "width")}
_POSITIVE_NUMBERS = {"signal": ("sampling_rate_hz",), "image_sequence": ("frame_interval_ms",)}


class _Checker:
    """Walks the manifest; ``fail`` raises a BundleError naming the manifest, the field and the fix."""

    def __init__(self, where: str, hint: str) -> None:
        self.where = where
        self.hint = hint

    def fail(self, field: str, problem: str) -> None:
        raise BundleError(f"{self.where}: field {field!r} {problem}. {self.hint}")

    def object(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"must be a JSON object, not {_kind(value)}")
        return value

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str):
            self.fail(field, f"must be text, not {_kind(value)}")
        return value

    def integer(self, value: Any, field: str, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(field, f"must be a whole number of at least {low}, not {value!r}"[:200])
        return value

    def positive_number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.fail(field, f"must be a positive number, not {value!r}"[:200])
        return float(value)

    def text_list(self, value: Any, field: str, *, min_size: int = 0) -> list[str]:
        if not isinstance(value, list) or len(value) < min_size or not all(isinstance(v, str) for v in value):
            self.fail(field, f"must be a list of at least {min_size} texts, not {_kind(value)}")
        return value

    def file(self, entry: Any, field: str) -> None:
        """``entry["file"]``: a relative path inside the bundle, to a ``.npy`` or a Parquet table ``parts/<table>``.

        A table entry also names its ``columns`` (:mod:`lse_panel.cohort.partitions`).
        """
        entry = self.object(entry, field)
        path = self.text(entry.get("file"), f"{field}.file")
        parts = PurePosixPath(path).parts
        if not path or path.startswith(("/", "\\")) or ".." in parts or "\\" in path or "\x00" in path:
            self.fail(f"{field}.file", f"names {path!r}, outside the bundle; files must lie inside the bundle directory")
        if len(parts) == 2 and parts[0] == "parts" and "columns" in entry:
            self.text_list(entry["columns"], f"{field}.columns", min_size=1)
        elif not path.endswith(".npy"):
            self.fail(f"{field}.file", f"names {path!r}, which is neither a .npy column nor a parts/<table> table")

    def entries(self, manifest: dict[str, Any], field: str, check: Callable[[str, Any, str], None]) -> None:
        for key, entry in self.object(manifest.get(field, {}), field).items():
            check(key, entry, f"{field}.{key}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _check_layout(check: _Checker, manifest: dict[str, Any]) -> None:
    """``layout``: absent (``.npy`` columns), or ``{"format": "npy"}``, or Parquet parts with their row bounds."""
    layout = check.object(manifest.get("layout", {"format": "npy"}), "layout")
    if layout.get("format") not in LAYOUTS:
        check.fail("layout.format", f"is {layout.get('format')!r}"[:80] + f"; this lse-panel reads {', '.join(LAYOUTS)}")
    if layout["format"] == "parquet":
        bounds, n = layout.get("bounds"), manifest["n_subjects"]
        whole = isinstance(bounds, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        if not whole or len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != n or bounds != sorted(bounds):
            check.fail("layout.bounds", f"must be whole numbers rising from 0 to n_subjects ({n}), not {bounds!r}"[:200])


def check_manifest(manifest: Any, where: str, hint: str) -> dict[str, Any]:
    """Check every manifest field the loader reads, before it reads any.

    Parameters
    ----------
    manifest
        The parsed ``manifest.json`` (any JSON value).
    where
        The manifest's path, for messages.
    hint
        What to do about a damaged manifest (rebuild, restore), appended to every message.

    Returns
    -------
    dict
        ``manifest``, unchanged.

    Raises
    ------
    BundleError
        Naming the field and what it must be.
    """
    check = _Checker(where, hint)
    manifest = check.object(manifest, "(the whole manifest)")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: field 'schema_version' is {version!r}, but this lse-panel reads version {SCHEMA_VERSION}. "
            "Rebuild the bundle with this version, or install the lse-panel version that wrote it."
        )
    for required in ("n_subjects", "ids", "phenotypes"):
        if required not in manifest:
            check.fail(required, "is missing")
    check.integer(manifest["n_subjects"], "n_subjects", low=1)
    _check_layout(check, manifest)
    check.file(manifest["ids"], "ids")

    def phenotype(name: str, entry: Any, field: str) -> None:
        check.file(entry, field)
        if check.text(entry.get("name"), f"{field}.name") != name:
            check.fail(f"{field}.name", f"is {entry['name']!r}, not the phenotype's key {name!r}")
        if entry.get("type") not in get_args(PhenotypeType):
            check.fail(f"{field}.type", f"is {entry.get('type')!r}; expected one of {', '.join(get_args(PhenotypeType))}")
        for key in ("units", "description"):
            if key in entry:
                check.text(entry[key], f"{field}.{key}")
        if entry["type"] != "continuous" or "categories" in entry:
            check.text_list(entry.get("categories"), f"{field}.categories", min_size=0 if entry["type"] == "continuous" else 2)

    def modality(name: str, entry: Any, field: str) -> None:
        entry = check.object(entry, field)
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in _MODALITY_FIELDS:
            check.fail(f"{field}.kind", f"is {kind!r}; expected 'signal' or 'image_sequence'")
        unknown = set(entry) - _MODALITY_FIELDS[kind]
        if unknown:
            check.fail(field, f"has unknown keys {sorted(unknown)[:5]} for a {kind} modality")
        check.text(entry.get("name"), f"{field}.name")
        for key in _POSITIVE_INTS[kind]:
            check.integer(entry.get(key), f"{field}.{key}", low=1)
        for key in _POSITIVE_NUMBERS[kind]:
            check.positive_number(entry.get(key), f"{field}.{key}")
        if kind == "signal":
            check.text_list(entry.get("channel_names"), f"{field}.channel_names", min_size=1)
        for key in ("units", "description"):
            if key in entry:
                check.text(entry[key], f"{field}.{key}")

    def column(name: str, entry: Any, field: str) -> None:
        check.file(entry, field)

    def prediction_kind(kind: str, per_phenotype: Any, field: str) -> None:
        for name, entry in check.object(per_phenotype, field).items():
            check.file(entry, f"{field}.{name}")
            check.text(entry.get("task", ""), f"{field}.{name}.task")

    check.entries(manifest, "phenotypes", phenotype)
    check.entries(manifest, "modalities", modality)
    check.entries(manifest, "latents", column)
    check.entries(manifest, "projections", column)
    check.entries(manifest, "predictions", prediction_kind)
    build = check.object(manifest.get("build", {}), "build")
    if "status" in build and build["status"] not in BUILD_STATUSES:
        check.fail("build.status", f"is {build['status']!r}; expected one of {', '.join(BUILD_STATUSES)}")
    check.object(build.get("steps", {}), "build.steps")
    check.object(build.get("settings", {}), "build.settings")
    check.text_list(build.get("pending", []), "build.pending")
    raw = check.object(manifest.get("raw", {}), "raw")
    if raw.get("source") == "synthetic":
        check.integer(raw.get("seed"), "raw.seed", low=-(2**63))
        if "mri_shape" in raw:
            shape = raw["mri_shape"]
            if not isinstance(shape, list) or len(shape) != 3:
                check.fail("raw.mri_shape", "must be [frames, height, width]")
            for i, size in enumerate(shape):
                check.integer(size, f"raw.mri_shape[{i}]", low=1)
    return manifest
