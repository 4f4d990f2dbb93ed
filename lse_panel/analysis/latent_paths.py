"""Paths through latent space: directions, perturbations, interpolations, their decodes and their place on a 2-D map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from lse_panel.analysis.decode import Decoder, mean_latent
from lse_panel.analysis.sampling import sample_rows

__all__ = [
    "NeighbourPlacer",
    "decode_path",
    "direction_from_means",
    "direction_sd",
    "group_direction",
    "interpolate",
    "latent_covariance",
    "pca_params",
    "pca_transform",
    "perturb",
    "place_in_projection",
    "principal_directions",
    "principal_from_covariance",
    "unit_direction",
]

SAMPLE = 50_000
"""Subjects a direction's statistics or a path's placement is computed from (a seeded sample).

50k rows pin the leading principal directions of a 64-value latent to well under a degree and
keep a covariance to ~10 ms; as neighbours for placing a path they are dense enough that the
k nearest of a point inside the cloud lie within its local structure."""

_BLAS_THREADS = 1
"""BLAS threads for this module's matrix products. On the 2 shared cores, OpenBLAS's default 2
threads made a 50k × 64 covariance take 10 ms to 1.1 s from call to call (a thread waiting on a busy
core); one thread took 10-18 ms every time. The products here are small, so one thread loses little."""

_CANDIDATES = 8
"""Extra neighbours taken on the fast float32 distance before the exact float64 re-ranking."""


# -- sampling ------------------------------------------------------------------------------------
def _gather(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # Indexed, never converted whole: a cluster's block (a RemoteColumn) fetches what is indexed.
    if len(rows) == block.shape[0]:
        return np.asarray(block[:], dtype=np.float64)
    return np.asarray(block[rows], dtype=np.float64)


# -- directions ----------------------------------------------------------------------------------
def latent_covariance(
    block: np.ndarray, *, sample: int | None = SAMPLE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the latents, from a seeded sample: everything a direction's statistics need.

    Cache the result per latent kind: the standard deviation along any unit direction ``u`` is
    then ``sqrt(u @ cov @ u)`` (microseconds), and :func:`principal_from_covariance` gives the
    principal directions without touching the block again.

    Parameters
    ----------
    block
        Latents ``(n, d)``; may be memory-mapped.
    sample
        Compute from a seeded sample of this many rows (``None``: every row); see :data:`SAMPLE`.
    seed
        Seed of the sample.

    Returns
    -------
    mean : numpy.ndarray
        ``(d,)`` float64.
    cov : numpy.ndarray
        ``(d, d)`` float64 (ddof 1).
    """
    n = block.shape[0]
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 subjects; the block has {n}.")
    x = _gather(block, sample_rows(n, sample, seed=seed))
    mean = x.mean(axis=0)
    x -= mean
    with threadpool_limits(limits=_BLAS_THREADS, user_api="blas"):
        cov = x.T @ x / (len(x) - 1)
    return mean, cov


