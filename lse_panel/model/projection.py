"""Projections that need torch: UMAP that scales (landmarks + a network), and ``project`` over every method.

Above :data:`~lse_panel.analysis.projection.UMAP_FULL_FIT_MAX` subjects, umap-learn is fitted on
landmarks and a small torch network (:mod:`lse_panel.model.parametric_umap`) places everyone; the
torch-free methods (PCA, umap-learn on everyone) and the quality measures live in
:mod:`lse_panel.analysis.projection`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lse_panel.analysis.sampling import sample_rows
from lse_panel.analysis.projection import (
    CHUNK_SIZE,
    PROJECTION_METHODS,
    UMAP_FULL_FIT_MAX,
    UMAP_LANDMARKS,
    ProjectionMethod,
    ProjectionResult,
    as_2d,
    check_latents,
    fit_umap,
    library_versions,
    min_subjects_umap,
    project_pca,
    project_umap_full,
)
from lse_panel.model.parametric_umap import apply_projection_net, save_projection_net, train_projection_net

__all__ = ["NetworkProjector", "project", "project_umap"]


@dataclass(frozen=True)
class NetworkProjector:
    """A trained :class:`lse_panel.model.parametric_umap.ProjectionNet`: ~4 s per million rows.

    Parameters
    ----------
    net
        The trained network.
    threads
        At most this many torch threads when applying it.
    """

    net: Any
    threads: int = 2

    def transform(self, latents: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Project ``(k, d)`` latents to ``(k, 2)`` float32, a chunk at a time."""
        return apply_projection_net(self.net, as_2d(latents), threads=self.threads, progress=progress)

    def save(self, path: Any) -> None:
        """Write the network to ``path`` (reload with ``lse_panel.model.parametric_umap.load_projection_net``)."""
        save_projection_net(self.net, path)


def project(
    latents: np.ndarray,
    method: ProjectionMethod = "umap",
    *,
    seed: int | None = 0,
    progress: bool = True,
    **params: Any,
) -> ProjectionResult:
    """Project latents to 2-D.

    Parameters
    ----------
    latents
        ``(n, d)`` latents, float32 (a memory-mapped array is read in chunks where the method allows).
    method
        ``"pca"`` (:func:`project_pca`, seconds at 10M), ``"umap"`` (:func:`project_umap`, the scalable
        one: a full fit up to :data:`UMAP_FULL_FIT_MAX` subjects, landmarks + network above) or
        ``"umap_full"`` (:func:`project_umap_full`, umap-learn over everyone: ~2 min at 500k).
    seed
        Seeds every random choice: the same latents and seed give identical coordinates.
        ``None`` lets umap-learn use both cores, faster but not reproducible.
    progress
        Show progress bars for the long steps.
    **params
        Options of the method's function (e.g. ``n_neighbors``, ``n_landmarks``).

    Returns
    -------
    ProjectionResult
        Coordinates, method, parameters, timings and a fitted projector.

    Raises
    ------
    ValueError
        For an unknown method, or latents that are not a finite ``(n, d)`` array with enough rows.
    """
    functions = {"pca": project_pca, "umap": project_umap, "umap_full": project_umap_full}
    if method not in functions:
        raise ValueError(f"unknown projection method {method!r}; choose one of {', '.join(PROJECTION_METHODS)}.")
    return functions[method](latents, seed=seed, progress=progress, **params)


