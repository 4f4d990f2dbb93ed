"""The demo model as a decoder: latents of any of its kinds into ECGs and MRI cines, numpy in, numpy out.

Latent maths (means, paths, directions) lives in :mod:`lse_panel.analysis.decode` and
:mod:`lse_panel.analysis.latent_paths`; this module only runs the model's decoders on latents.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch

from lse_panel.analysis.decode import latent_sum, mean_latent
from lse_panel.analysis.latent_paths import interpolate, perturb
from lse_panel.model.checkpoint import load_model
from lse_panel.model.embedding import LATENT_KINDS
from lse_panel.model.networks import CrossModalAutoencoder, inference_copy


class CheckpointDecoder:
    """Latents → raw modalities through a trained model's decoders; numpy in, numpy out.

    A :class:`lse_panel.analysis.decode.Decoder`: the explorer calls the instance with
    ``(latents, kind)``, so no torch type leaks into the analysis or view layers. The
    cross-modal model decodes each of its latent kinds (:attr:`kinds`: ECG, MRI and fused, one
    shared space) into both modalities, which is what makes an ECG latent's MRI a cross-modal
    reconstruction.

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
    def from_checkpoint(cls, path: str | os.PathLike[str], **kwargs: int | None) -> CheckpointDecoder:
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

    @property
    def kinds(self) -> tuple[str, ...]:
        """The latent kinds this model encodes, and so decodes."""
        return LATENT_KINDS

    def __call__(self, latents: np.ndarray, kind: str) -> Mapping[str, np.ndarray]:
        """Decode ``(k, d)`` latents of kind ``kind`` (any of :attr:`kinds`) into both modalities."""
        if kind not in self.kinds:
            raise ValueError(f"this model decodes latents of kinds {', '.join(self.kinds)}; got {kind!r}.")
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

        Raises
        ------
        ValueError
            For an empty group: a mean of nothing is undefined.
        """
        if indices is None:
            mean = latent_sum(latents_block) / max(latents_block.shape[0], 1)
        else:
            mean = mean_latent(latents_block, indices)
            if mean is None:
                raise ValueError("the mean latent of an empty group is undefined; select at least one subject.")
        return self.decode(mean)

    def interpolate(self, z_a: np.ndarray, z_b: np.ndarray, steps: int) -> dict[str, np.ndarray]:
        """Decode ``steps`` latents evenly spaced on the straight line from ``z_a`` to ``z_b`` (both included).

        Returns
        -------
        dict
            Modality name → ``(steps, *shape)``; the first is ``decode(z_a)``, the last ``decode(z_b)``.
        """
        return self.decode(interpolate(z_a, z_b, steps))

    def perturb(self, z: np.ndarray, direction: np.ndarray, amounts: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
        """Decode ``z + a * direction`` for each ``a`` in ``amounts``.

        Parameters
        ----------
        z
            The latent to move, ``(latent_dim,)``.
        direction
            ``(latent_dim,)``: a unit vector, e.g. from :mod:`lse_panel.analysis.latent_paths`
            (``unit_direction``, ``principal_directions``, ``group_direction``).
        amounts
            Steps along ``direction``, in latent units (a principal direction's standard
            deviation is a natural unit).

        Returns
        -------
        dict
            Modality name → ``(len(amounts), *shape)``.
        """
        return self.decode(perturb(z, direction, amounts))
