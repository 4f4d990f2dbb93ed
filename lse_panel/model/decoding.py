"""Decode latents into ECGs and MRI cines: single latents, group means, interpolations, perturbations."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from lse_panel.model.checkpoint import load_model
from lse_panel.model.networks import CrossModalAutoencoder, inference_copy

_CHUNK_ROWS = 65_536
"""Rows gathered at a time when averaging latents, so a selection of 500k never gets copied whole."""


class Decoder:
    """Latents → raw modalities through a trained model's decoders; numpy in, numpy out.

    The explorer receives :meth:`decode` (or the instance itself, which is callable) as a plain
    callable, so no torch type leaks into the analysis or view layers.

    Parameters
    ----------
    model
        A trained model; an eval-mode copy with batch norms folded is kept.
    batch_size
        Latents per forward pass.
    threads
        Torch threads while decoding (default: leave torch's setting alone).
    """

    def __init__(self, model: CrossModalAutoencoder, *, batch_size: int = 512, threads: int | None = None) -> None:
        self.model = inference_copy(model)
        self.config = self.model.config
        self.batch_size = int(batch_size)
        self.threads = threads

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **kwargs: int | None) -> Decoder:
        """Load a checkpoint directory (``models/NAME``) and wrap its decoders."""
        model, _ = load_model(path)
        return cls(model, **kwargs)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Modality name → the shape of one decoded record."""
        return {self.config.ecg_name: tuple(self.config.ecg_shape), self.config.mri_name: tuple(self.config.mri_shape)}

    def __call__(self, latents: np.ndarray) -> dict[str, np.ndarray]:
        return self.decode(latents)

    def decode(self, latents: np.ndarray) -> dict[str, np.ndarray]:
        """Decode latents into both modalities.

        Parameters
        ----------
        latents
            ``(k, latent_dim)``, or one latent ``(latent_dim,)``.

        Returns
        -------
        dict
            Modality name → float32 ``(k, *shape)`` (``(*shape)`` for a single latent), e.g.
            ``{"ecg": (k, 12, 600), "mri": (k, T, H, W)}``.
        """
        z = np.asarray(latents, dtype=np.float32)
        single = z.ndim == 1
        z = np.atleast_2d(z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents of shape {np.shape(latents)}; this model decodes (k, {self.latent_dim}) or ({self.latent_dim},).")
        k = len(z)
        out = {name: np.empty((k, *shape), dtype=np.float32) for name, shape in self.shapes.items()}
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for start in range(0, k, self.batch_size):
                    batch = torch.from_numpy(np.ascontiguousarray(z[start : start + self.batch_size]))
                    out[self.config.ecg_name][start : start + len(batch)] = self.model.decode_ecg(batch).numpy()
                    out[self.config.mri_name][start : start + len(batch)] = self.model.decode_mri(batch).numpy()
        finally:
            torch.set_num_threads(previous)
        return {name: a[0] for name, a in out.items()} if single else out

    def decode_mean(self, latents_block: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Decode the mean latent of the rows ``indices`` of ``latents_block`` (all rows if ``None``).

        Returns
        -------
        dict
            Modality name → one decoded record, ``(*shape)``.
        """
        return self.decode(mean_latent(latents_block, indices))

    def interpolate(self, z_a: np.ndarray, z_b: np.ndarray, steps: int) -> dict[str, np.ndarray]:
        """Decode ``steps`` latents evenly spaced on the straight line from ``z_a`` to ``z_b`` (both included).

        Returns
        -------
        dict
            Modality name → ``(steps, *shape)``; the first is ``decode(z_a)``, the last ``decode(z_b)``.
        """
        return self.decode(interpolation_path(z_a, z_b, steps))

    def perturb(self, z: np.ndarray, direction: np.ndarray, amounts: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
        """Decode ``z + a * direction`` for each ``a`` in ``amounts``.

        Parameters
        ----------
        z
            The latent to move, ``(latent_dim,)``.
        direction
            ``(latent_dim,)``: a unit vector from :func:`unit_direction`,
            :func:`principal_directions` or :func:`group_direction`.
        amounts
            Steps along ``direction``, in latent units (a principal direction's standard
            deviation is a natural unit).

        Returns
        -------
        dict
            Modality name → ``(len(amounts), *shape)``.
        """
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        d = np.asarray(direction, dtype=np.float64).reshape(-1)
        a = np.asarray(amounts, dtype=np.float64).reshape(-1, 1)
        return self.decode((z[None, :] + a * d[None, :]).astype(np.float32))


def mean_latent(block: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
    """Mean of the rows ``indices`` of ``block`` (every row if ``None``), in float64, gathered in chunks."""
    total = np.zeros(block.shape[1], dtype=np.float64)
    if indices is None:
        n = block.shape[0]
        for start in range(0, n, _CHUNK_ROWS):
            total += block[start : start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    else:
        indices = np.asarray(indices)
        n = indices.size
        for start in range(0, n, _CHUNK_ROWS):
            total += block[indices[start : start + _CHUNK_ROWS]].sum(axis=0, dtype=np.float64)
    if n == 0:
        raise ValueError("the mean latent of an empty group is undefined; select at least one subject.")
    return (total / n).astype(np.float32)


def interpolation_path(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` latents evenly spaced from ``z_a`` to ``z_b``, endpoints included, ``(steps, d)`` float32."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two endpoints), got {steps}.")
    a = np.asarray(z_a, dtype=np.float64).reshape(-1)
    b = np.asarray(z_b, dtype=np.float64).reshape(-1)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    path = (1 - t) * a + t * b
    path[0], path[-1] = a, b  # exact endpoints, whatever the rounding of (1 - t)
    return path.astype(np.float32)


def unit_direction(dim: int, d: int) -> np.ndarray:
    """The unit vector along latent dimension ``d`` of a ``dim``-value latent."""
    if not 0 <= d < dim:
        raise ValueError(f"latent dimension {d} out of range 0..{dim - 1}.")
    out = np.zeros(dim, dtype=np.float32)
    out[d] = 1.0
    return out


def principal_directions(
    block: np.ndarray, k: int = 5, *, sample: int | None = 50_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's top-``k`` principal directions in latent space.

    Parameters
    ----------
    block
        Latents ``(n, d)``; may be memory-mapped.
    k
        Directions to return.
    sample
        Rows used (a seeded random sample; ``None`` for all): 50k rows pin the leading
        directions of a 64-value latent well and keep this to milliseconds at 500k.
    seed
        Seed of the sample.

    Returns
    -------
    tuple
        ``(directions (k, d) float32, unit rows; standard deviations (k,) along each)``,
        largest variance first; each direction's sign makes its largest component positive.
    """
    n, d = block.shape
    if sample is not None and n > sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
        x = np.asarray(block[rows], dtype=np.float64)
    else:
        x = np.asarray(block, dtype=np.float64)
    x = x - x.mean(axis=0)
    cov = x.T @ x / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][: min(k, d)]
    directions = vectors[:, order].T
    signs = np.sign(directions[np.arange(len(order)), np.abs(directions).argmax(axis=1)])
    directions *= signs[:, None]
    return directions.astype(np.float32), np.sqrt(np.clip(values[order], 0, None)).astype(np.float32)


def group_direction(block: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
    """Unit vector from group B's mean latent to group A's (A minus B), ``(d,)`` float32.

    Moving a latent along it makes it more like group A: the Broad group's case-minus-control
    direction.
    """
    diff = mean_latent(block, idx_a).astype(np.float64) - mean_latent(block, idx_b).astype(np.float64)
    norm = np.linalg.norm(diff)
    if norm == 0:
        raise ValueError("the two groups have the same mean latent; there is no direction between them.")
    return (diff / norm).astype(np.float32)
