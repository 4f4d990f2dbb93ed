"""Encode a whole cohort into latent blocks (``ecg``, ``mri``, ``fused``), streaming in batches."""

from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.cohort.bundle_writer import open_npy_for_writing, update_bundle
from lse_panel.cohort.partitions import latent_columns, layout_of, row_bounds, table_dir, write_part
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
    client: Any = None,
    partition_rows: int = 250_000,
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
        Torch threads (default: every CPU this process may use; one per task on a cluster).
    client
        A ``distributed.Client``: every partition is encoded as one task on the cluster
        (:func:`embed_partitions`). A Parquet bundle is always embedded partition by partition.
    partition_rows
        Rows per partition of an ``.npy`` bundle embedded on a cluster.

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
    if client is not None or layout_of(read_manifest(bundle_path))["format"] == "parquet":
        return embed_partitions(
            bundle_path, model_path, client=client, batch_size=batch_size, progress=progress,
            threads=threads, partition_rows=partition_rows,
        )
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


# -- partition by partition (a cluster, or a Parquet bundle) ------------------------------------------
STAGING = ".staging"
"""Directory inside the bundle where finished partitions wait until every one is done."""


@functools.lru_cache(maxsize=2)
def _inference_net(model_path: str, digest: str) -> tuple[CrossModalAutoencoder, Any]:
    """The model for inference, loaded once per process (a worker encodes many partitions with it)."""
    model, config = load_model(model_path)
    return inference_copy(model), config


def embed_partition(
    bundle_path: str, model_path: str, index: int, start: int, stop: int, staging: str, fmt: str,
    *, batch_size: int = 2048, threads: int | None = 1,
) -> dict[str, float]:
    """Encode rows ``start:stop`` of a bundle into ``staging``; skipped if that partition is already done.

    Writes each latent kind's rows (one ``.npy`` or Parquet part each, atomically), then the
    partition's ``.done`` marker: a build killed at any point resumes with the partitions that
    have no marker. Runs as one task on a cluster's worker, or in the builder's process.

    Returns
    -------
    dict
        ``rows``, ``raw_seconds``, ``encode_seconds`` (0 rows when it was already done).
    """
    staging_dir = Path(staging)
    marker = staging_dir / f"part-{index:05d}.done"
    if marker.exists():
        return {"rows": 0, "raw_seconds": 0.0, "encode_seconds": 0.0}
    cohort = open_bundle(bundle_path, allow_incomplete=True)
    net, config = _inference_net(str(model_path), checkpoint_digest(model_path))
    names = check_compatible(config, cohort.modalities)
    source = open_raw_source(cohort)
    ids = np.asarray(cohort.ids[start:stop])
    phenotypes = pd.DataFrame({name: np.asarray(column[start:stop]) for name, column in cohort.phenotype_columns.items()})
    out = {k: np.empty((stop - start, config.latent_dim), dtype=np.float32) for k in LATENT_KINDS}
    raw_s = enc_s = 0.0
    with torch_threads(threads):
        for lo in range(0, stop - start, batch_size):
            hi = min(lo + batch_size, stop - start)
            t = time.perf_counter()
            raw = source.raw(ids[lo:hi], phenotypes.iloc[lo:hi])
            raw = {config.ecg_name: raw[names["ecg"]], config.mri_name: raw[names["mri"]]}
            t1 = time.perf_counter()
            latents = encode_arrays(net, raw, batch_size=batch_size)
            for k in LATENT_KINDS:
                out[k][lo:hi] = latents[k]
            raw_s += t1 - t
            enc_s += time.perf_counter() - t1
    for k in LATENT_KINDS:
        if fmt == "parquet":
            write_part(staging_dir / f"latents__{k}" / f"part-{index:05d}.parquet",
                       {c: out[k][:, j] for j, c in enumerate(latent_columns(config.latent_dim))})
        else:
            final = staging_dir / f"{k}-{index:05d}.npy"
            tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, out[k], allow_pickle=False)
            os.replace(tmp, final)
    marker.touch()
    return {"rows": stop - start, "raw_seconds": raw_s, "encode_seconds": enc_s}


