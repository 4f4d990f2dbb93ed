"""The decoder protocol, and decoding groups of subjects through it: mean latents, group means, a capped sample."""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol

import numba
import numpy as np

__all__ = [
    "Decoder",
    "decodable_kinds",
    "decode_group_means",
    "decode_means",
    "decode_subjects",
    "latent_sum",
    "mean_latent",
]


class Decoder(Protocol):
    """Latents of one latent kind → decoded records, one array per modality.

    ``latents`` is ``(k, d)`` float32 of latent kind ``kind`` (e.g. ``"ecg"``, ``"mri"``,
    ``"fused"`` or any name a bundle gives its latents); the result maps a modality name to
    ``(k, *modality shape)``. A decoder may return only some modalities for a kind (a user's
    TorchScript ECG decoder reads only the ``ecg`` latent), or none. It may carry an attribute
    ``kinds: tuple[str, ...]`` naming the latent kinds it decodes; without one it decodes any.

    The demo model's :class:`lse_panel.model.decoding.CheckpointDecoder` is one; so is
    :func:`lse_panel.testing.tiny_decoder`. Views receive a decoder and never import torch.
    """

    def __call__(self, latents: np.ndarray, kind: str) -> Mapping[str, np.ndarray]: ...


def decodable_kinds(decoder: Decoder | None, latent_kinds: Iterable[str]) -> list[str]:
    """The latent kinds, of ``latent_kinds`` and in their order, that ``decoder`` decodes.

    Parameters
    ----------
    decoder
        A :class:`Decoder` (its optional ``kinds`` attribute restricts it), or ``None``.
    latent_kinds
        The cohort's latent kinds.

    Returns
    -------
    list of str
        Empty without a decoder.
    """
    if decoder is None:
        return []
    kinds = getattr(decoder, "kinds", None)
    return [k for k in latent_kinds if kinds is None or k in kinds]

_CHUNK_ROWS = 65_536
"""Rows summed at a time when summing a whole block, so a 500k × 256 block never gets copied whole."""


@numba.njit(nogil=True, cache=True)
def _rows_sum(block, rows):  # pragma: no cover - compiled
    # Adds each row in place instead of gathering block[rows] first: numpy's fancy index on a
    # memory-mapped 500k × 64 block copied 38 MB per selection (~50 ms here); this reads the same
    # rows once, ~6 ms for 150k rows.
    d = block.shape[1]
    out = np.zeros(d)
    for k in range(rows.shape[0]):
        i = rows[k]
        for j in range(d):
            out[j] += block[i, j]
    return out


def latent_sum(block: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
    """Column sums of ``block`` (all rows, or ``indices``) in float64.

    Parameters
    ----------
    block
        Latents, shape ``(n, d)``; may be memory-mapped.
    indices
        Row indices to sum (sorted ones read the block front to back); ``None`` sums every row.

    Returns
    -------
    numpy.ndarray
        Shape ``(d,)``, float64.
    """
    if indices is None:
        total = np.zeros(block.shape[1], dtype=np.float64)
        for start in range(0, block.shape[0], _CHUNK_ROWS):
            total += block[start : start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
        return total
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= block.shape[0]):
        raise IndexError(f"row indices must lie in 0..{block.shape[0] - 1}.")
    return _rows_sum(np.asarray(block), indices.astype(np.int64, copy=False))


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


def decode_means(
    means: Mapping[str, np.ndarray | None], decode: Decoder, kind: str
) -> dict[str, dict[str, np.ndarray]]:
    """Decode one mean latent per group in a single batched call to ``decode``.

    Parameters
    ----------
    means
        Group name → mean latent ``(d,)``; groups whose mean is ``None`` (empty) are left out.
    decode
        The decoder.
    kind
        The latent kind the means are of.

    Returns
    -------
    dict
        Group → ``{modality: array of the modality's shape}``; empty groups are absent.
    """
    names = [name for name, mean in means.items() if mean is not None]
    if not names:
        return {}
    batch = np.stack([np.asarray(means[name], dtype=np.float32) for name in names])
    decoded = decode(batch, kind)
    return {
        name: {modality: np.asarray(values[i]) for modality, values in decoded.items()}
        for i, name in enumerate(names)
    }


def decode_group_means(
    latents_block: np.ndarray, groups: Mapping[str, np.ndarray], decode: Decoder, kind: str
) -> dict[str, dict[str, np.ndarray]]:
    """Decode the mean latent of each group of subjects.

    Parameters
    ----------
    latents_block
        Latents of one kind, shape ``(n, d)``.
    groups
        Group name → row indices.
    decode
        The decoder.
    kind
        The latent kind of ``latents_block``.

    Returns
    -------
    dict
        Group → ``{modality: decoded mean, shape of the modality}``; empty groups are absent.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort, tiny_decoder
    >>> cohort = tiny_cohort(100)
    >>> out = decode_group_means(cohort.latent("fused"), {"a": np.arange(10)}, tiny_decoder(8), "fused")
    >>> out["a"]["ecg"].shape
    (3, 64)
    """
    return decode_means({name: mean_latent(latents_block, idx) for name, idx in groups.items()}, decode, kind)


def decode_subjects(
    latents_block: np.ndarray, indices: np.ndarray, decode: Decoder, kind: str
) -> dict[str, np.ndarray]:
    """Reconstructions of individual subjects: decode each one's own latent.

    Parameters
    ----------
    latents_block
        Latents of one kind, shape ``(n, d)``.
    indices
        Row indices of the subjects (keep it small: a capped sample).
    decode
        The decoder.
    kind
        The latent kind of ``latents_block``.

    Returns
    -------
    dict
        Modality → ``(len(indices), *shape)``; empty when ``indices`` is empty.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return {}
    latents = np.asarray(latents_block[indices], np.float32)
    return {name: np.asarray(values) for name, values in decode(latents, kind).items()}
