"""Helpers for tests, notebooks and benchmarks: tiny populated cohorts, a stand-in decoder, bundles on disk, ports."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.bundle_writer import update_bundle, write_bundle
from lse_panel.cohort.schema import ImageSequenceModality, PhenotypeSpec, SignalModality

TINY_PHENOTYPES: dict[str, PhenotypeSpec] = {
    "age": PhenotypeSpec("age", "continuous", "years", "age at assessment"),
    "sex": PhenotypeSpec("sex", "categorical", "", "sex", ("female", "male")),
    "lv_mass": PhenotypeSpec("lv_mass", "continuous", "g", "LV mass"),
    "lvef": PhenotypeSpec("lvef", "continuous", "%", "LV ejection fraction"),
    "qrs_duration": PhenotypeSpec("qrs_duration", "continuous", "ms", "QRS duration"),
    "af": PhenotypeSpec("af", "binary", "", "atrial fibrillation", ("no", "yes")),
}

TINY_MODALITIES = {
    "ecg": SignalModality("ecg", ("I", "II", "V1"), n_samples=64, sampling_rate_hz=50.0),
    "mri": ImageSequenceModality("mri", n_frames=4, height=12, width=12, frame_interval_ms=250.0),
}


class TinyDecoder:
    """A fixed random linear decoder standing in for a model (a :class:`~lse_panel.analysis.decode.Decoder`).

    Every latent kind decodes into every modality through the same weights, as the demo's
    cross-modal model decodes each of its latent kinds into both modalities.

    Parameters
    ----------
    latent_dim
        Values per latent.
    modalities
        Modality name → declaration (its shape is what each latent decodes into).
    seed
        Seed of the weights.
    kinds
        The latent kinds it decodes (its ``kinds`` attribute); ``None`` decodes any.
    """

    def __init__(
        self, latent_dim: int, modalities: Mapping[str, Any] = TINY_MODALITIES, seed: int = 0,
        kinds: tuple[str, ...] | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.modalities = dict(modalities)
        self.weights = {
            name: rng.normal(size=(latent_dim, int(np.prod(m.shape)))).astype(np.float32) / np.sqrt(latent_dim)
            for name, m in self.modalities.items()
        }
        if kinds is not None:
            self.kinds = tuple(kinds)

    def __call__(self, latents: np.ndarray, kind: str) -> dict[str, np.ndarray]:
        z = np.atleast_2d(np.asarray(latents, dtype=np.float32))
        return {name: (z @ w).reshape(len(z), *self.modalities[name].shape) for name, w in self.weights.items()}


def tiny_decoder(
    latent_dim: int, modalities: Mapping[str, Any] = TINY_MODALITIES, seed: int = 0, *,
    kinds: tuple[str, ...] | None = None,
) -> TinyDecoder:
    """A :class:`TinyDecoder`: latents ``(k, d)`` of any kind → ``{modality: (k, *shape)}``."""
    return TinyDecoder(latent_dim, modalities, seed, kinds)


def tiny_cohort(n: int = 2_000, *, latent_dim: int = 8, seed: int = 0) -> Cohort:
    """A cohort of ``n`` subjects in three clusters, with latents, projections and predictions.

    Phenotypes depend on the latents (so predictions carry signal), predictions are the truth
    plus noise whose size differs by latent kind (so the accuracy pane has something to show).
    """
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 3, n)
    centres = rng.normal(scale=3.0, size=(3, latent_dim))
    base = centres[cluster] + rng.normal(size=(n, latent_dim))
    latents = {
        "ecg": (base + 0.3 * rng.normal(size=base.shape)).astype(np.float32),
        "mri": (base + 0.3 * rng.normal(size=base.shape)).astype(np.float32),
    }
    latents["fused"] = ((latents["ecg"] + latents["mri"]) / 2).astype(np.float32)
    phen = pd.DataFrame(
        {
            "age": (58 + 4 * base[:, 0] + rng.normal(scale=4, size=n)).astype(np.float32),
            "sex": (base[:, 1] + rng.normal(size=n) > 0).astype(np.int8),
            "lv_mass": (120 + 10 * base[:, 2] + rng.normal(scale=10, size=n)).astype(np.float32),
            "lvef": (60 + 2 * base[:, 3] + rng.normal(scale=3, size=n)).astype(np.float32),
            "qrs_duration": (88 + 3 * base[:, 4 % latent_dim] + rng.normal(scale=5, size=n)).astype(np.float32),
            "af": (base[:, 0] + rng.normal(size=n) > 3.5).astype(np.int8),
        }
    )
    projections = {}
    for kind, block in latents.items():
        centred = block - block.mean(0)
        _, _, vt = np.linalg.svd(centred[:2000], full_matrices=False)
        projections[f"{kind}/pca"] = (centred @ vt[:2].T).astype(np.float32)
        projections[f"{kind}/umap"] = np.tanh(projections[f"{kind}/pca"] / 4).astype(np.float32) * 10
    noise = {"ecg": 0.8, "mri": 0.6, "fused": 0.4}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for kind, scale in noise.items():
        per: dict[str, np.ndarray] = {}
        for name, spec in TINY_PHENOTYPES.items():
            truth = phen[name].to_numpy(np.float64)
            if spec.type == "continuous":
                per[name] = (truth + scale * truth.std() * rng.normal(size=n)).astype(np.float32)
            else:
                logit = (2 * truth - 1) * 2.0 + 2.5 * scale * rng.normal(size=n)
                per[name] = (1 / (1 + np.exp(-logit))).astype(np.float32)
        predictions[kind] = per
    tasks = {
        name: ("regression" if spec.type == "continuous" else "classification")
        for name, spec in TINY_PHENOTYPES.items()
    }
    manifest = {
        "predictions": {kind: {name: {"task": tasks[name]} for name in TINY_PHENOTYPES} for kind in predictions},
        "latents": {kind: {"dim": latent_dim} for kind in latents},
    }
    return Cohort.from_arrays(
        np.arange(1_000_000, 1_000_000 + n, dtype=np.int64),
        phen,
        TINY_PHENOTYPES,
        modalities=TINY_MODALITIES,
        latents=latents,
        projections=projections,
        predictions=predictions,
        manifest=manifest,
    )


def write_cohort_bundle(
    cohort: Cohort, path: str | os.PathLike[str], *, overwrite: bool = False, partitions: int | None = None
) -> Path:
    """Write an in-memory cohort (e.g. ``tiny_cohort``) as a bundle on disk, with every block it has.

    ``partitions=N`` writes the partitioned Parquet layout instead of ``.npy`` columns.
    """
    path = write_bundle(
        path, ids=cohort.ids, phenotypes=cohort.phenotypes, phenotype_specs=cohort.phenotype_specs,
        modalities=cohort.modalities, overwrite=overwrite, partitions=partitions,
    )
    tasks = cohort.prediction_tasks()
    with update_bundle(path) as update:
        for kind, block in cohort.latents.items():
            update.add_latent(kind, block)
        for key, coords in cohort.projections.items():
            latent, _, method = key.partition("/")
            update.add_projection(latent, method, coords)
        for kind, per in cohort.predictions.items():
            for name, values in per.items():
                update.add_prediction(kind, name, values, task=tasks[name])
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, timeout_s: float = 30.0) -> None:
    """Block until a server on 127.0.0.1:``port`` accepts connections (``pn.serve(threaded=True)`` returns first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout_s:.0f} s") from None
            time.sleep(0.1)
