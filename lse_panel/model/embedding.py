"""Encode a whole cohort into latent blocks (``ecg``, ``mri``, ``fused``), streaming in batches."""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from lse_panel.cohort.bundle import open_bundle, open_npy_for_writing, update_bundle
from lse_panel.digest import checkpoint_digest
from lse_panel.model.checkpoint import ModelError, check_compatible, load_model
from lse_panel.model.networks import CrossModalAutoencoder, inference_copy
from lse_panel.sources import open_raw_source

LATENT_KINDS = ("ecg", "mri", "fused")
FUSION = "learnt"
"""How the ``fused`` block is made at inference: the model's fusion head (mean of the two
embeddings plus a learnt correction, :class:`~lse_panel.model.networks.LatentFusion`).

Training fuses by taking each value at random from one modality (p = 1/2), so the decoders
read the mean of the two; the head is then fitted to keep what each modality alone carries.
It is deterministic: the same subject always lands at the same point, no seed needed.
"""


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run torch on ``n`` threads (default: every CPU this process may use), then restore the old count.

    On a 2-core machine both cores go to the convolutions; more threads than cores only
    adds contention with the data generator.
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def encode_arrays(
    model: CrossModalAutoencoder,
    raw: Mapping[str, np.ndarray],
    *,
    batch_size: int = 2048,
) -> dict[str, np.ndarray]:
    """Encode raw arrays of both modalities into ``ecg``, ``mri`` and ``fused`` latents.

    Parameters
    ----------
    model
        A trained model; an eval-mode copy with batch norms folded is used if it is training.
    raw
        Arrays keyed by the model's modality names (``config.ecg_name``, ``config.mri_name``):
        ``(n, leads, samples)`` and ``(n, T, H, W)``.
    batch_size
        Subjects per forward pass (bounds the activations' memory).

    Returns
    -------
    dict
        ``{"ecg", "mri", "fused"}`` → ``(n, latent_dim)`` float32 arrays.
    """
    net = inference_copy(model) if model.training else model
    config = net.config
    ecg = np.asarray(raw[config.ecg_name], dtype=np.float32)
    mri = np.asarray(raw[config.mri_name], dtype=np.float32)
    for name, arr, shape in ((config.ecg_name, ecg, config.ecg_shape), (config.mri_name, mri, config.mri_shape)):
        if tuple(arr.shape[1:]) != tuple(shape):
            raise ModelError(f"{name}: arrays of shape {tuple(arr.shape[1:])} per subject, but the model takes {tuple(shape)}.")
    if len(ecg) != len(mri):
        raise ModelError(f"{len(ecg)} {config.ecg_name} records but {len(mri)} {config.mri_name} records; pass one of each per subject.")
    n = len(ecg)
    out = {k: np.empty((n, config.latent_dim), dtype=np.float32) for k in LATENT_KINDS}
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            z_e = net.encode_ecg(torch.from_numpy(ecg[start:stop]))
            z_m = net.encode_mri(torch.from_numpy(mri[start:stop]))
            out["ecg"][start:stop] = z_e.numpy()
            out["mri"][start:stop] = z_m.numpy()
            out["fused"][start:stop] = net.fuse_latents(z_e, z_m).numpy()
    return out


def embed_bundle(
    bundle_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    *,
    batch_size: int = 2048,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Encode every subject of a bundle and store the ``ecg``, ``mri`` and ``fused`` latent blocks.

    Subjects are streamed in batches: raw data for one batch is regenerated (or read) from the
    bundle's raw source, encoded, and written into memory-mapped ``.npy`` files, so memory stays
    bounded whatever the cohort size. The files are written under temporary names, renamed when
    complete, and the manifest that names them is replaced last.

    Parameters
    ----------
    bundle_path
        The cohort bundle; its manifest must declare the modalities and a raw source.
    model_path
        A checkpoint directory (``models/NAME``).
    batch_size
        Subjects per batch.
    progress
        Show a tqdm bar with subjects/s.
    threads
        Torch threads (default: every CPU this process may use).

    Returns
    -------
    dict
        Timing figures: ``n_subjects``, ``seconds``, ``raw_seconds`` (generating/reading raw
        data), ``encode_seconds``, ``subjects_per_s`` and ``encode_subjects_per_s``.

    Raises
    ------
    ModelError
        The model's shapes differ from the bundle's modalities, or the bundle has no raw source.
    """
    bundle_path = Path(bundle_path)
    cohort = open_bundle(bundle_path, allow_incomplete=True)  # `lse build` embeds before the bundle is complete
    model, config = load_model(model_path)
    names = check_compatible(config, cohort.modalities)
    source = open_raw_source(cohort)
    if source is None:
        raise ModelError(
            f"{bundle_path}: the manifest names no raw source, so there is nothing to encode. "
            "Build the bundle with `lse build` (synthetic raw data) or add the raw modalities."
        )
    net = inference_copy(model)
    n = cohort.n_subjects
    dim = config.latent_dim
    tag = uuid.uuid4().hex[:8]
    tmp = {k: bundle_path / "latents" / f".{k}.{tag}.npy" for k in LATENT_KINDS}
    blocks = {k: open_npy_for_writing(tmp[k], (n, dim)) for k in LATENT_KINDS}
    phenotypes = cohort.phenotypes
    raw_s = enc_s = 0.0
    t0 = time.perf_counter()
    try:
        # Generation and encoding run one after the other: overlapping them in two threads was
        # measured 6-9 % slower on 2 cores (both already use both cores; they only contended).
        with torch_threads(threads), tqdm(total=n, unit="subj", desc="embed", disable=not progress, smoothing=0.1) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                t = time.perf_counter()
                raw = source.raw(np.asarray(cohort.ids[start:stop]), phenotypes.iloc[start:stop])
                raw = {config.ecg_name: raw[names["ecg"]], config.mri_name: raw[names["mri"]]}
                t1 = time.perf_counter()
                latents = encode_arrays(net, raw, batch_size=batch_size)
                for k in LATENT_KINDS:
                    blocks[k][start:stop] = latents[k]
                t2 = time.perf_counter()
                raw_s += t1 - t
                enc_s += t2 - t1
                bar.update(stop - start)
                bar.set_postfix(encode=f"{stop / max(enc_s, 1e-9):,.0f}/s", raw=f"{raw_s:.0f}s")
        for k in LATENT_KINDS:
            blocks[k].flush()
            del blocks[k]
        seconds = time.perf_counter() - t0
        meta = {
            "model": str(model_path),
            "model_sha256": checkpoint_digest(model_path),  # the app decodes only with this checkpoint
            "latent_dim": dim,
            "modalities": names,
            "seconds": round(seconds, 2),
        }
        with update_bundle(bundle_path) as update:
            for k in LATENT_KINDS:
                relative = f"latents/{k}.npy"
                os.replace(tmp[k], bundle_path / relative)
                extra = {"fusion": FUSION} if k == "fused" else {"modality": names[k]}
                update.register_latent(k, relative, dim, **meta, **extra)
            update.record_step("embed", model=str(model_path), seconds=round(seconds, 2), n_subjects=n)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return {
        "n_subjects": n,
        "seconds": seconds,
        "raw_seconds": raw_s,
        "encode_seconds": enc_s,
        "subjects_per_s": n / max(seconds, 1e-9),
        "encode_subjects_per_s": n / max(enc_s, 1e-9),
    }
