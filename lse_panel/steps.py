"""The build steps every bundle producer shares: step records, the builder's lock, cross-fitting, projections.

A producer (the synthetic ``lse build``, ``lse import``) writes a bundle's ids, phenotypes and
latents its own way, then hands the bundle to :func:`run_analysis`, which adds what the app
needs from any bundle with latents: cross-fitted predictions of the bundle's targets and the
2-D maps of every latent kind. Each step records a key of its inputs in the manifest; a rerun
skips every step whose key is unchanged, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.cohort.bundle_writer import update_bundle
from lse_panel.cohort.schema import BundleError


UMAP_INPUT_DIMS = 64
"""Latents wider than this are mapped by UMAP from their leading principal components, as scanpy
maps cells from 50: the neighbour search and the projection network cost grows with the width.
Measured on the loaded 2-core machine: the fused UMAP of 500k × 256 latents took 320 s from all 256
values (network training alone ~180 s). On 30k of those subjects (64 components keep 95 % of the
variance), umap-learn took 14.5 s from 64 components against 183 s from 256, with the same
quality against the full latents (k = 15, 5000 sampled: trustworthiness 0.957 both, kNN
preservation 0.103 against 0.102)."""


def step_key(*parts: Any) -> str:
    """A short digest of a step's inputs: equal keys mean the step's output is still current."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StepRunner:
    """Runs one build step unless the manifest shows it already finished with the same inputs.

    Parameters
    ----------
    out
        The bundle directory.
    progress
        Print each step's outcome and time.

    Attributes
    ----------
    timings
        Step name → seconds it took in this run (0 when skipped).
    """

    def __init__(self, out: Path, progress: bool) -> None:
        self.out = out
        self.progress = progress
        self.timings: dict[str, float] = {}

    def up_to_date(self, name: str, key: str) -> bool:
        """Whether the manifest shows step ``name`` finished with inputs ``key``."""
        if not (self.out / "manifest.json").exists():
            return False
        return read_manifest(self.out).get("build", {}).get("steps", {}).get(name, {}).get("key") == key

    def run(self, name: str, key: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        """Run ``fn`` (which writes its output into the bundle) and record it, unless up to date."""
        if self.up_to_date(name, key):
            self.skipped(name)
            return
        start = time.perf_counter()
        info = fn() or {}
        self.record(name, key, time.perf_counter() - start, **info)

    def skipped(self, name: str) -> None:
        """Note that step ``name`` was up to date."""
        self.timings[name] = 0.0
        if self.progress:
            print(f"[{name}] up to date, skipped")

    def record(self, name: str, key: str, elapsed: float, **info: Any) -> None:
        """Record a finished step (for steps that create the bundle, so could not run through :meth:`run`)."""
        self.timings[name] = elapsed
        with update_bundle(self.out) as update:
            update.record_step(name, key=key, elapsed_s=round(elapsed, 2), **info)
        if self.progress:
            print(f"[{name}] done in {elapsed:.1f} s", flush=True)

    def summary(self) -> str:
        """One line: every step's time and the total."""
        total = sum(self.timings.values())
        return "build times: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()) + f"; total {total:.1f} s"


@contextmanager
def build_lock(out: Path, *, command: str = "lse build") -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for a whole build: two builders would overwrite each other's manifest."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.build.lock"
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BundleError(
                f"{out}: another `{command}` ({holder}) is building this bundle. Wait for it to finish "
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


def primary_kind(kinds: Sequence[str]) -> str:
    """The latent kind mapped first (the app opens on it): ``fused`` when there is one, else the first."""
    if not kinds:
        raise BundleError("the bundle has no latents, so there is nothing to cross-fit or map.")
    return "fused" if "fused" in kinds else kinds[0]


def run_analysis(
    out: Path,
    steps: StepRunner,
    *,
    upstream_key: str,
    projections: Sequence[str],
    seed: int,
    crossfit_splits: int,
    crossfit_max_train: int | None,
    until: str = "complete",
    progress: bool = True,
) -> None:
    """Cross-fit the bundle's targets and project every latent kind; mark the bundle servable, then complete.

    The steps the app needs (cross-fitting, every PCA and the primary latent's other maps, see
    :func:`primary_kind`) run first, then the bundle is marked ``servable`` listing the maps
    still to come, which follow unless ``until="servable"``.

    Parameters
    ----------
    out
        A bundle with latents (``build.status`` may be ``in_progress``).
    steps
        The producer's step runner (so one build reports one set of timings).
    upstream_key
        Key of whatever produced the latents: a new key recomputes everything here.
    projections
        Projection methods (``pca``, ``umap``...), each applied to every latent kind.
    seed, crossfit_splits, crossfit_max_train
        See :func:`lse_panel.analysis.crossfit.cross_fit_predictions` and
        :func:`lse_panel.analysis.projection.project`.
    until
        ``"servable"`` stops once the app can serve the bundle; ``"complete"`` adds every map.
    progress
        Print step times and show progress bars.
    """
    if until not in ("servable", "complete"):
        raise ValueError(f"until must be 'servable' or 'complete', got {until!r}.")
    manifest = read_manifest(out)
    kinds = list(manifest.get("latents", {}))
    first = primary_kind(kinds)
    kinds = [first] + [k for k in kinds if k != first]
    targets = dict(manifest.get("targets") or {})
    crossfit_key = step_key(upstream_key, crossfit_splits, crossfit_max_train, seed, targets)
    # Every PCA first (seconds), then the primary latent's other maps: the app is useful as soon
    # as those exist. The other kinds' UMAPs follow while the bundle is already servable.
    order = [(kind, m) for m in projections if m == "pca" for kind in kinds]
    order += [(kind, m) for m in projections if m != "pca" for kind in kinds]
    project_keys = {f"{kind}/{method}": step_key(upstream_key, method, seed) for kind, method in order}
    serve_first = [name for name in project_keys if name.startswith(f"{first}/") or name.endswith("/pca")]
    later = [name for name in project_keys if name not in serve_first]

    needed_to_serve = {"crossfit": crossfit_key} | {f"project:{n}": project_keys[n] for n in serve_first}
    if not all(steps.up_to_date(step, key) for step, key in needed_to_serve.items()):
        with update_bundle(out) as update:
            update.set_build_status("in_progress")

    # The cross-fit and the maps are single-threaded (one BLAS thread; a seeded UMAP), so on two
    # cores the primary latent's slow map is computed beside the cross-fit and written after it.
    meanwhile = None
    if not steps.up_to_date("crossfit", crossfit_key):
        slow = [n for n in serve_first if not n.endswith("/pca") and not steps.up_to_date(f"project:{n}", project_keys[n])]
        if slow:
            meanwhile = _ProjectionMeanwhile(out, slow[0], seed=seed, progress=progress)
    steps.run("crossfit", crossfit_key, lambda: _crossfit(out, targets, seed=seed, n_splits=crossfit_splits,
                                                          max_train=crossfit_max_train, progress=progress))
    done_meanwhile = meanwhile is not None and meanwhile.finish(steps, project_keys[meanwhile.name])
    for name in serve_first:
        if done_meanwhile and name == meanwhile.name:
            continue  # recorded by finish() with the time it took beside the cross-fit
        steps.run(f"project:{name}", project_keys[name], lambda name=name: _project(out, name, seed=seed, progress=progress))
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
        steps.run(f"project:{name}", project_keys[name], lambda name=name: _project(out, name, seed=seed, progress=progress))
    if all(steps.up_to_date(f"project:{n}", k) for n, k in project_keys.items()):
        with update_bundle(out) as update:
            update.set_build_status("complete")


class _ProjectionMeanwhile:
    """One map computed in a background thread while the cross-fit runs, written to the bundle after it.

    Both steps are single-threaded (the cross-fit holds BLAS to one thread; a seeded UMAP runs its
    numba code and its projection network on one), so on a 2-core machine they overlap almost
    fully: measured on the 500k × 3 × 256 import benchmark, cross-fit 124-168 s and the fused UMAP
    108-186 s ran one after the other. Only this thread maps while the cross-fit runs, so two UMAPs
    never run at once (numba's parallel kernels must not run in two threads). Only the main thread
    writes the manifest: the result waits in memory until :meth:`finish`.
    """

    def __init__(self, out: Path, name: str, *, seed: int, progress: bool) -> None:
        self.name = name
        self._result: tuple[Any, dict[str, Any]] | None = None
        self._error: BaseException | None = None
        self._elapsed = 0.0

        def compute() -> None:
            start = time.perf_counter()
            try:
                # No progress bars here: they would interleave with the cross-fit's.
                self._result = _compute_projection(out, name, seed=seed, progress=False)
            except BaseException as exc:  # noqa: BLE001 - reported by finish(), which reruns the step
                self._error = exc
            self._elapsed = time.perf_counter() - start

        if progress:
            print(f"[project:{name}] computing beside the cross-fit", flush=True)
        self._out = out
        self._thread = threading.Thread(target=compute, name=f"project:{name}", daemon=True)
        self._thread.start()

    def finish(self, steps: StepRunner, key: str) -> bool:
        """Wait for the map and record it as its step; ``False`` if it failed (the step then runs again as usual)."""
        self._thread.join()
        if self._result is None:
            if steps.progress:
                print(f"[project:{self.name}] failed beside the cross-fit ({self._error!r}); running it again", flush=True)
            return False
        _write_projection(self._out, self.name, *self._result)
        steps.record(f"project:{self.name}", key, self._elapsed, overlapped_with="crossfit")
        return True


def _crossfit(
    out: Path, targets: dict[str, str], *, seed: int, n_splits: int, max_train: int | None, progress: bool
) -> dict[str, Any]:
    from lse_panel.analysis.crossfit import cross_fit_predictions

    cohort = open_bundle(out, allow_incomplete=True)
    tasks = {name: task for name, task in targets.items() if name in cohort.phenotype_specs}
    if not tasks:
        return {"targets": 0}
    frame = pd.DataFrame({name: np.array(cohort.phenotype(name)) for name in tasks})
    kinds = list(cohort.latents)
    del cohort
    for kind in tqdm(kinds, desc="cross-fit", disable=not progress):
        # The bundle is reopened per kind and let go after it, so one kind's pages are mapped at a
        # time: peak RSS held all three 500k × 256 blocks (1.5 GB) when one cohort served them all.
        block = open_bundle(out, allow_incomplete=True).latent(kind)
        predictions = cross_fit_predictions(block, frame, tasks, n_splits=n_splits, seed=seed, max_train=max_train)
        del block
        with update_bundle(out) as update:
            for name, values in predictions.items():
                update.add_prediction(
                    kind, name, values, task=tasks[name], n_splits=n_splits,
                    model="ridge" if tasks[name] == "regression" else "logistic",
                )
    return {"targets": len(tasks)}


def _project(out: Path, name: str, *, seed: int, progress: bool) -> dict[str, Any]:
    _write_projection(out, name, *_compute_projection(out, name, seed=seed, progress=progress))
    return {}


def _compute_projection(out: Path, name: str, *, seed: int, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Map ``name`` (``"<kind>/<method>"``) from the bundle's latents; returns the result and how its input was reduced."""
    from lse_panel.analysis.projection import principal_axes
    from lse_panel.model.projection import project

    kind, _, method = name.partition("/")
    latents = open_bundle(out, allow_incomplete=True).latent(kind)
    reduced: dict[str, Any] = {}
    if method.startswith("umap") and latents.shape[1] > UMAP_INPUT_DIMS:
        axes, explained, rows = principal_axes(latents, UMAP_INPUT_DIMS, fit_sample=50_000, seed=seed)
        reduced = {"input": f"{UMAP_INPUT_DIMS} leading principal components (fitted on {rows:,} subjects)",
                   "input_variance_kept": round(float(explained.sum()), 4)}
        latents = axes.transform(latents)
    return project(np.asarray(latents), method, seed=seed, progress=progress), reduced


def _write_projection(out: Path, name: str, result: Any, reduced: dict[str, Any]) -> None:
    kind, _, method = name.partition("/")
    entry = result.manifest_entry()
    with update_bundle(out) as update:
        update.add_projection(kind, method, result.coords, params=entry["params"] | reduced,
                              elapsed_s=entry["elapsed_s"], timings=entry["timings"])
