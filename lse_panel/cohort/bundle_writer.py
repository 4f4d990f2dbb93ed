"""Write cohort bundles: a new bundle atomically, then blocks added under one manifest replace each.

The reading side (:func:`lse_panel.cohort.bundle.open_bundle`) never sees a half-written file: every
column lands under its final name atomically, and only the manifest, replaced last, makes it visible.
Builders (``lse build``, ``lse import``) hold the build lock while they write here.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from lse_panel.cohort.bundle import MANIFEST, Cohort, atomic_save_npy, atomic_write_json, file_stem, read_manifest
from lse_panel.cohort.partitions import latent_columns, layout_of, row_bounds, write_table
from lse_panel.cohort.schema import BUILD_STATUSES, SCHEMA_VERSION, BundleError, Modality, PhenotypeSpec, default_targets


def write_bundle(
    path: str | os.PathLike[str],
    *,
    ids: np.ndarray,
    phenotypes: pd.DataFrame,
    phenotype_specs: dict[str, PhenotypeSpec],
    modalities: dict[str, Modality] | None = None,
    raw: dict[str, Any] | None = None,
    targets: dict[str, str] | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    build_status: str = "complete",
    partitions: int | None = None,
) -> Path:
    """Write a new bundle (ids, phenotypes, modality declarations, downstream targets) atomically.

    ``partitions=N`` lays the columns out as N-part Parquet tables instead of ``.npy`` files
    (:mod:`lse_panel.cohort.partitions`); every later step keeps the layout.

    Everything goes into a hidden sibling directory first, which is renamed onto ``path``
    only once complete; an interrupted write leaves at most a ``.partial`` directory that
    no loader mistakes for a bundle.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path}: already exists. Pass overwrite=True (`--overwrite`) or pick another --out.")
    # Validate before touching the disk so bad input never costs the user a half-written bundle.
    targets = default_targets(phenotype_specs) if targets is None else dict(targets)
    Cohort.from_arrays(ids, phenotypes, phenotype_specs, manifest={"targets": targets})
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        ids = np.asarray(ids)
        ids = ids if ids.dtype.kind == "U" else ids.astype(np.int64)
        columns = {name: np.asarray(phenotypes[name], dtype=spec.dtype) for name, spec in phenotype_specs.items()}
        layout: dict[str, Any] = {"format": "npy"}
        if partitions is None:
            np.save(staging / "ids.npy", ids)
            ids_meta = {"file": "ids.npy"}
            pheno_meta = {}
            (staging / "phenotypes").mkdir(exist_ok=True)
            for name, spec in phenotype_specs.items():
                relative = f"phenotypes/{file_stem(name)}.npy"
                np.save(staging / relative, columns[name])
                pheno_meta[name] = {**spec.to_json(), "file": relative}
        else:
            layout = {"format": "parquet", "bounds": row_bounds(len(ids), partitions)}
            write_table(staging, "base", {"id": ids, **columns}, layout["bounds"])
            ids_meta = {"file": "parts/base", "columns": ["id"]}
            pheno_meta = {name: {**spec.to_json(), "file": "parts/base", "columns": [name]}
                          for name, spec in phenotype_specs.items()}  # fmt: skip
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "n_subjects": int(len(ids)),
            "layout": layout,
            "ids": {**ids_meta, "dtype": str(ids.dtype)},
            "modalities": {name: m.to_json() for name, m in (modalities or {}).items()},
            "phenotypes": pheno_meta,
            "targets": targets,
            "latents": {},
            "projections": {},
            "predictions": {},
            "raw": raw or {},
            "provenance": {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})},
            "build": {"status": build_status, "steps": {}},
        }
        atomic_write_json(staging / MANIFEST, manifest)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


