"""2-D projections of latents (PCA, umap-learn on everyone or on landmarks) and their quality; no torch.

The scalable UMAP (landmarks + a torch network for everyone else) and the ``project`` dispatcher
over every method live in :mod:`lse_panel.model.projection`, the layer allowed to import torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

import numpy as np

from lse_panel.analysis.sampling import sample_rows

ProjectionMethod = Literal["pca", "umap", "umap_full"]
"""``pca``: principal components; ``umap``: UMAP that scales (a full fit up to
:data:`UMAP_FULL_FIT_MAX` subjects, landmarks + a network above); ``umap_full``: umap-learn over everyone."""

PROJECTION_METHODS: tuple[str, ...] = get_args(ProjectionMethod)

UMAP_FULL_FIT_MAX = 100_000
"""Above this many subjects ``method="umap"`` fits UMAP on landmarks and trains a network for the rest.

Why 100k: the landmark path costs about the same whatever n (fit 40k landmarks ~15–28 s, train
~25–30 s, measured on 2 cores shared with other work), while a seeded full fit grows with n
(22 s at 50k, ~40 s at 100k after the numba warm-up, 392 s at 500k). Up to ~100k the full fit is
no slower and it is exact: it keeps more of the finest neighbourhoods (kNN preservation among all
50k: 0.217 against 0.120–0.144 for the landmark path with 6000–12000 training steps)."""

UMAP_LANDMARKS = 40_000
"""Subjects the scalable UMAP fits exactly; the network places everyone else.

