"""``lse build``: from nothing to a servable bundle (synthesise → embed → cross-fit → project), resumable.

Each step records a key of its inputs in the manifest; a rerun skips every step whose key is
unchanged, so a rerun on a finished bundle takes seconds and an interrupted one resumes where it
stopped. Until every step the app needs is done the manifest says ``build.status =
"in_progress"``, which :func:`lse_panel.cohort.bundle.open_bundle` refuses: a half-built bundle
never loads. Then it says ``"servable"`` (listing the projections still to come) while the
single-modality UMAPs are computed, and ``"complete"`` at the end; ``lse serve`` serves a
servable bundle and finishes it in the background.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.cohort.bundle_writer import remove_build_temporaries, update_bundle, write_bundle
from lse_panel.cohort.schema import BundleError
from lse_panel.config import SETTINGS
from lse_panel.digest import checkpoint_digest
from lse_panel.steps import StepRunner, build_lock, run_analysis, step_key
from lse_panel.synth import DOWNSTREAM_TASKS, GENERATOR_VERSION

ID_OFFSET = 1_000_000
"""Synthetic subject ids are 7-digit integers, like UK Biobank's eids."""


def synthesise_bundle(
    out: str | Path,
    *,
    n_subjects: int,
    seed: int = SETTINGS.seed,
    mri_shape: tuple[int, int, int] = SETTINGS.mri_shape,
    overwrite: bool = False,
    progress: bool = True,
    build_status: str = "complete",
    chunk: int = 250_000,
    partitions: int | None = None,
) -> Path:
    """Write a phenotypes-only synthetic bundle; raw ECG/MRI are regenerated from (seed, id) on demand.

    ``partitions=N`` lays it out as N-part Parquet tables (:mod:`lse_panel.cohort.partitions`).
    """
    from lse_panel.synth import PHENOTYPES, SyntheticCohort

    if not 1 <= n_subjects <= SETTINGS.max_subjects:
        raise ValueError(f"--subjects must be between 1 and {SETTINGS.max_subjects:,}; got {n_subjects:,}.")
    source = SyntheticCohort(seed=seed, mri_shape=tuple(mri_shape))
    ids = np.arange(ID_OFFSET, ID_OFFSET + n_subjects, dtype=np.int64)
    parts = []
    with tqdm(total=n_subjects, desc="phenotypes", unit="subj", disable=not progress) as bar:
        for start in range(0, n_subjects, chunk):
            parts.append(source.phenotypes(ids[start : start + chunk]))
            bar.update(min(chunk, n_subjects - start))
    import pandas as pd

    phenotypes = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return write_bundle(
        out,
        ids=ids,
        phenotypes=phenotypes,
        phenotype_specs=PHENOTYPES,
        modalities=source.modalities,
        raw=source.to_json(),
        targets=DOWNSTREAM_TASKS,
        provenance={"generator": "lse_panel.synth", "seed": seed, "n_subjects": n_subjects},
        overwrite=overwrite,
        build_status=build_status,
        partitions=partitions,
    )


def build_cohort(
    out: str | Path,
    *,
    n_subjects: int = SETTINGS.demo_subjects,
    seed: int = SETTINGS.seed,
    model: str | Path = SETTINGS.demo_model,
    projections: tuple[str, ...] = SETTINGS.projection_methods,
    crossfit_splits: int = SETTINGS.crossfit_splits,
    crossfit_max_train: int = SETTINGS.crossfit_max_train,
    batch_size: int = SETTINGS.embed_batch_size,
    until: str = "complete",
    progress: bool = True,
    partitions: int | None = None,
    dask: Any = None,
) -> dict[str, float]:
    """Build (or finish building) a bundle; returns each step's seconds (0 when skipped).

    ``partitions=N`` writes the partitioned Parquet layout; ``dask`` (``"local"``, a scheduler
    address or a ``distributed.Client``) encodes the subjects as one task per partition on that
    cluster, resumable partition by partition (:func:`lse_panel.model.embedding.embed_partitions`).

    The steps the app needs (synthesis, embedding, cross-fitting, every PCA and the fused
    latent's other projections) run first; then the bundle is marked ``servable`` and lists the
    projections still to come, so it can be served while they are computed. ``until="servable"``
    stops there; a later call (``until="complete"``) adds the rest and marks it ``complete``.
    """
    if until not in ("servable", "complete"):
        raise ValueError(f"until must be 'servable' or 'complete', got {until!r}.")
    out = Path(out)
    settings = {
        "n_subjects": n_subjects, "seed": seed, "model": str(model), "projections": list(projections),
        "crossfit_splits": crossfit_splits, "crossfit_max_train": crossfit_max_train,
    }
    client = None
    if dask is not None:
        from lse_panel.cohort.dask_backend import connect

        client = connect(dask)
    try:
        with build_lock(out):
            return _build(out, settings, batch_size=batch_size, until=until, progress=progress,
                          partitions=partitions, client=client)  # fmt: skip
    finally:
        if client is not None and client is not dask:
            _close_client(client)