def principal_from_covariance(cov: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` eigenvectors of a covariance, with signs fixed; see :func:`principal_directions`."""
    values, vectors = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    d = len(values)
    order = np.argsort(values)[::-1][: max(1, min(int(k), d))]
    directions = vectors[:, order].T.copy()
    signs = np.sign(directions[np.arange(len(order)), np.abs(directions).argmax(axis=1)])
    directions *= np.where(signs == 0, 1.0, signs)[:, None]
    return directions, np.clip(values[order], 0.0, None)


def principal_directions(
    block: np.ndarray, k: int = 5, *, sample: int | None = SAMPLE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's top-``k`` principal directions in latent space.

    Parameters
    ----------
    block
        Latents ``(n, d)``; may be memory-mapped.
    k
        Directions wanted (at most ``d``).
    sample
        Compute from a seeded sample of this many rows (``None``: every row); see :data:`SAMPLE`.
    seed
        Seed of the sample.

    Returns
    -------
    directions : numpy.ndarray
        ``(k, d)`` float64, orthonormal rows, largest variance first; each row's sign makes its
        largest-magnitude component positive, so the directions do not flip between runs.
    variance : numpy.ndarray
        ``(k,)`` explained variance: the variance of the latents along each direction (its
        square root is the natural unit of a perturbation).
    """
    _, cov = latent_covariance(block, sample=sample, seed=seed)
    return principal_from_covariance(cov, k)


def unit_direction(index: int, d: int) -> np.ndarray:
    """The unit vector along latent dimension ``index`` of a ``d``-value latent, ``(d,)`` float64."""
    if not 0 <= int(index) < int(d):
        raise ValueError(f"latent dimension {index} is out of range 0..{d - 1}.")
    out = np.zeros(int(d), dtype=np.float64)
    out[int(index)] = 1.0
    return out


def _unit(diff: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    length = float(np.linalg.norm(diff))
    if not np.isfinite(length) or length == 0.0:
        raise ValueError(f"{what}: the two mean latents coincide, so there is no direction between them.")
    return diff / length, length


def group_direction(block: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> tuple[np.ndarray, float]:
    """The unit vector from group B's mean latent to group A's, and the distance between the means.

    Moving a latent along it makes it more like group A (e.g. comparison → selection, or
    controls → cases).

    Parameters
    ----------
    block
        Latents ``(n, d)``.
    idx_a, idx_b
        Row indices of the two groups; neither may be empty.

    Returns
    -------
    direction : numpy.ndarray
        ``(d,)`` float64 unit vector along ``mean(A) - mean(B)``.
    length : float
        ``|mean(A) - mean(B)|``: moving a latent of group B's mean by this much reaches group A's.
    """
    mean_a, mean_b = mean_latent(block, idx_a), mean_latent(block, idx_b)
    if mean_a is None or mean_b is None:
        raise ValueError("group_direction needs two non-empty groups; select subjects in both.")
    return _unit(mean_a - mean_b, "group_direction")


def direction_from_means(mean_a: np.ndarray, mean_b: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`group_direction` from means already computed (e.g. from cached column sums)."""
    diff = np.asarray(mean_a, dtype=np.float64).reshape(-1) - np.asarray(mean_b, dtype=np.float64).reshape(-1)
    return _unit(diff, "direction_from_means")


def direction_sd(block: np.ndarray, direction: np.ndarray, *, sample: int | None = SAMPLE, seed: int = 0) -> float:
    """Standard deviation of the cohort's latents projected on ``direction``: the unit of a perturbation.

    Parameters
    ----------
    block
        Latents ``(n, d)``.
    direction
        ``(d,)`` unit vector.
    sample, seed
        As in :func:`principal_directions`.

    Returns
    -------
    float
        ``std(block @ direction)`` over the sample (ddof 1); for a principal direction this is the
        square root of its variance, for a single dimension that dimension's spread.
    """
    x = _gather(block, sample_rows(block.shape[0], sample, seed=seed))
    return float(np.std(x @ np.asarray(direction, dtype=np.float64), ddof=1)) if len(x) > 1 else 0.0


# -- paths ---------------------------------------------------------------------------------------
def perturb(z: np.ndarray, direction: np.ndarray, amounts: Sequence[float] | np.ndarray) -> np.ndarray:
    """``z + a * direction`` for each ``a`` in ``amounts``.

    Parameters
    ----------
    z
        The latent to move, ``(d,)``.
    direction
        ``(d,)``, usually a unit vector (:func:`principal_directions`, :func:`unit_direction`,
        :func:`group_direction`).
    amounts
        Steps along ``direction`` in latent units (multiply by :func:`direction_sd` to step in
        standard deviations).

    Returns
    -------
    numpy.ndarray
        ``(len(amounts), d)`` float64; an amount of 0 gives ``z`` exactly.
    """
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    direction = np.asarray(direction, dtype=np.float64).reshape(-1)
    if z.shape != direction.shape:
        raise ValueError(f"z has {z.size} values but direction has {direction.size}.")
    a = np.asarray(amounts, dtype=np.float64).reshape(-1, 1)
    return z[None, :] + a * direction[None, :]


def interpolate(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` latents evenly spaced on the straight line from ``z_a`` to ``z_b``.

    Parameters
    ----------
    z_a, z_b
        The endpoints, ``(d,)``.
    steps
        Number of latents, at least 2 (the endpoints).

    Returns
    -------
    numpy.ndarray
        ``(steps, d)`` float64; the first row is exactly ``z_a`` and the last exactly ``z_b``.
    """
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps (its endpoints); got {steps}.")
    a = np.asarray(z_a, dtype=np.float64).reshape(-1)
    b = np.asarray(z_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"the endpoints differ in size: {a.size} and {b.size} values.")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    path = (1.0 - t) * a + t * b
    path[0], path[-1] = a, b  # exact endpoints, whatever the rounding of (1 - t) * a + t * b
    return path


def decode_path(decode: Decoder, latents: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """Decode a path of latents in one batched call.

    Parameters
    ----------
    decode
        The decoder.
    latents
        ``(k, d)``, e.g. from :func:`interpolate` or :func:`perturb`.
    kind
        The latent kind the path runs through.

    Returns
    -------
    dict
        Modality → ``(k, *shape)`` numpy arrays.
    """
    latents = np.atleast_2d(np.asarray(latents, dtype=np.float32))
    return {name: np.asarray(values) for name, values in decode(latents, kind).items()}


# -- placing new latents on an existing 2-D projection ---------------------------------------------
def pca_params(entry: Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
    """The PCA ``mean`` and ``components`` a projection's manifest entry records, or ``None``.

    Looks in the entry itself and in its ``params`` (where ``lse build`` keeps a projection's
    parameters). Only a linear projection has them; UMAP never does.

    Parameters
    ----------
    entry
        ``cohort.manifest["projections"]["<kind>/<method>"]``.

    Returns
    -------
    dict or None
        ``{"mean": (d,), "components": (2, d)}`` float64 arrays.
    """
    if not entry:
        return None
    for where in (entry, entry.get("params") or {}):
        if "mean" in where and "components" in where:
            mean = np.asarray(where["mean"], dtype=np.float64).reshape(-1)
            components = np.atleast_2d(np.asarray(where["components"], dtype=np.float64))
            if components.shape[1] != mean.size:
                raise ValueError(
                    f"PCA parameters disagree: components {components.shape} against a mean of {mean.size} values."
                )
            return {"mean": mean, "components": components}
    return None


def pca_transform(latents: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Place latents on a PCA projection exactly: ``(latents - mean) @ components.T``.

    Parameters
    ----------
    latents
        ``(k, d)``.
    params
        ``mean`` ``(d,)`` and ``components`` ``(2, d)``, as :func:`pca_params` returns them (or a
        :class:`~lse_panel.analysis.projection.LinearProjector`'s fields).

    Returns
    -------
    numpy.ndarray
        ``(k, 2)`` float64.
    """
    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    mean = np.asarray(params["mean"], dtype=np.float64).reshape(-1)
    components = np.atleast_2d(np.asarray(params["components"], dtype=np.float64))
    return (latents - mean) @ components.T


@dataclass(frozen=True)
class NeighbourPlacer:
    """A fixed sample of subjects (latents and map coordinates) to place new latents among.

    Build it once per (latent kind, projection) and reuse it: gathering the sample is most of the
    cost (~10 ms for 50k × 64 from memory), placing a 20-step path is ~2 ms.

    Parameters
    ----------
    latents
        ``(m, d)`` float32 latents of the sample.
    sq_norms
        ``(m,)`` their squared norms (float32), for the fast distance.
    coords
        ``(m, 2)`` float64 positions of the same subjects on the map.
    """

    latents: np.ndarray
    sq_norms: np.ndarray
    coords: np.ndarray

    @classmethod
    def build(
        cls, block: np.ndarray, coords: np.ndarray, *, sample: int | None = SAMPLE, seed: int = 0
    ) -> NeighbourPlacer:
        """Gather a seeded sample of ``block`` and ``coords`` (see :func:`place_in_projection`)."""
        n = block.shape[0]
        if len(coords) != n:
            raise ValueError(f"the projection has {len(coords)} rows but the latents have {n}.")
        rows = sample_rows(n, sample, seed=seed)
        xy = np.asarray(coords[rows], dtype=np.float64)
        keep = np.isfinite(xy).all(axis=1)  # a subject off the map cannot lend its position
        rows, xy = rows[keep], xy[keep]
        latents = np.ascontiguousarray(block[rows], dtype=np.float32)
        if len(latents) == 0:
            raise ValueError("no subject with finite coordinates to place latents among.")
        return cls(latents, np.einsum("ij,ij->i", latents, latents), xy)

    def place(self, latents: np.ndarray, *, k: int = 10) -> np.ndarray:
        """Positions of ``latents`` ``(s, d)`` as the distance-weighted mean of their ``k`` nearest subjects.

        Returns
        -------
        numpy.ndarray
            ``(s, 2)`` float64.
        """
        q = np.atleast_2d(np.asarray(latents, dtype=np.float64))
        if q.shape[1] != self.latents.shape[1]:
            raise ValueError(f"latents have {q.shape[1]} values; the projection's latents have {self.latents.shape[1]}.")
        m = len(self.latents)
        k = max(1, min(int(k), m))
        n_cand = min(m, k + _CANDIDATES)
        # Fast float32 distances pick candidates; their exact float64 distances decide, so a
        # subject's own latent is found at distance 0 despite rounding in |q|² - 2 q·x + |x|².
        q32 = q.astype(np.float32)
        with threadpool_limits(limits=_BLAS_THREADS, user_api="blas"):
            approx = self.sq_norms[None, :] - 2.0 * (q32 @ self.latents.T)
        cand = np.argpartition(approx, n_cand - 1, axis=1)[:, :n_cand] if n_cand < m else np.tile(np.arange(m), (len(q), 1))
        diff = self.latents[cand].astype(np.float64) - q[:, None, :]
        dist = np.sqrt(np.einsum("skd,skd->sk", diff, diff))
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        near = np.take_along_axis(cand, order, axis=1)
        dist = np.take_along_axis(dist, order, axis=1)
        # Inverse-distance weights; a neighbour at distance 0 takes all the weight (shared among ties).
        exact = dist == 0.0
        weights = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / np.where(exact, 1.0, dist))
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("sk,skc->sc", weights, self.coords[near])


