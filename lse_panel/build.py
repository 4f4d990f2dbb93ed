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

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from lse_panel.cohort.bundle import open_bundle, read_manifest, update_bundle, write_bundle
from lse_panel.cohort.schema import BundleError
from lse_panel.config import SETTINGS
from lse_panel.digest import checkpoint_digest
from lse_panel.synth import GENERATOR_VERSION

#: The downstream tasks the model card and the accuracy pane report (issue 3's list).
DOWNSTREAM_TASKS: dict[str, str] = {
    "age": "regression",
    "bmi": "regression",
    "lv_mass": "regression",
    "lvedv": "regression",
    "lvesv": "regression",
    "lvef": "regression",
    "heart_rate": "regression",
    "qrs_duration": "regression",
    "qtc": "regression",
    "sex": "classification",
    "af": "classification",
    "hypertension": "classification",
    "lvh": "classification",
}

ID_OFFSET = 1_000_000
"""Synthetic subject ids are 7-digit integers, like UK Biobank's eids."""


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    if not 1 <= n_subjects <= 50_000_000:
        raise ValueError(f"--subjects must be between 1 and 50,000,000; got {n_subjects:,}.")
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
        provenance={"generator": "lse_panel.synth", "seed": seed, "n_subjects": n_subjects},
        overwrite=overwrite,
        build_status=build_status,
        partitions=partitions,
    )


class _Step:
    """Runs one build step unless the manifest shows it already finished with the same inputs."""

    def __init__(self, out: Path, progress: bool) -> None:
        self.out = out
        self.progress = progress
        self.timings: dict[str, float] = {}

    def up_to_date(self, name: str, key: str) -> bool:
        """Whether the manifest shows step ``name`` finished with inputs ``key``."""
        return read_manifest(self.out).get("build", {}).get("steps", {}).get(name, {}).get("key") == key

    def run(self, name: str, key: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        if self.up_to_date(name, key):
            self.timings[name] = 0.0
            if self.progress:
                print(f"[{name}] up to date, skipped")
            return
        start = time.perf_counter()
        info = fn() or {}
        elapsed = time.perf_counter() - start
        self.timings[name] = elapsed
        with update_bundle(self.out) as update:
            update.record_step(name, key=key, elapsed_s=round(elapsed, 2), **info)
        if self.progress:
            print(f"[{name}] done in {elapsed:.1f} s", flush=True)


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for the whole build: two builders would overwrite each other's manifest."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.build.lock"
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BundleError(
                f"{out}: another `lse build` ({holder}) is building this bundle. Wait for it to finish "
                f"(it resumes where it stops if killed), or delete {lock} if no build is running."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


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
        with _build_lock(out):
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

    steps = _Step(out, progress)
    synth_key = _key("synth", n_subjects, seed, mri_shape, GENERATOR_VERSION)
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
        steps.timings["synth"] = 0.0
        if progress:
            print("[synth] up to date, skipped")
    else:
        start = time.perf_counter()
        synthesise_bundle(out, n_subjects=n_subjects, seed=seed, mri_shape=mri_shape, progress=progress,
                          build_status="in_progress", partitions=partitions)
        with update_bundle(out) as update:
            update.record_step("synth", key=synth_key, elapsed_s=round(time.perf_counter() - start, 2))
        steps.timings["synth"] = time.perf_counter() - start
        if progress:
            print(f"[synth] done in {steps.timings['synth']:.1f} s", flush=True)
    embed_key = _key(synth_key, checkpoint_digest(model))
    crossfit_key = _key(embed_key, crossfit_splits, crossfit_max_train, seed, DOWNSTREAM_TASKS)
    # Every PCA first (seconds), then the fused latent's other maps: the app is useful as soon as
    # those exist. The single-modality UMAPs follow while the bundle is already servable.
    order = [(kind, m) for m in projections if m == "pca" for kind in ("fused", "ecg", "mri")]
    order += [(kind, m) for m in projections if m != "pca" for kind in ("fused", "ecg", "mri")]
    project_keys = {f"{kind}/{method}": _key(embed_key, method, seed) for kind, method in order}
    serve_first = [name for name in project_keys if name.startswith("fused/") or name.endswith("/pca")]
    later = [name for name in project_keys if name not in serve_first]

    needed_to_serve = {"embed": embed_key, "crossfit": crossfit_key} | {f"project:{n}": project_keys[n] for n in serve_first}
    with update_bundle(out) as update:
        update.manifest.setdefault("build", {})["settings"] = settings  # so `lse serve` can finish it the same way
        if not all(steps.up_to_date(step, key) for step, key in needed_to_serve.items()):
            update.set_build_status("in_progress")

    def embed() -> dict[str, Any]:
        from lse_panel.model.embedding import embed_bundle

        figures = embed_bundle(out, model, batch_size=batch_size, progress=progress, client=client)
        return {"figures": {k: v for k, v in (figures or {}).items() if isinstance(v, (int, float, str))}}

    steps.run("embed", embed_key, embed)

    def crossfit() -> None:
        from lse_panel.analysis.crossfit import cross_fit_predictions

        cohort = open_bundle(out, allow_incomplete=True)
        tasks = {k: v for k, v in DOWNSTREAM_TASKS.items() if k in cohort.phenotype_specs}
        targets = cohort.phenotypes[list(tasks)]
        for kind in tqdm(list(cohort.latents), desc="cross-fit", disable=not progress):
            predictions = cross_fit_predictions(
                np.asarray(cohort.latent(kind)), targets, tasks,
                n_splits=crossfit_splits, seed=seed, max_train=crossfit_max_train,
            )
            with update_bundle(out) as update:
                for name, values in predictions.items():
                    update.add_prediction(
                        kind, name, values, task=tasks[name], n_splits=crossfit_splits,
                        model="ridge" if tasks[name] == "regression" else "logistic",
                    )

    steps.run("crossfit", crossfit_key, crossfit)

    def project_one(name: str) -> dict[str, Any]:
        from lse_panel.model.projection import project

        kind, _, method = name.partition("/")
        cohort = open_bundle(out, allow_incomplete=True)
        result = project(np.asarray(cohort.latent(kind)), method, seed=seed, progress=progress)
        entry = result.manifest_entry()
        with update_bundle(out) as update:
            update.add_projection(kind, method, result.coords, params=entry["params"],
                                  elapsed_s=entry["elapsed_s"], timings=entry["timings"])
        return {}

    for name in serve_first:
        steps.run(f"project:{name}", project_keys[name], lambda name=name: project_one(name))
    announced = False
    for i, name in enumerate(later):
        pending = [n for n in later[i:] if not steps.up_to_date(f"project:{n}", project_keys[n])]
        if pending:
            with update_bundle(out) as update:
                update.set_build_status("servable", pending=pending)
                for key in pending:  # maps of older latents must not be served as if current
                    update.manifest.get("projections", {}).pop(key, None)
            if progress and not announced:
                print(f"[servable] the bundle can be served now; still to come: {', '.join(pending)}", flush=True)
            announced = True
            if until == "servable":
                break
        steps.run(f"project:{name}", project_keys[name], lambda name=name: project_one(name))
    if all(steps.up_to_date(f"project:{n}", k) for n, k in project_keys.items()):
        with update_bundle(out) as update:
            update.set_build_status("complete")
    open_bundle(out)  # the bundle must load; fail loudly here rather than in the app
    if progress:
        total = sum(steps.timings.values())
        print("build times: " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.timings.items()) + f"; total {total:.1f} s")
    return steps.timings