def _close_client(client: Any) -> None:
    """Close a client this build started (and its local cluster)."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def recorded_build_settings(out: str | Path) -> dict[str, Any]:
    """The settings the bundle at ``out`` was built with (``build_cohort``'s keyword arguments), or {}."""
    path = Path(out) / "manifest.json"
    if not path.exists():
        return {}
    return dict(read_manifest(out).get("build", {}).get("settings", {}))


def _build(out: Path, settings: dict[str, Any], *, batch_size: int, until: str, progress: bool,
           partitions: int | None = None, client: Any = None) -> dict[str, float]:  # fmt: skip
    n_subjects, seed = settings["n_subjects"], settings["seed"]
    projections = tuple(settings["projections"])
    crossfit_splits, crossfit_max_train = settings["crossfit_splits"], settings["crossfit_max_train"]
    model = Path(settings["model"])
    if not (model / "model.pt").exists():
        raise FileNotFoundError(
            f"{model / 'model.pt'}: no model checkpoint. The demo model ships in models/demo; "
            "train another with `lse train --out models/NAME`."
        )
    with open(model / "config.json") as fh:
        model_config = json.load(fh)
    mri_shape = tuple(model_config.get("model", {}).get("mri_shape", SETTINGS.mri_shape))
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of an interrupted synth step
    remove_build_temporaries(out)  # and of a killed embed or write (128 MB per latent kind at 500k)

    steps = StepRunner(out, progress)
    synth_key = step_key("synth", n_subjects, seed, mri_shape, GENERATOR_VERSION)
    if (out / "manifest.json").exists():
        manifest = read_manifest(out)
        if manifest.get("build", {}).get("steps", {}).get("synth", {}).get("key") != synth_key:
            raise BundleError(
                f"{out}: exists but was built with other settings (subjects, seed or MRI shape). "
                f"Choose another --out or delete {out} to rebuild."
            )
        layout = manifest.get("layout", {}).get("format", "npy")
        if partitions is not None and layout != "parquet":
            raise BundleError(
                f"{out}: exists with the .npy layout; --partitions {partitions} asks for Parquet. "
                f"Choose another --out, or drop --partitions to finish this bundle as it is."
            )
        steps.skipped("synth")
    else:
        start = time.perf_counter()
        synthesise_bundle(out, n_subjects=n_subjects, seed=seed, mri_shape=mri_shape, progress=progress,
                          build_status="in_progress", partitions=partitions)
        steps.record("synth", synth_key, time.perf_counter() - start)
    embed_key = step_key(synth_key, checkpoint_digest(model))
    with update_bundle(out) as update:
        update.manifest.setdefault("build", {})["settings"] = {"producer": "synthetic", **settings}
        update.manifest.setdefault("targets", dict(DOWNSTREAM_TASKS))  # bundles built before targets were recorded
        if not steps.up_to_date("embed", embed_key):
            update.set_build_status("in_progress")

    def embed() -> dict[str, Any]:
        from lse_panel.model.embedding import embed_bundle

        figures = embed_bundle(out, model, batch_size=batch_size, progress=progress, client=client)
        return {"figures": {k: v for k, v in (figures or {}).items() if isinstance(v, (int, float, str))}}

    steps.run("embed", embed_key, embed)
    run_analysis(
        out, steps, upstream_key=embed_key, projections=projections, seed=seed,
        crossfit_splits=crossfit_splits, crossfit_max_train=crossfit_max_train, until=until, progress=progress,
    )
    open_bundle(out)  # the bundle must load; fail loudly here rather than in the app
    if progress:
        print(steps.summary())
    return steps.timings