def project_umap(
    latents: np.ndarray,
    *,
    seed: int | None = 0,
    progress: bool = True,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    full_fit_max: int = UMAP_FULL_FIT_MAX,
    n_landmarks: int = UMAP_LANDMARKS,
    hidden: tuple[int, ...] = (128, 128),
    regression_steps: int = 10_000,
    umap_steps: int = 0,
    threads: int = 2,
    chunk_size: int = CHUNK_SIZE,
) -> ProjectionResult:
    """UMAP that scales: a full fit up to ``full_fit_max`` subjects, landmarks + a network above.

    Above ``full_fit_max``: umap-learn is fitted on ``n_landmarks`` subjects drawn at random; a small
    torch MLP (:mod:`lse_panel.model.parametric_umap`) learns latents → that layout by regression
    (optionally refined with the UMAP cross-entropy on the landmarks' kNN graph, ``umap_steps``) and is
    applied to every subject, landmarks included, so that the whole map is one function of the latents.
    Cost beyond the landmark fit (~25 s) and training (~30 s) is the network's application: 1.4–1.8 s
    at 500k, 44 s at 10M (2 cores shared with other work, load average ~4.5): ~1 min at 500k and
    ~1.7 min at 10M in all, against 392 s for a seeded full fit at 500k.

    Quality against a full fit (64-d, k=15): within a 5000 sample (coarse neighbourhoods) at 500k,
    trustworthiness 0.974 vs 0.977, kNN preservation 0.457 vs 0.501, 54 % of map neighbours shared;
    among all 50k rows (finest neighbourhoods, 40k landmarks), trustworthiness 0.984 vs 0.985, kNN
    preservation 0.144 vs 0.217: as trustworthy, but the network blurs the finest structure.

    Parameters
    ----------
    latents
        ``(n, d)`` latents.
    seed
        Seeds the landmark draw, UMAP and the network; ``None``: umap-learn runs in parallel.
    progress
        Show progress bars.
    n_neighbors, min_dist, metric
        umap-learn's parameters.
    full_fit_max
        Fit everyone exactly up to this many subjects (see :data:`UMAP_FULL_FIT_MAX`); set it below
        ``n`` to force the landmark path.
    n_landmarks
        Landmarks above ``full_fit_max`` (see :data:`UMAP_LANDMARKS`).
    hidden, regression_steps, umap_steps
        The network's hidden widths and training steps per phase (see
        :func:`lse_panel.model.parametric_umap.train_projection_net`).
    threads
        At most this many torch threads when applying the network (training uses one: see
        :func:`lse_panel.model.parametric_umap.train_projection_net`).
    chunk_size
        Rows per chunk when checking and applying.

    Returns
    -------
    ProjectionResult
        With ``params["path"]`` ``"full"`` (a :class:`UMAPProjector`) or ``"landmarks"`` (a
        :class:`NetworkProjector`).
    """
    t0 = time.perf_counter()
    n, d = check_latents(latents, method="umap", min_subjects=min_subjects_umap(n_neighbors), chunk_size=chunk_size)
    umap_params = {"n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric}
    if n <= full_fit_max:
        result = project_umap_full(latents, seed=seed, progress=progress, chunk_size=chunk_size, **umap_params)
        result.method = "umap"
        result.params |= {"path": "full", "full_fit_max": full_fit_max}
        result.elapsed_s = time.perf_counter() - t0
        return result

    idx = sample_rows(n, n_landmarks, seed=seed)
    landmarks = np.asarray(latents[idx], dtype=np.float32)
    reducer = fit_umap(landmarks, seed=seed, progress=progress, **umap_params)
    t_fit = time.perf_counter()
    net = train_projection_net(
        landmarks,
        reducer.embedding_,
        graph=reducer.graph_,
        hidden=hidden,
        regression_steps=regression_steps,
        umap_steps=umap_steps,
        a=float(reducer._a),
        b=float(reducer._b),
        seed=0 if seed is None else seed,
        progress=progress,
    )
    t_train = time.perf_counter()
    coords = apply_projection_net(net, latents, chunk_size=chunk_size, threads=threads, progress=progress)
    t_end = time.perf_counter()
    params = {
        "n_subjects": n,
        "latent_dim": d,
        "seed": seed,
        "path": "landmarks",
        **umap_params,
        "full_fit_max": full_fit_max,
        "n_landmarks": len(idx),
        "hidden": list(hidden),
        "regression_steps": regression_steps,
        "umap_steps": umap_steps,
        "versions": library_versions("umap", "sklearn", "torch"),
    }
    timings = {"fit_landmarks": t_fit - t0, "train": t_train - t_fit, "apply": t_end - t_train}
    return ProjectionResult(coords, "umap", params, t_end - t0, timings, NetworkProjector(net, threads))