class BundleUpdate:
    """Adds blocks (latents, projections, predictions, build records) to an existing bundle.

    Files land under their final names as they are written (each atomically), but the
    manifest that makes them visible is replaced once, at the end of the ``with`` block.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def layout(self) -> dict[str, Any]:
        """The bundle's layout (``{"format": "npy"}`` or the Parquet layout with its row bounds)."""
        return layout_of(self.manifest)

    def _store(self, relative: str, table: str, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        """Write ``columns`` as the ``.npy`` at ``relative`` (one column) or into Parquet table ``table``; their manifest fields."""
        layout = self.layout
        if layout["format"] == "npy":
            (block,) = columns.values() if len(columns) == 1 else (np.column_stack(list(columns.values())),)
            atomic_save_npy(self.path / relative, block)
            return {"file": relative}
        write_table(self.path, table, columns, layout["bounds"])
        return {"file": f"parts/{table}", "columns": list(columns)}

    def add_latent(self, kind: str, block: np.ndarray, **meta: Any) -> None:
        block = np.asarray(block, dtype=np.float32)
        self._check_rows(block, f"latents/{kind}")
        names = latent_columns(block.shape[1])
        if self.layout["format"] == "npy":
            where = self._store(f"latents/{file_stem(kind)}.npy", "", {"block": block})
        else:
            where = self._store("", f"latents__{file_stem(kind)}", {c: block[:, j] for j, c in enumerate(names)})
        self.manifest.setdefault("latents", {})[kind] = {**where, "dim": int(block.shape[1]), **meta}

    def register_latent(self, kind: str, relative: str, dim: int, **meta: Any) -> None:
        """Record a latent block already streamed to ``relative`` (a ``.npy``, or ``parts/<table>`` in the Parquet layout)."""
        where = {"file": relative}
        if relative.startswith("parts/"):
            where["columns"] = latent_columns(dim)
        self.manifest.setdefault("latents", {})[kind] = {**where, "dim": int(dim), **meta}

    def add_projection(self, latent: str, method: str, coords: np.ndarray, **meta: Any) -> None:
        coords = np.asarray(coords, dtype=np.float32)
        self._check_rows(coords, f"projections/{latent}/{method}")
        if np.isnan(coords).any():
            raise BundleError(f"projection {latent}/{method}: NaN coordinates; refusing to store them.")
        latent_stem, method_stem = file_stem(latent), file_stem(method)
        if self.layout["format"] == "npy":
            where = self._store(f"projections/{latent_stem}__{method_stem}.npy", "", {"coords": coords})
        else:
            where = self._store("", f"projections__{latent_stem}__{method_stem}", {"x": coords[:, 0], "y": coords[:, 1]})
        self.manifest.setdefault("projections", {})[f"{latent}/{method}"] = {
            **where,
            "latent": latent,
            "method": method,
            **meta,
        }

    def add_prediction(self, latent: str, phenotype: str, values: np.ndarray, *, task: str, **meta: Any) -> None:
        values = np.asarray(values, dtype=np.float32)
        self._check_rows(values, f"predictions/{latent}/{phenotype}")
        relative = f"predictions/{file_stem(latent)}/{file_stem(phenotype)}.npy"
        where = self._store(relative, f"predictions__{file_stem(latent)}", {phenotype: values})
        self.manifest.setdefault("predictions", {}).setdefault(latent, {})[phenotype] = {
            **where,
            "task": task,
            **meta,
        }

    def record_step(self, step: str, **info: Any) -> None:
        """Note a finished build step (its input key and timing) so a rerun can skip it."""
        self.manifest.setdefault("build", {}).setdefault("steps", {})[step] = info

    def set_build_status(self, status: str, pending: list[str] | None = None) -> None:
        """``"in_progress"`` hides the bundle from :func:`open_bundle`; ``"servable"`` (with the
        projection keys still ``pending``) and ``"complete"`` show it."""
        if status not in BUILD_STATUSES:
            raise ValueError(f"build status must be one of {BUILD_STATUSES}, got {status!r}.")
        build = self.manifest.setdefault("build", {})
        build["status"] = status
        if status == "servable":
            build["pending"] = list(pending or [])
        else:
            build.pop("pending", None)

    def _check_rows(self, array: np.ndarray, what: str) -> None:
        n = self.manifest["n_subjects"]
        if array.shape[0] != n:
            raise BundleError(
                f"{what}: {array.shape[0]} rows for a bundle of {n} subjects. "
                "The array was computed for another cohort; recompute it for this bundle."
            )


@contextmanager
def update_bundle(path: str | os.PathLike[str]) -> Iterator[BundleUpdate]:
    """Open a bundle for adding blocks; the new manifest is written only if the block succeeds."""
    path = Path(path)
    update = BundleUpdate(path, read_manifest(path))
    yield update
    atomic_write_json(path / MANIFEST, update.manifest)


BUILD_DIRECTORIES = ("phenotypes", "latents", "projections", "predictions")
"""Where builders write columns; hidden files in them are a writer's temporaries."""


def remove_build_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries a killed writer left in a bundle's columns (and of its manifest).

    A SIGKILL skips every ``finally``: a streamed latent block (``latents/.<kind>.<tag>.npy``) or an
    atomic write's temporary stays behind. Call this only while holding the build lock (as
    ``lse build`` does): only builders write there. The subgroup store's own temporaries, beside
    ``subgroups.json``, are left alone: a served app may be saving one.
    """
    path = Path(path)
    stale = list(path.glob(f".{MANIFEST}.*.tmp"))
    for directory in BUILD_DIRECTORIES:
        stale += [p for p in (path / directory).rglob(".*") if p.is_file()]
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def open_npy_for_writing(path: Path, shape: tuple[int, ...], dtype: str = "float32") -> np.memmap:
    """A writable memory-mapped ``.npy`` of ``shape``, for streaming blocks larger than memory.

    Write into it chunk by chunk, ``flush()``, then register it; until the manifest names it,
    readers ignore it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
