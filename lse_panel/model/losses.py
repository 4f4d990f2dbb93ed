"""The cross-modal autoencoder's training losses: reconstruction, CLIP-style alignment, modality-dropout fusion."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from lse_panel.model.networks import CrossModalAutoencoder

__all__ = ["clip_loss", "compute_losses", "fuse_generator", "mixing_probabilities", "validation_losses"]


def clip_loss(z_a: torch.Tensor, z_b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over cosine similarities: subject i's ECG must pick out subject i's MRI and back."""
    a = F.normalize(z_a, dim=1)
    b = F.normalize(z_b, dim=1)
    # Clamp as CLIP does (scale <= 100) so the temperature cannot run away.
    logits = logit_scale.clamp(max=math.log(100)).exp() * a @ b.T
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def mixing_probabilities(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Per-subject share of latent values taken from the ECG embedding, ``(n, 1)``.

    1/2 (DropFuse's fused vector) for half the subjects, 1 or 0 (the pure ECG or MRI latent:
    self- and cross-modal decoding) for a quarter each. One decoder pass per modality and
    subject then trains self, cross-modal and fused decoding together, half the cost of
    separate self- and fused-reconstruction passes (decoders are ~80 % of a training step).
    """
    u = torch.rand(n, 1, generator=generator)
    return torch.where(u < 0.25, 0.0, torch.where(u < 0.5, 1.0, 0.5))


def compute_losses(
    model: CrossModalAutoencoder,
    ecg: torch.Tensor,
    mri: torch.Tensor,
    generator: torch.Generator | None,
    *,
    contrastive_weight: float = 0.5,
) -> dict[str, torch.Tensor]:
    """All training losses for one batch of raw data; ``total`` is the one to minimise.

    Both modalities are decoded from one modality-dropout latent per subject (see
    :func:`mixing_probabilities`). Reconstruction errors are mean squared errors in
    standardised units (per-lead / per-image scale), so 1.0 is roughly what decoding the
    population-mean record scores.
    """
    x_e = model.normalise_ecg(ecg)
    x_m = model.normalise_mri(mri)
    z_e = model.ecg_encoder(x_e)
    z_m = model.mri_encoder(x_m)
    z_f = model.fuse(z_e, z_m, generator, mixing_probabilities(len(z_e), generator))
    losses = {
        "ecg": F.mse_loss(model.ecg_decoder(z_f), x_e),
        "mri": F.mse_loss(model.mri_decoder(z_f), x_m),
        "clip": clip_loss(z_e, z_m, model.logit_scale),
    }
    losses["total"] = losses["ecg"] + losses["mri"] + contrastive_weight * losses["clip"]
    return losses


def fuse_generator(seed: int, step: int) -> torch.Generator:
    """The modality-dropout draws of training step ``step``.

    A generator per step, keyed on (seed, step): a resumed run draws the same coin flips as an
    uninterrupted one without having to store generator states.
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


@torch.no_grad()
def validation_losses(model: CrossModalAutoencoder, ecg: np.ndarray, mri: np.ndarray, seed: int, batch_size: int = 256) -> dict[str, float]:
    """Mean losses over a held-out set, in eval mode, with fixed fusion draws."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    gen = fuse_generator(seed, -1)
    for start in range(0, len(ecg), batch_size):
        e = torch.from_numpy(ecg[start : start + batch_size])
        m = torch.from_numpy(mri[start : start + batch_size].astype(np.float32))
        if len(e) < 2:
            continue
        losses = compute_losses(model, e, m, gen)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(e)
        n += len(e)
    return {k: v / max(n, 1) for k, v in sums.items()}