Enough that every cluster holding ≥ 0.1 % of the cohort gets ≥ 40 landmarks, small enough that the
fit stays ~15–30 s. Fewer cost finer structure: at 50k, 5k landmarks kept 0.055 of the 15 nearest
neighbours (among all rows), 20k 0.125, 40k 0.120–0.144, a full fit 0.217."""

PCA_FIT_SAMPLE = 200_000
"""PCA is fitted on at most this many subjects (then applied to all in chunks): the two leading
components of 64-d latents are settled long before that (sklearn's full SVD of 200k × 64 takes ~1 s)."""

CHUNK_SIZE = 65_536
"""Rows per chunk when checking or projecting everyone: bounds the working memory at 10M subjects."""

_MIN_SUBJECTS_PCA = 3


class Projector(Protocol):
    """Anything that places new latents on an existing map (for interpolation paths, new subjects)."""

    def transform(self, latents: np.ndarray) -> np.ndarray:
        """``(k, d)`` latents → ``(k, 2)`` float32 coordinates on the fitted map."""
        ...


@dataclass(frozen=True)
class LinearProjector:
    """A fitted PCA: ``(latents - mean) @ components.T``.

    Parameters
    ----------
    components
        ``(2, d)`` principal axes.
    mean
        ``(d,)`` mean subtracted first.
    """

    components: np.ndarray
    mean: np.ndarray

    def transform(self, latents: np.ndarray, *, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
        """Project ``(k, d)`` latents, a chunk at a time, to ``(k, 2)`` float32."""
        latents = as_2d(latents)
        out = np.empty((len(latents), len(self.components)), dtype=np.float32)
        for start in range(0, len(latents), chunk_size):
            chunk = np.asarray(latents[start : start + chunk_size], dtype=np.float32)
            out[start : start + len(chunk)] = (chunk - self.mean) @ self.components.T
        return out


@dataclass(frozen=True)
class UMAPProjector:
    """A fitted ``umap.UMAP``: exact UMAP ``transform``, fine for a path of hundreds of points.

    Slow for many rows (measured: 52 s for 100k, more than fitting them) and it keeps the kNN graph
    and search index in memory; drop it (``result.projector = None``) once the map is stored.
    """

    reducer: Any

    def transform(self, latents: np.ndarray) -> np.ndarray:
        """Project ``(k, d)`` latents to ``(k, 2)`` float32 with umap-learn's ``transform``."""
        return np.asarray(self.reducer.transform(as_2d(latents).astype(np.float32)), dtype=np.float32)


@dataclass
class ProjectionResult:
    """A 2-D projection and what the bundle's manifest needs to describe it.

    Parameters
    ----------
    coords
        ``(n, 2)`` float32 coordinates, one row per subject in input order.
    method
        One of :data:`PROJECTION_METHODS`.
    params
        JSON-serialisable parameters that reproduce the projection (with the library versions).
    elapsed_s
        Wall time of the whole projection.
    timings
        Wall time of each stage (``fit``, ``train``, ``apply``...), seconds.
    projector
        Places new latents on this map (``.transform``), or None.
    """

    coords: np.ndarray
    method: str
    params: dict[str, Any]
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)
    projector: Projector | None = None

    def transform(self, latents: np.ndarray) -> np.ndarray:
        """Place new ``(k, d)`` latents on this map (e.g. an interpolation path between two subjects)."""
        if self.projector is None:
            raise ValueError(
                f"this {self.method} projection kept no fitted model; recompute it with project(...) "
                "and keep the result's projector to transform new latents."
            )
        return self.projector.transform(latents)

    def manifest_entry(self) -> dict[str, Any]:
        """``{"method", "params", "elapsed_s", "timings"}``, ready for ``json.dumps``."""
        return {
            "method": self.method,
            "params": self.params,
            "elapsed_s": round(self.elapsed_s, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def project_pca(
    latents: np.ndarray,
    *,
    seed: int | None = 0,
    progress: bool = True,
    fit_sample: int = PCA_FIT_SAMPLE,
    chunk_size: int = CHUNK_SIZE,
) -> ProjectionResult:
    """The two leading principal components (scikit-learn), fitted on a sample, applied to all in chunks.

    Parameters
    ----------
    latents
        ``(n, d)`` latents.
    seed
        Seeds the choice of the fitting sample (irrelevant when ``n <= fit_sample``).
    progress
        Show a bar over the chunks.
    fit_sample
        Fit on at most this many subjects (see :data:`PCA_FIT_SAMPLE`).
    chunk_size
        Rows per chunk when applying.

    Returns
    -------
    ProjectionResult
        With a :class:`LinearProjector`.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    n, d = check_latents(latents, method="pca", min_subjects=_MIN_SUBJECTS_PCA, chunk_size=chunk_size)
    projector, explained, fitted_on = principal_axes(latents, 2, fit_sample=fit_sample, seed=seed)
    t_fit = time.perf_counter()
    coords = np.empty((n, 2), dtype=np.float32)
    for start in tqdm(range(0, n, chunk_size), desc="pca: apply", disable=not progress, leave=False):
        coords[start : start + chunk_size] = projector.transform(latents[start : start + chunk_size])
    t_end = time.perf_counter()
    params = {
        "n_subjects": n,
        "latent_dim": d,
        "seed": seed,
        "fit_sample": fitted_on,
        "explained_variance_ratio": [float(v) for v in explained],
        # Kept so new latents (an interpolation path, say) land exactly on this projection.
        "mean": [float(v) for v in projector.mean],
        "components": [[float(v) for v in row] for row in projector.components],
        "versions": library_versions("sklearn"),
    }
    return ProjectionResult(
        coords, "pca", params, t_end - t0, {"fit": t_fit - t0, "apply": t_end - t_fit}, projector
    )


def principal_axes(
    latents: np.ndarray, n_components: int, *, fit_sample: int = PCA_FIT_SAMPLE, seed: int | None = 0
) -> tuple[LinearProjector, np.ndarray, int]:
    """The leading principal axes of ``latents`` (scikit-learn's PCA on a sample of at most ``fit_sample`` rows).

    Returns
    -------
    projector, explained_variance_ratio, rows
        A :class:`LinearProjector` onto the ``n_components`` axes, each axis's share of the
        variance, and how many rows it was fitted on.
    """
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    idx = sample_rows(len(latents), fit_sample, seed=seed)
    # The covariance's eigenvectors, on one BLAS thread: 0.4 s for 200k × 256 against 10 s for the
    # full SVD (13 s with two threads fighting other work on the 2-core machine), same axes to 1e-6.
    # sklearn's svd_flip fixes the signs, so the axes do not flip between runs.
    with threadpool_limits(limits=1, user_api="blas"):
        pca = PCA(n_components=n_components, svd_solver="covariance_eigh").fit(np.asarray(latents[idx], dtype=np.float32))
    projector = LinearProjector(pca.components_.astype(np.float32), pca.mean_.astype(np.float32))
    return projector, pca.explained_variance_ratio_, len(idx)


def project_umap_full(
    latents: np.ndarray,
    *,
    seed: int | None = 0,
    progress: bool = True,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    keep_model: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> ProjectionResult:
    """umap-learn fitted on every subject (``low_memory=True``).

    Measured on 2 cores: 20 s at 100k and 109 s at 500k in parallel (``seed=None``); a seed makes
    umap-learn single-threaded: 22 s at 50k, ~40 s at 100k, 392 s at 500k (cores shared with other
    work, load average ~4.5). The first fit in a process also compiles numba code (~30–60 s, not
    cached across processes). Out of reach at 10M: use :func:`lse_panel.model.projection.project_umap`.

    Parameters
    ----------
    latents
        ``(n, d)`` latents; read whole into memory as float32.
    seed
        umap-learn's ``random_state``; ``None`` runs in parallel, not reproducibly.
    progress
        umap-learn's log and epoch bar.
    n_neighbors, min_dist, metric
        umap-learn's parameters.
    keep_model
        Keep the fitted ``umap.UMAP`` (graph and search index: a few hundred MB at 500k) as the
        result's projector.
    chunk_size
        Rows per chunk when checking the latents.

    Returns
    -------
    ProjectionResult
        With a :class:`UMAPProjector` if ``keep_model``.
    """
    t0 = time.perf_counter()
    n, d = check_latents(
        latents, method="umap_full", min_subjects=min_subjects_umap(n_neighbors), chunk_size=chunk_size
    )
    reducer = fit_umap(
        np.asarray(latents, dtype=np.float32),
        seed=seed,
        progress=progress,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
    )
    coords = np.ascontiguousarray(reducer.embedding_, dtype=np.float32)
    t_end = time.perf_counter()
    params = {
        "n_subjects": n,
        "latent_dim": d,
        "seed": seed,
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "metric": metric,
        "versions": library_versions("umap", "sklearn"),
    }
    projector = UMAPProjector(reducer) if keep_model else None
    return ProjectionResult(coords, "umap_full", params, t_end - t0, {"fit": t_end - t0}, projector)


def projection_quality(
    latents: np.ndarray,
    coords: np.ndarray,
    *,
    k: int = 15,
    sample: int = 5000,
    seed: int = 0,
    reference_coords: np.ndarray | None = None,
    scope: Literal["sample", "all"] = "sample",
) -> dict[str, float]:
    """How well a 2-D map keeps the latents' neighbourhoods, measured on a random sample.

    Two scopes, the same when ``n <= sample``:

    - ``"sample"``: neighbourhoods are taken within the sample, as scikit-learn's trustworthiness
      does (O(sample²), ~2 s at 5000). With ``n`` ≫ ``sample`` a sampled point's 15 neighbours are
      about its ``15 n / sample`` nearest in the cohort, so this measures coarser structure: at 50k it
      scored a 5k-landmark map *above* the full fit (0.995 vs 0.982).
    - ``"all"``: each sampled point's neighbours are searched among all ``n`` rows, in both spaces,
      and trustworthiness uses its ranks among all ``n``: the same estimator, at the cohort's true
      neighbourhood scale. O(sample × n × d): ~1–2 s per 1000 samples at 50k, ~10× that at 500k.

    Parameters
    ----------
    latents
        ``(n, d)`` latents.
    coords
        ``(n, 2)`` coordinates of the same rows.
    k
        Neighbours per point.
    sample
        Rows to evaluate on.
    seed
        Seeds the sample.
    reference_coords
        Optional ``(n, 2)`` coordinates of another map of the same rows (e.g. a full UMAP fit).
    scope
        ``"sample"`` or ``"all"``, see above.

    Returns
    -------
    dict
        ``trustworthiness`` (``sklearn.manifold.trustworthiness``, 1 = no false neighbours on the map),
        ``knn_preservation`` (mean fraction of each point's ``k`` nearest latent neighbours that are
        among its ``k`` nearest on the map), ``knn_agreement`` (the same between ``coords`` and
        ``reference_coords``, only if given), ``k`` and ``sample`` (rows used).
    """
    from sklearn.manifold import trustworthiness

    latents, coords = as_2d(latents), as_2d(coords)
    n = len(coords)
    if len(latents) != n or (reference_coords is not None and len(reference_coords) != n):
        raise ValueError(
            f"latents, coords and reference_coords must have one row per subject; got {len(latents)}, "
            f"{n} and {None if reference_coords is None else len(reference_coords)} rows."
        )
    if scope not in ("sample", "all"):
        raise ValueError(f"scope must be 'sample' or 'all', got {scope!r}.")
    limit = min(n, sample) if scope == "sample" else n
    if not 1 <= k < limit / 2:
        raise ValueError(f"k={k} needs 1 <= k < rows/2 (rows = {limit}).")
    idx = sample_rows(n, sample, seed=seed)
    if scope == "all":
        return _quality_all(latents, coords, idx, k, reference_coords)
    x = np.asarray(latents[idx], dtype=np.float32)
    y = np.asarray(coords[idx], dtype=np.float32)
    nn_y = _knn(y, k)
    result = {
        "trustworthiness": float(trustworthiness(x, y, n_neighbors=k)),
        "knn_preservation": _overlap(_knn(x, k), nn_y),
    }
    if reference_coords is not None:
        result["knn_agreement"] = _overlap(_knn(np.asarray(reference_coords[idx], dtype=np.float32), k), nn_y)
    return result | {"k": k, "sample": len(idx)}


def _quality_all(
    latents: np.ndarray, coords: np.ndarray, idx: np.ndarray, k: int, reference_coords: np.ndarray | None
) -> dict[str, float]:
    """:func:`projection_quality` with each sampled point's neighbours searched among all rows."""
    n, m = len(coords), len(idx)
    x = np.asarray(latents, dtype=np.float32)
    y = np.asarray(coords, dtype=np.float32)
    nn_y = _knn_among_all(y, idx, k)
    sq_norms = np.einsum("ij,ij->i", x, x)
    nn_x = np.empty((m, k), dtype=np.int64)
    penalty = 0.0
    for start in range(0, m, 128):
        # 128 queries × n squared distances: 256 MB at 500k, as one BLAS product.
        q = idx[start : start + 128]
        d = sq_norms[q, None] - 2.0 * (x[q] @ x.T) + sq_norms[None, :]
        d[np.arange(len(q)), q] = np.inf  # a point is not its own neighbour
        nn_x[start : start + len(q)] = np.argpartition(d, k, axis=1)[:, :k]
        for r, row in enumerate(d):
            thresholds = row[nn_y[start + r]]
            # Rank among all n (1 = nearest) of each map neighbour; only rows below the largest
            # threshold can count, which keeps this near O(n) per query for a good map.
            closer = row[row < thresholds.max()]
            ranks = (closer[None, :] < thresholds[:, None]).sum(axis=1) + 1
            penalty += float(np.maximum(ranks - k, 0).sum())
    # sklearn's normalisation with n subjects, averaged over the m sampled ones.
    trust = 1.0 - penalty * 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0))
    result = {"trustworthiness": trust, "knn_preservation": _overlap(nn_x, nn_y)}
    if reference_coords is not None:
        nn_ref = _knn_among_all(np.asarray(reference_coords, dtype=np.float32), idx, k)
        result["knn_agreement"] = _overlap(nn_ref, nn_y)
    return result | {"k": k, "sample": m}


def _knn_among_all(y: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest rows of ``y`` to each of ``y[idx]``, the query itself left out (KD-tree)."""
    from sklearn.neighbors import NearestNeighbors

    found = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y[idx], return_distance=False)
    is_self = found == idx[:, None]
    # Duplicated coordinates can push the query itself out of its k + 1; then drop the farthest.
    is_self[~is_self.any(axis=1), -1] = True
    return found[~is_self].reshape(len(idx), k)


def fit_umap(x: np.ndarray, *, seed: int | None, progress: bool, **umap_params: Any) -> Any:
    """A fitted ``umap.UMAP`` (2-D, low memory) of ``x``; ``seed=None`` runs in parallel, not reproducibly."""
    import warnings

    with warnings.catch_warnings():
        # umap-learn warns on import that TensorFlow (for its own ParametricUMAP) is missing; we do
        # not use it (lse_panel.model.parametric_umap is the torch equivalent).
        warnings.simplefilter("ignore", ImportWarning)
        import umap

    reducer = umap.UMAP(
        n_components=2,
        random_state=seed,
        # A random_state makes umap-learn single-threaded anyway; saying so avoids its warning.
        n_jobs=1 if seed is not None else -1,
        low_memory=True,
        verbose=progress,
        tqdm_kwds={"desc": "umap: epochs", "leave": False, "disable": not progress},
        **umap_params,
    )
    with warnings.catch_warnings():
        # Clustered cohorts give a kNN graph in several pieces; umap-learn lays each piece out on its
        # own (multi-component layout), so scikit-learn's warning about it is expected, not a fault.
        warnings.filterwarnings("ignore", message="Graph is not fully connected", category=UserWarning)
        reducer.fit(x)
    return reducer


def min_subjects_umap(n_neighbors: int) -> int:
    """The fewest subjects a UMAP with ``n_neighbors`` neighbours is fitted on."""
    # umap-learn's spectral initialisation fails or degenerates when n is close to n_neighbors.
    return max(4 * n_neighbors, 50)


def as_2d(a: Any) -> np.ndarray:
    """``a`` as a 2-D array, or a ``ValueError`` saying how to reshape it."""
    a = a if hasattr(a, "ndim") else np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D (rows, columns) array, got shape {a.shape}; reshape it (e.g. a[None, :]).")
    return a


def check_latents(latents: Any, *, method: str, min_subjects: int, chunk_size: int) -> tuple[int, int]:
    """Shape, dtype, size and finiteness, checked a chunk at a time (no n × d temporary at 10M)."""
    ndim = getattr(latents, "ndim", None)
    if ndim != 2:
        shape = getattr(latents, "shape", type(latents).__name__)
        raise ValueError(
            f"latents must be a 2-D numpy array (subjects × latent dimensions); got {shape}. "
            "Stack one vector per subject, e.g. np.stack(vectors) or a[None, :] for a single subject."
        )
    n, d = latents.shape
    if not np.issubdtype(latents.dtype, np.number) or np.issubdtype(latents.dtype, np.complexfloating):
        raise ValueError(f"latents must be real numbers (float32), got dtype {latents.dtype}.")
    if d < 2:
        raise ValueError(f"latents have {d} dimension(s); a 2-D projection needs at least 2.")
    if n < min_subjects:
        raise ValueError(
            f"method={method!r} needs at least {min_subjects} subjects, got {n}; "
            + ("use method='pca' or a smaller n_neighbors." if method != "pca" else "add subjects.")
        )
    for start in range(0, n, chunk_size):
        chunk = latents[start : start + chunk_size]
        if not np.isfinite(chunk).all():
            rows = start + np.flatnonzero(~np.isfinite(chunk).all(axis=1))
            raise ValueError(
                f"latents hold NaN or infinite values in {len(rows)} row(s) of {start}..{start + len(chunk) - 1} "
                f"(first: row {rows[0]}); drop or impute those subjects before projecting."
            )
    return n, d


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    # kneighbors() without arguments leaves each point out of its own neighbours.
    return NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of each row of ``a`` found in the same row of ``b`` (both ``(m, k)`` index arrays)."""
    return float((a[:, :, None] == b[:, None, :]).any(axis=2).mean())


def library_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``umap``, ``sklearn`` or ``torch``, by distribution name, for a projection's params."""
    from importlib.metadata import version

    names = {"umap": "umap-learn", "sklearn": "scikit-learn", "torch": "torch"}
    return {names[p]: version(names[p]) for p in packages}