def place_in_projection(
    latents_path: np.ndarray,
    block: np.ndarray,
    coords: np.ndarray,
    *,
    k: int = 10,
    sample: int | None = SAMPLE,
    seed: int = 0,
) -> np.ndarray:
    """Where new latents (a path) would lie on an existing 2-D projection of ``block``.

    Each new latent is placed at the inverse-distance-weighted mean of the map coordinates of its
    ``k`` nearest subjects in latent space (Euclidean), among a fixed seeded sample of
    ``sample`` subjects. This works for any projection, including a UMAP stored without its model
    (no ``transform``); it is the same initialisation umap-learn's ``transform`` starts from.

    The approximation: it is exact for a latent equal to a sampled subject's (with ``k=1``, or
    whenever one neighbour is at distance 0); in between it interpolates the map locally, so a
    path through dense regions follows the map faithfully, while a latent far from every subject
    (beyond the cloud) is pulled inside the hull of its neighbours' positions rather than
    extrapolated, and on a non-linear map a straight latent path may look bent or jump between
    clusters (it really does cross sparse space there). For a PCA projection use the exact
    :func:`pca_transform` when :func:`pca_params` finds the parameters.

    Parameters
    ----------
    latents_path
        ``(s, d)`` latents to place, e.g. from :func:`interpolate`.
    block
        ``(n, d)`` latents the projection was computed from (same kind).
    coords
        ``(n, 2)`` the projection's coordinates.
    k
        Neighbours averaged.
    sample
        Subjects searched (a seeded sample; ``None`` for all); see :data:`SAMPLE`.
    seed
        Seed of the sample.

    Returns
    -------
    numpy.ndarray
        ``(s, 2)`` float64.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort
    >>> c = tiny_cohort(100)
    >>> xy = place_in_projection(c.latent("fused")[:3], c.latent("fused"), c.projection("fused/umap"), k=1)
    >>> bool(np.allclose(xy, c.projection("fused/umap")[:3]))
    True
    """
    return NeighbourPlacer.build(block, coords, sample=sample, seed=seed).place(latents_path, k=k)
