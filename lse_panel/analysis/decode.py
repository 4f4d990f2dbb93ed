"""Decode groups of subjects through a decoder callable: mean latents, group means, a capped sample."""

from __future__ import annotations

from typing import Callable, Literal, Mapping

import numpy as np

Decoder = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Latents ``(k, d)`` float32 → ``{modality: (k, *shape)}``; a torch model wrapped by the caller."""

_CHUNK_ROWS = 65_536
"""Rows gathered at a time when summing latents, so a 500k × 256 block never gets copied whole."""


def latent_sum(block: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
    """Column sums of ``block`` (all rows, or ``indices``) in float64, gathered in chunks.

    Parameters
    ----------
    block
        Latents, shape ``(n, d)``; may be memory-mapped.
    indices
        Row indices to sum; ``None`` sums every row.

    Returns
    -------
    numpy.ndarray
        Shape ``(d,)``, float64.
    """
    total = np.zeros(block.shape[1], dtype=np.float64)
    if indices is None:
        for start in range(0, block.shape[0], _CHUNK_ROWS):
            total += block[start : start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
        return total
    indices = np.asarray(indices)
    for start in range(0, len(indices), _CHUNK_ROWS):
        total += block[indices[start : start + _CHUNK_ROWS]].sum(axis=0, dtype=np.float64)
    return total


def mean_latent(block: np.ndarray, indices: np.ndarray) -> np.ndarray | None:
    """Mean latent of the rows ``indices`` (float64), or ``None`` for an empty group.

    Parameters
    ----------
    block
        Latents, shape ``(n, d)``.
    indices
        Row indices of the group.

    Returns
    -------
    numpy.ndarray or None
        Shape ``(d,)``; ``None`` when ``indices`` is empty (a mean of nothing is not zero).
    """
    indices = np.asarray(indices)
    if indices.size == 0:
        return None
    return latent_sum(block, indices) / len(indices)


def selection_comparison_means(
    block: np.ndarray,
    selection: np.ndarray,
    comparison: Literal["rest", "all"] | np.ndarray,
    *,
    block_sum: np.ndarray | None = None,
) -> dict[str, np.ndarray | None]:
    """Mean latents of a selection and its comparison group without gathering the comparison.

    The comparison group is usually most of the cohort; its mean follows from the cached
    column sum of the whole block minus the selection's sum, so the cost is O(selection).
    Any other comparison group (a saved subgroup) is given as its row indices and gathered.

    Parameters
    ----------
    block
        Latents, shape ``(n, d)``.
    selection
        Sorted unique row indices of the selection.
    comparison
        ``"rest"`` (every subject not selected), ``"all"`` (the whole cohort), or the row
        indices of any other group (e.g. ``ExplorerState.comparison_indices()`` of a subgroup).
    block_sum
        Column sums of the whole block (:func:`latent_sum`); computed when not given.
        Pass a cached one: it does not change.

    Returns
    -------
    dict
        ``{"selection": mean or None, "comparison": mean or None}``; ``None`` marks an empty group.
    """
    n = block.shape[0]
    selection = np.asarray(selection)
    k = int(selection.size)
    selected_sum = latent_sum(block, selection) if k else np.zeros(block.shape[1])
    if not isinstance(comparison, str):
        # A saved subgroup: its own rows, gathered (no fast path; subgroups are usually small).
        return {"selection": selected_sum / k if k else None, "comparison": mean_latent(block, comparison)}
    if block_sum is None:
        block_sum = latent_sum(block)
    if comparison == "all":
        other = block_sum / n if n else None
    elif comparison == "rest":
        other = (block_sum - selected_sum) / (n - k) if n - k > 0 else None
    else:
        raise ValueError(f"comparison must be 'rest', 'all' or row indices, got {comparison!r}")
    return {"selection": selected_sum / k if k else None, "comparison": other}


def decode_means(means: Mapping[str, np.ndarray | None], decode: Decoder) -> dict[str, dict[str, np.ndarray]]:
    """Decode one mean latent per group in a single batched call to ``decode``.

    Parameters
    ----------
    means
        Group name → mean latent ``(d,)``; groups whose mean is ``None`` (empty) are left out.
    decode
        The decoder callable.

    Returns
    -------
    dict
        Group → ``{modality: array of the modality's shape}``; empty groups are absent.
    """
    names = [name for name, mean in means.items() if mean is not None]
    if not names:
        return {}
    batch = np.stack([np.asarray(means[name], dtype=np.float32) for name in names])
    decoded = decode(batch)
    return {
        name: {modality: np.asarray(values[i]) for modality, values in decoded.items()}
        for i, name in enumerate(names)
    }


def decode_group_means(
    latents_block: np.ndarray, groups: Mapping[str, np.ndarray], decode: Decoder
) -> dict[str, dict[str, np.ndarray]]:
    """Decode the mean latent of each group of subjects.

    Parameters
    ----------
    latents_block
        Latents of one kind, shape ``(n, d)``.
    groups
        Group name → row indices.
    decode
        Latents ``(k, d)`` → ``{modality: (k, *shape)}``.

    Returns
    -------
    dict
        Group → ``{modality: decoded mean, shape of the modality}``; empty groups are absent.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort, tiny_decoder
    >>> cohort = tiny_cohort(100)
    >>> out = decode_group_means(cohort.latent("fused"), {"a": np.arange(10)}, tiny_decoder(8))
    >>> out["a"]["ecg"].shape
    (3, 64)
    """
    return decode_means({name: mean_latent(latents_block, idx) for name, idx in groups.items()}, decode)


def sample_indices(indices: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """A capped, reproducible sample of ``k`` row indices (sorted), or all of them if fewer.

    Parameters
    ----------
    indices
        Row indices to sample from.
    k
        Largest sample size.
    seed
        Seed of the generator, so the same selection shows the same subjects.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices, at most ``k``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size <= k:
        return indices.copy()
    pick = np.random.default_rng(seed).choice(indices.size, size=k, replace=False)
    return np.sort(indices[pick])


def decode_subjects(latents_block: np.ndarray, indices: np.ndarray, decode: Decoder) -> dict[str, np.ndarray]:
    """Reconstructions of individual subjects: decode each one's own latent.

    Parameters
    ----------
    latents_block
        Latents of one kind, shape ``(n, d)``.
    indices
        Row indices of the subjects (keep it small: a capped sample).
    decode
        The decoder callable.

    Returns
    -------
    dict
        Modality → ``(len(indices), *shape)``; empty when ``indices`` is empty.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return {}
    return {name: np.asarray(values) for name, values in decode(np.asarray(latents_block[indices], np.float32)).items()}
