"""Read and validate cohort bundles: a manifest plus memory-mappable ``.npy`` columns.

Layout of a bundle directory::

    manifest.json                      schema version, sizes, what every file is
    ids.npy                            subject ids (int64 or fixed-width unicode), unique
    phenotypes/<name>.npy              one column each: float32 (continuous) or int8 codes
    latents/<kind>.npy                 (n, dim) float32, one block per latent kind
    projections/<kind>__<method>.npy   (n, 2) float32 coordinates
    predictions/<kind>/<phenotype>.npy cross-fitted predictions, float32
    subgroups.json                     saved subgroups (ids and the rule that made them)

Every column is an uncompressed ``.npy`` so ``np.load(mmap_mode="r")`` shares one physical
copy between all ``panel serve`` processes on a host. The manifest is always written last and
atomically (temporary name, then ``os.replace``): a file the manifest does not name is
invisible, so an interrupted step never leaves a bundle that looks complete. Writing new bundles and
adding blocks to them is :mod:`lse_panel.cohort.bundle_writer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lse_panel.cohort.manifest import check_manifest
from lse_panel.cohort.partitions import ColumnRef, read_columns
from lse_panel.cohort.schema import (
    BundleError,
    Modality,
    PhenotypeSpec,
    default_targets,
    modality_from_json,
    target_task,
)

MANIFEST = "manifest.json"


def file_stem(name: str) -> str:
    """A safe file name for a column called ``name`` (a phenotype, a latent kind).

    Names made of letters, digits, ``_``, ``.`` and ``-`` (UK Biobank's ``21001-2.0`` included)
    are kept; any other name gets a readable slug plus a digest of the name, so two names never
    share a file and no name can reach outside the bundle (``../x``, ``a/b``).
    """
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name) and ".." not in name:
        return name
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")[:40] or "column"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _fix_hint(path: Path) -> str:
    return f"Rebuild it (`lse build --out {path}`) or restore the file from a backup."


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` through a temporary file so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and ``os.replace`` (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default))
    os.replace(tmp, path)


def atomic_write_table(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` as ``.csv`` (else Parquet) through a temporary file and ``os.replace``; nothing half-written stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class Cohort:
    """A cohort held as columns: the data adaptor every analysis and view reads from.

    Built either from a bundle on disk (:func:`open_bundle`, columns memory-mapped and
    read-only) or from arrays in memory (:meth:`Cohort.from_arrays`, for tests and notebooks).
    Analysis code asks it for arrays by name, never for files, so a Dask-backed adaptor can
    stand in later without touching the views.
    """

    def __init__(
        self,
        *,
        ids: np.ndarray,
        phenotypes: dict[str, np.ndarray],
        phenotype_specs: dict[str, PhenotypeSpec],
        modalities: dict[str, Modality] | None = None,
        latents: dict[str, np.ndarray] | None = None,
        projections: dict[str, np.ndarray] | None = None,
        predictions: dict[str, dict[str, np.ndarray]] | None = None,
        manifest: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self.ids = ids
        self._phenotypes = phenotypes
        self.phenotype_specs = phenotype_specs
        self.modalities = modalities or {}
        self.latents = latents or {}
        self.projections = projections or {}
        self.predictions = predictions or {}
        self.manifest = manifest or {}
        self.path = path

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        ids: np.ndarray,
        phenotypes: pd.DataFrame,
        phenotype_specs: dict[str, PhenotypeSpec],
        **kwargs: Any,
    ) -> Cohort:
        """Build an in-memory cohort, validated exactly like one read from disk."""
        cohort = cls(
            ids=np.asarray(ids),
            phenotypes={name: np.asarray(phenotypes[name]) for name in phenotype_specs},
            phenotype_specs=dict(phenotype_specs),
            **kwargs,
        )
        cohort.validate()
        return cohort

    # -- access -------------------------------------------------------------------------
    @property
    def n_subjects(self) -> int:
        return int(len(self.ids))

    def phenotype(self, name: str) -> np.ndarray:
        try:
            return self._phenotypes[name]
        except KeyError:
            raise KeyError(
                f"no phenotype {name!r}; this cohort has: {', '.join(self._phenotypes)}"
            ) from None

    @property
    def phenotype_columns(self) -> Mapping[str, np.ndarray]:
        """Phenotype name → column, read-only and uncopied: what the analysis layer's filters take."""
        return MappingProxyType(self._phenotypes)

    @property
    def phenotypes(self) -> pd.DataFrame:
        """All phenotype columns as a DataFrame that shares (does not copy) the arrays."""
        return pd.DataFrame(self._phenotypes, copy=False)

    def latent(self, kind: str) -> np.ndarray:
        try:
            return self.latents[kind]
        except KeyError:
            raise KeyError(
                f"no latent kind {kind!r}; this cohort has: {', '.join(self.latents) or 'none'}. "
                "Run `lse embed` (or `lse build`) to add latents."
            ) from None

    def projection(self, key: str) -> np.ndarray:
        """2-D coordinates of the projection ``"<latent kind>/<method>"``."""
        try:
            return self.projections[key]
        except KeyError:
            raise KeyError(
                f"no projection {key!r}; this cohort has: {', '.join(self.projections) or 'none'}. "
                "Run `lse build` to compute projections."
            ) from None

    @property
    def targets(self) -> dict[str, str]:
        """Phenotype → 'regression' / 'classification': the downstream targets the build cross-fits.

        The producer's choice, from ``manifest["targets"]`` (the synthetic generator's task list,
        or what the user chose at import); bundles written before that field existed get every
        suitable phenotype (:func:`~lse_panel.cohort.schema.default_targets`).
        """
        recorded = self.manifest.get("targets")
        if recorded is not None:
            return {name: str(task) for name, task in recorded.items()}
        return default_targets(self.phenotype_specs)

    def prediction_tasks(self) -> dict[str, str]:
        """Phenotype → 'regression' or 'classification' for every stored prediction."""
        tasks: dict[str, str] = {}
        for per_kind in self.manifest.get("predictions", {}).values():
            for name, meta in per_kind.items():
                tasks[name] = meta["task"]
        if not tasks:
            for per_kind in self.predictions.values():
                for name in per_kind:
                    spec = self.phenotype_specs[name]
                    tasks[name] = "regression" if spec.type == "continuous" else "classification"
        return tasks

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Check the invariants every view relies on; raise :class:`BundleError` naming the fix."""
        where = str(self.path / "ids.npy") if self.path else "ids"
        n = self.n_subjects
        if self.ids.ndim != 1:
            raise BundleError(f"{where}: subject ids must be one-dimensional, got shape {self.ids.shape}.")
        if self.ids.dtype.kind not in "iuU":
            raise BundleError(
                f"{where}: subject ids have dtype {self.ids.dtype}; expected integers or strings. "
                "Convert the id column to int64 or str before building the bundle."
            )
        # Sort-based, not np.unique: numpy 2.4's hash-based unique is ~30x slower on 500k ids.
        ordered = np.sort(self.ids)
        repeated = ordered[1:] == ordered[:-1]
        if repeated.any():
            dupes = np.unique(ordered[1:][repeated])
            raise BundleError(
                f"{where}: {int(repeated.sum())} duplicate subject id(s), e.g. {dupes[:5].tolist()}. "
                "Each subject must appear once: deduplicate the input table and rebuild."
            )
        for name, spec in self.phenotype_specs.items():
            values = self._phenotypes.get(name)
            where = self._where("phenotypes", name)
            if values is None:
                raise BundleError(f"{where}: phenotype {name!r} is declared but has no column.")
            self._check_column(where, values, (n,), spec.dtype)
            if spec.type == "continuous":
                self._check_no_infinity(where, values, "write NaN for a missing value")
            else:
                codes = np.asarray(values)
                if codes.size and (codes.min() < -1 or codes.max() >= len(spec.categories)):
                    raise BundleError(
                        f"{where}: codes outside 0..{len(spec.categories) - 1} for categories "
                        f"{list(spec.categories)} (-1 means missing). Recode the column."
                    )
        self._check_targets()
        for kind, block in self.latents.items():
            where = self._where("latents", kind)
            if block.ndim != 2 or block.shape[0] != n:
                raise BundleError(
                    f"{where}: latent block has shape {block.shape}; expected ({n}, dim). "
                    "Re-run `lse embed` for this bundle."
                )
            self._check_column(where, block, block.shape, "float32")
        for key, coords in self.projections.items():
            self._check_projection(key, coords)
        for kind, per_phenotype in self.predictions.items():
            for name, values in per_phenotype.items():
                where = self._where("predictions", f"{kind}/{name}")
                self._check_column(where, values, (n,), "float32")
                self._check_no_infinity(where, values, "recompute the predictions (`lse build`)")

    def _check_targets(self) -> None:
        where = str(self.path / MANIFEST) if self.path else "manifest"
        targets = self.manifest.get("targets") or {}
        if not isinstance(targets, dict):
            raise BundleError(
                f"{where}: field 'targets' is {type(targets).__name__}, not an object of phenotype name → task "
                "('regression' or 'classification'). Fix it, or rebuild the bundle (`lse build`)."
            )
        for name, task in targets.items():
            spec = self.phenotype_specs.get(name)
            if spec is None:
                raise BundleError(
                    f"{where}: field 'targets' names {name!r}, which is not a phenotype of this bundle "
                    f"(phenotypes: {', '.join(self.phenotype_specs) or 'none'}). Remove it from 'targets'."
                )
            expected = target_task(spec)
            if task != expected:
                why = (f"a {spec.type} phenotype with {len(spec.categories)} categories cannot be predicted "
                       "by the cross-fitted probes" if expected is None else f"a {spec.type} phenotype is a {expected}")
                raise BundleError(f"{where}: target {name!r} has task {task!r}, but {why}. Fix 'targets.{name}'.")

    def _check_projection(self, key: str, coords: np.ndarray) -> None:
        where = self._where("projections", key.replace("/", "__"))
        self._check_column(where, coords, (self.n_subjects, 2), "float32")
        if not np.isfinite(coords).all():
            raise BundleError(
                f"{where}: projection {key!r} has NaN coordinates (or infinite ones); every subject needs a "
                "position. Recompute the projection (`lse build`)."
            )

    @staticmethod
    def _check_no_infinity(where: str, values: np.ndarray, fix: str) -> None:
        infinite = np.isinf(values)
        if infinite.any():
            rows = np.flatnonzero(infinite)
            raise BundleError(f"{where}: {rows.size} infinite value(s), first at row(s) {rows[:5].tolist()}; {fix}.")

    # -- a bundle still being finished ----------------------------------------------------
    @property
    def build_status(self) -> str:
        """``"complete"``, or ``"servable"`` while a build still adds projections (see :attr:`pending_projections`)."""
        return str(self.manifest.get("build", {}).get("status", "complete"))

    @property
    def pending_projections(self) -> list[str]:
        """Projection keys a running ``lse build`` has still to add (empty once complete)."""
        if self.build_status != "servable":
            return []
        return [key for key in self.manifest.get("build", {}).get("pending", []) if key not in self.projections]

    def refresh_projections(self) -> list[str]:
        """Load the projections a background build has added since this cohort was opened.

        Only projections are picked up (the build adds nothing else once a bundle is
        servable); each new one is validated like at opening. Returns the new keys.
        """
        if self.path is None:
            return []
        manifest = read_manifest(self.path)
        new = [key for key in manifest.get("projections", {}) if key not in self.projections]
        for key in new:
            meta = manifest["projections"][key]
            coords = _load_column(self.path, meta, f"projections.{key}", mmap=True)
            self._check_projection(key, coords)
            self.projections[key] = coords
            self.manifest.setdefault("projections", {})[key] = meta
        self.manifest["build"] = manifest.get("build", {})
        return new

    def _where(self, group: str, name: str) -> str:
        return str(self.path / group / f"{name}.npy") if self.path else f"{group}/{name}"

    @staticmethod
    def _check_column(where: str, values: np.ndarray, shape: tuple[int, ...], dtype: str) -> None:
        if tuple(values.shape) != tuple(shape):
            raise BundleError(
                f"{where}: has shape {tuple(values.shape)}, expected {tuple(shape)} "
                "(one row per subject). The file does not belong to this bundle: rebuild that step."
            )
        if values.dtype != np.dtype(dtype):
            raise BundleError(
                f"{where}: has dtype {values.dtype}, expected {dtype}. "
                f"Convert it with `.astype('{dtype}')` when writing, or rebuild that step."
            )


# -- reading ------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a bundle's manifest (existence, JSON, schema version, required fields)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.exists():
        raise BundleError(
            f"{path}: no such bundle directory. Build one with `lse build --out {path}` "
            f"(or `lse synth --out {path}` for phenotypes only)."
        )
    if not manifest_path.exists():
        partial = " It looks like an interrupted build." if any(path.iterdir()) else ""
        raise BundleError(
            f"{manifest_path}: missing, so {path} is not a complete bundle.{partial} "
            f"Re-run `lse build --out {path}`; finished steps are reused."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc}). {_fix_hint(path)}") from None
    except RecursionError:
        raise BundleError(f"{manifest_path}: nested too deeply to be a manifest. {_fix_hint(path)}") from None
    return check_manifest(manifest, str(manifest_path), _fix_hint(path))


def _load_column(path: Path, meta: Mapping[str, Any], field_name: str, *, mmap: bool) -> np.ndarray:
    """The column (or block) a manifest entry names, in either layout (see :mod:`lse_panel.cohort.partitions`)."""
    ref = ColumnRef.of(meta)
    if ref.table is None and not (path / ref.file).exists():
        raise BundleError(
            f"{path / ref.file}: missing, though manifest field {field_name!r} names it. {_fix_hint(path)}"
        )
    return read_columns(path, ref, mmap=mmap)


def open_bundle(path: str | os.PathLike[str], *, mmap: bool = True, allow_incomplete: bool = False) -> Cohort:
    """Open a bundle, memory-mapping its columns, and validate it against its manifest.

    Raises
    ------
    BundleError
        Naming the file, the field and the fix: missing files, wrong dtype or length,
        duplicate ids, NaN coordinates, an unknown schema version.
    """
    path = Path(path)
    manifest = read_manifest(path)
    build = manifest.get("build", {})
    # "servable": every step the app needs is done, and a build is still adding projections.
    if build.get("status") == "in_progress" and not allow_incomplete:
        done = ", ".join(build.get("steps", {})) or "none"
        raise BundleError(
            f"{path / MANIFEST}: field 'build.status' is 'in_progress' (finished steps: {done}), so "
            f"this is a half-built bundle. Re-run `lse build --out {path}`; finished steps are reused."
        )
    n = manifest["n_subjects"]
    ids = _load_column(path, manifest["ids"], "ids", mmap=mmap)
    if len(ids) != n:
        raise BundleError(
            f"{path / manifest['ids']['file']}: holds {len(ids)} ids but manifest field "
            f"'n_subjects' says {n}. {_fix_hint(path)}"
        )
    specs = {name: PhenotypeSpec.from_json(meta) for name, meta in manifest["phenotypes"].items()}
    phenotypes = {
        name: _load_column(path, meta, f"phenotypes.{name}", mmap=mmap)
        for name, meta in manifest["phenotypes"].items()
    }
    latents = {
        kind: _load_column(path, meta, f"latents.{kind}", mmap=mmap)
        for kind, meta in manifest.get("latents", {}).items()
    }
    projections = {
        key: _load_column(path, meta, f"projections.{key}", mmap=mmap)
        for key, meta in manifest.get("projections", {}).items()
    }
    predictions = {
        kind: {
            name: _load_column(path, meta, f"predictions.{kind}.{name}", mmap=mmap)
            for name, meta in per_kind.items()
        }
        for kind, per_kind in manifest.get("predictions", {}).items()
    }
    modalities = {name: modality_from_json(meta) for name, meta in manifest.get("modalities", {}).items()}
    cohort = Cohort(
        ids=ids,
        phenotypes=phenotypes,
        phenotype_specs=specs,
        modalities=modalities,
        latents=latents,
        projections=projections,
        predictions=predictions,
        manifest=manifest,
        path=path,
    )
    cohort.validate()
    return cohort