def embed_partitions(
    bundle_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    *,
    client: Any = None,
    batch_size: int = 2048,
    progress: bool = True,
    threads: int | None = None,
    partition_rows: int = 250_000,
) -> dict[str, Any]:
    """Encode a bundle partition by partition (one cluster task each), resumable per partition.

    Finished partitions wait in ``<bundle>/.staging/embed-<key>/``, named by the model and the
    partitioning, so a rerun after a kill (of the builder or of a worker: Dask reruns the lost
    task elsewhere) encodes only the partitions not yet done. When all are, the blocks are
    assembled in the bundle's layout (Parquet parts moved in place; ``.npy`` parts streamed into
    one file, never held whole in memory) and the manifest names them.

    Parameters
    ----------
    bundle_path, model_path, batch_size, progress
        As :func:`embed_bundle`.
    client
        A ``distributed.Client``; ``None`` encodes the partitions one after another here.
    threads
        Torch threads per partition (default: 1 on a cluster, every core here).
    partition_rows
        Rows per partition of an ``.npy`` bundle (a Parquet bundle keeps its parts).

    Returns
    -------
    dict
        As :func:`embed_bundle`, plus ``partitions``, ``partitions_done_before`` and
        ``seconds_per_partition`` (mean over the partitions encoded in this run).
    """
    from lse_panel.cohort.dask_backend import run_tasks

    bundle_path = Path(bundle_path).resolve()
    manifest = read_manifest(bundle_path)
    layout = layout_of(manifest)
    n = int(manifest["n_subjects"])
    bounds = layout.get("bounds") or row_bounds(n, max(1, -(-n // partition_rows)))
    digest = checkpoint_digest(model_path)
    _, config = _inference_net(str(Path(model_path).resolve()), digest)
    check_compatible(config, open_bundle(bundle_path, allow_incomplete=True).modalities)
    tag = hashlib_key(digest, bounds, layout["format"])
    staging = bundle_path / STAGING / f"embed-{tag}"
    staging.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(len(bounds) - 1) if not (staging / f"part-{i:05d}.done").exists()]
    t0 = time.perf_counter()
    calls = [
        ((str(bundle_path), str(Path(model_path).resolve()), i, bounds[i], bounds[i + 1], str(staging), layout["format"]),
         {"batch_size": batch_size, "threads": threads if threads is not None else (1 if client is not None else None)})
        for i in todo
    ]
    figures = run_tasks(embed_partition, calls, client=client, progress=progress, desc="embed",
                        sizes=[bounds[i + 1] - bounds[i] for i in todo])
    seconds = time.perf_counter() - t0
    dim = config.latent_dim
    with update_bundle(bundle_path) as update:
        for k in LATENT_KINDS:
            if layout["format"] == "parquet":
                target = table_dir(bundle_path, f"latents__{k}")
                shutil.rmtree(target, ignore_errors=True)
                os.replace(staging / f"latents__{k}", target)
                relative = f"parts/latents__{k}"
            else:
                relative = f"latents/{k}.npy"
                concatenate_npy([staging / f"{k}-{i:05d}.npy" for i in range(len(bounds) - 1)],
                                 bundle_path / relative, (n, dim))  # fmt: skip
            extra = {"fusion": FUSION} if k == "fused" else {"modality": k}
            update.register_latent(k, relative, dim, model=str(model_path), model_sha256=digest, latent_dim=dim,
                                   seconds=round(seconds, 2), **extra)  # fmt: skip
        update.record_step("embed", model=str(model_path), seconds=round(seconds, 2), n_subjects=n)
    shutil.rmtree(staging, ignore_errors=True)
    done = [f for f in figures if f["rows"]]
    raw_s = sum(f["raw_seconds"] for f in done)
    enc_s = sum(f["encode_seconds"] for f in done)
    return {
        "n_subjects": n,
        "seconds": seconds,
        "raw_seconds": raw_s,
        "encode_seconds": enc_s,
        "subjects_per_s": sum(f["rows"] for f in done) / max(seconds, 1e-9),
        "partitions": len(bounds) - 1,
        "partitions_done_before": len(bounds) - 1 - len(todo),
        "seconds_per_partition": (raw_s + enc_s) / max(len(done), 1),
    }


def concatenate_npy(parts: list[Path], target: Path, shape: tuple[int, int]) -> None:
    """One ``.npy`` of ``shape`` from row blocks, streamed part by part (bounded memory), written atomically."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": np.dtype(np.float32).str, "fortran_order": False,
                                                      "shape": shape})  # fmt: skip
            for part in parts:
                fh.write(np.ascontiguousarray(np.load(part), dtype=np.float32).tobytes())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def hashlib_key(*parts: Any) -> str:
    """A short digest of ``parts`` (names a staging directory by what it holds)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
