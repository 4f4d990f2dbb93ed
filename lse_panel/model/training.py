"""Train the cross-modal autoencoder: reconstruction, CLIP-style alignment and modality-dropout fusion."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from lse_panel.cohort.schema import Modality
from lse_panel.model.checkpoint import ModelError, _atomic_write, save_checkpoint
from lse_panel.model.embedding import encode_arrays, torch_threads
from lse_panel.model.losses import compute_losses, fuse_generator, validation_losses
from lse_panel.model.networks import CrossModalAutoencoder, ModelConfig, count_parameters, inference_copy
from lse_panel.sources import open_raw_source

TRAIN_ID_OFFSET = 1_000_000_000
"""Synthetic training subjects get ids from here up: the synthetic generator keys every subject
on (seed, id), so these subjects are disjoint from any cohort built with ids 0..n-1 (the demo
bundle) while coming from the same population."""

LAST = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Every training option, recorded in ``config.json`` and checked when resuming.

    Parameters
    ----------
    n_train
        Subjects in the (pre-generated, in-memory) training set.
    n_val
        Held-out subjects whose losses are tracked during training.
    n_eval
        Further held-out subjects for the model card's metrics.
    seed
        Seeds the weights, the batch order and the fusion coin flips.
    steps
        Optimiser steps in all.
    batch_size
        Subjects per step; also the contrastive loss's pool of negatives.
    lr
        Peak learning rate (AdamW, linear warm-up then cosine decay).
    weight_decay
        AdamW weight decay.
    contrastive_weight
        Weight of the symmetric CLIP loss against the reconstruction terms.
    cohort_seed
        Seed of the synthetic cohort the data come from.
    checkpoint_every
        Steps between ``last.pt`` saves (and validation passes).
    fusion_steps
        Steps fitting the fusion head (:class:`~lse_panel.model.networks.LatentFusion`) after
        the autoencoder, which is frozen meanwhile; batches of 256 training subjects.
    """

    n_train: int = 32_000
    n_val: int = 512
    n_eval: int = 8_000
    seed: int = 0
    steps: int = 1_600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    contrastive_weight: float = 0.5
    cohort_seed: int = 0
    checkpoint_every: int = 100
    fusion_steps: int = 600


# -- data -------------------------------------------------------------------------------------
class TrainingData:
    """Where training subjects come from: a synthetic generator (fresh ids) or a bundle's raw source.

    Parameters
    ----------
    fetch
        ``fetch(ids) -> (raw, phenotypes)`` for an array of subject ids.
    ids
        All usable ids; split into train / val / eval without overlap.
    modalities
        The modalities ``fetch`` returns, by name.
    description
        One line for the model card.
    provenance
        Where the data come from, for the checkpoint.
    tasks
        Phenotype → 'regression' / 'classification' the model card scores (default: every
        numeric phenotype, see :func:`lse_panel.model.evaluation.downstream_tasks`).
    """

    def __init__(
        self,
        fetch: Callable[[np.ndarray], tuple[dict[str, np.ndarray], pd.DataFrame]],
        ids: np.ndarray,
        modalities: Mapping[str, Modality],
        description: str,
        provenance: Mapping[str, Any] | None = None,
        tasks: Mapping[str, str] | None = None,
    ) -> None:
        self.fetch = fetch
        self.ids = np.asarray(ids)
        self.modalities = dict(modalities)
        self.description = description
        self.provenance = dict(provenance or {})
        self.tasks = dict(tasks) if tasks is not None else None

    @classmethod
    def synthetic(cls, n: int, *, cohort_seed: int = 0, mri_shape: tuple[int, int, int] | None = None) -> TrainingData:
        """Fresh synthetic subjects (ids from :data:`TRAIN_ID_OFFSET`), generated on request."""
        from lse_panel.synth import DOWNSTREAM_TASKS, SyntheticCohort

        kwargs = {} if mri_shape is None else {"mri_shape": tuple(mri_shape)}
        synth = SyntheticCohort(seed=cohort_seed, **kwargs)

        def fetch(ids: np.ndarray) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
            ph = synth.phenotypes(ids)
            return synth.raw(ids, ph), ph

        ids = TRAIN_ID_OFFSET + np.arange(n, dtype=np.int64)
        return cls(
            fetch,
            ids,
            synth.modalities,
            f"synthetic cohort (SyntheticCohort seed {cohort_seed}), fresh subjects with ids "
            f"{TRAIN_ID_OFFSET:,}+ (disjoint from cohorts built with ids 0..n-1)",
            {"source": "synthetic", "generator": synth.to_json()},
            DOWNSTREAM_TASKS,
        )

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str]) -> TrainingData:
        """The subjects of a bundle, their raw data from the bundle's raw source."""
        from lse_panel.cohort.bundle import open_bundle

        cohort = open_bundle(path)
        source = open_raw_source(cohort)
        if source is None:
            raise ModelError(
                f"{path}: the manifest names no raw source to train on. Build it with `lse build`, "
                "or train on the synthetic generator (omit --bundle)."
            )
        position = pd.Series(np.arange(cohort.n_subjects), index=np.asarray(cohort.ids))
        phenotypes = cohort.phenotypes

        def fetch(ids: np.ndarray) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
            ph = phenotypes.iloc[position.loc[ids].to_numpy()].reset_index(drop=True)
            return source.raw(ids, ph), ph

        return cls(fetch, np.asarray(cohort.ids), cohort.modalities, f"bundle {path}", {"source": "bundle", "bundle": str(path)},
                   cohort.targets)

    def roles(self) -> dict[str, Modality]:
        """The signal and the image-sequence modality (exactly one of each is needed)."""
        out = {}
        for role, kind in (("ecg", "signal"), ("mri", "image_sequence")):
            found = [m for m in self.modalities.values() if m.kind == kind]
            if len(found) != 1:
                raise ModelError(f"training needs exactly one {kind} modality; the data declare {list(self.modalities)}.")
            out[role] = found[0]
        return out

    def generate(
        self, ids: np.ndarray, *, chunk: int = 2048, progress: bool = True, desc: str = "generate"
    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """Raw arrays for ``ids``, as (ECG float32, MRI float16, phenotypes).

        The MRI is kept in float16 (values in [0, 1], error < 5e-4) to halve the in-memory
        training set; batches are cast back to float32 before the network sees them.
        """
        roles = self.roles()
        e_shape, m_shape = roles["ecg"].shape, roles["mri"].shape
        ecg = np.empty((len(ids), *e_shape), dtype=np.float32)
        mri = np.empty((len(ids), *m_shape), dtype=np.float16)
        frames = []
        for start in tqdm(range(0, len(ids), chunk), desc=desc, unit="batch", disable=not progress):
            batch = ids[start : start + chunk]
            raw, ph = self.fetch(batch)
            ecg[start : start + len(batch)] = raw[roles["ecg"].name]
            mri[start : start + len(batch)] = raw[roles["mri"].name]
            frames.append(ph)
        return ecg, mri, pd.concat(frames, ignore_index=True)


def _lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 5 % of steps, cosine decay to 5 % of the peak."""
    warm = max(1, int(0.05 * total))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class _Deterministic:
    """Turn on torch's deterministic algorithms for the duration, then restore the old setting."""

    def __enter__(self) -> None:
        self.previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc: Any) -> None:
        torch.use_deterministic_algorithms(self.previous)


# -- the loop ---------------------------------------------------------------------------------
def train_model(
    out_dir: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | None = None,
    data: TrainingData | None = None,
    n_train: int = 32_000,
    n_val: int = 512,
    n_eval: int = 8_000,
    seed: int = 0,
    steps: int = 1_600,
    batch_size: int = 128,
    lr: float = 2e-3,
    contrastive_weight: float = 0.5,
    latent_dim: int = 64,
    mri_shape: tuple[int, int, int] | None = None,
    cohort_seed: int = 0,
    model_options: Mapping[str, Any] | None = None,
    checkpoint_every: int = 100,
    fusion_steps: int = 600,
    resume: bool = True,
    keep_last: bool = False,
    evaluate: bool = True,
    threads: int = 2,
    progress: bool = True,
    name: str | None = None,
) -> Path:
    """Train a cross-modal autoencoder and write ``model.pt``, ``config.json`` and ``MODEL_CARD.md``.

    The training set is generated once into memory (ECG float32, MRI float16); batches are
    drawn from a seeded permutation per epoch. ``out_dir/last.pt`` (weights, optimiser state,
    step, loss history) is saved every ``checkpoint_every`` steps; with ``resume=True`` an
    interrupted run continues from it and ends with the same weights as an uninterrupted one.

    Parameters
    ----------
    out_dir
        Checkpoint directory (``models/NAME``).
    bundle
        Train on this bundle's subjects (its raw source) instead of fresh synthetic subjects.
    data
        An explicit :class:`TrainingData` (tests, custom sources); overrides ``bundle``.
    n_train, n_val, n_eval
        Training, validation (tracked while training) and evaluation (model card) subjects.
    seed
        Seeds weights, batch order and fusion draws.
    steps, batch_size, lr
        Optimisation length, batch size and peak learning rate.
    contrastive_weight
        Weight of the CLIP loss (the two reconstruction terms have weight 1).
    latent_dim
        Latent values per modality.
    mri_shape
        (frames, height, width) of the synthetic MRI (ignored with ``bundle``/``data``).
    cohort_seed
        Seed of the synthetic cohort.
    model_options
        Extra :class:`ModelConfig` fields (widths, ...).
    checkpoint_every
        Steps between ``last.pt`` saves and validation passes.
    fusion_steps
        Steps fitting the fusion head once the autoencoder is trained (see :func:`fit_fusion`).
    resume
        Continue from ``out_dir/last.pt`` if present (and made with the same options).
    keep_last
        Keep ``last.pt`` after a successful run (by default it is deleted then).
    evaluate
        Compute held-out metrics and write ``MODEL_CARD.md``.
    threads
        Torch threads (2: both cores of the demo machine; see ``lse_panel.model`` on why
        idle OpenMP workers must sleep). Results are deterministic for a given thread count.
    progress
        Show tqdm bars.
    name
        The model's name in the card (default: ``out_dir``'s name).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = TrainConfig(
        n_train=n_train,
        n_val=n_val,
        n_eval=n_eval,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        contrastive_weight=contrastive_weight,
        cohort_seed=cohort_seed,
        checkpoint_every=checkpoint_every,
        fusion_steps=fusion_steps,
    )
    if batch_size > n_train:
        raise ValueError(f"batch_size {batch_size} is larger than n_train {n_train}.")
    if data is None:
        total = n_train + n_val + n_eval
        data = TrainingData.from_bundle(bundle) if bundle is not None else TrainingData.synthetic(
            total, cohort_seed=cohort_seed, mri_shape=mri_shape
        )
    roles = data.roles()
    config = ModelConfig(
        ecg_shape=roles["ecg"].shape,
        mri_shape=roles["mri"].shape,
        latent_dim=latent_dim,
        ecg_name=roles["ecg"].name,
        mri_name=roles["mri"].name,
        **dict(model_options or {}),
    )
    ids = data.ids
    if bundle is not None and data.provenance.get("source") == "bundle":
        # A bundle's subjects come in its own order; shuffle once (seeded) before splitting.
        ids = np.random.default_rng(seed).permutation(ids)
    if len(ids) < n_train + n_val + n_eval:
        raise ValueError(f"{len(ids)} subjects available but n_train + n_val + n_eval = {n_train + n_val + n_eval}.")
    train_ids = ids[:n_train]
    val_ids = ids[n_train : n_train + n_val]
    eval_ids = ids[n_train + n_val : n_train + n_val + n_eval]

    with torch_threads(threads), _Deterministic():
        t_gen = time.perf_counter()
        ecg, mri, _ = data.generate(train_ids, progress=progress, desc="training set")
        val_ecg, val_mri, _ = data.generate(val_ids, progress=progress, desc="validation set")
        gen_seconds = time.perf_counter() - t_gen

        torch.manual_seed(seed)
        model = CrossModalAutoencoder(config)
        with torch.no_grad():
            k = min(n_train, 4096)
            model.set_normalisation(torch.from_numpy(ecg[:k]), torch.from_numpy(mri[:k].astype(np.float32)))
        # The fusion head is fitted afterwards (fit_fusion); weight decay must not move it now.
        optimizer = torch.optim.AdamW(model.autoencoder_parameters(), lr=lr, weight_decay=tc.weight_decay)
        state = _resume_state(out_dir, tc, config) if resume else None
        history: list[dict[str, float]] = []
        start_step, elapsed = 0, 0.0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_step, elapsed = int(state["step"]), float(state["elapsed"])
            history = json.loads(state["history"])

        steps_per_epoch = n_train // batch_size
        perms: dict[int, np.ndarray] = {}

        def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            epoch, k = divmod(step, steps_per_epoch)
            if epoch not in perms:
                perms.clear()
                perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n_train)
            idx = np.sort(perms[epoch][k * batch_size : (k + 1) * batch_size])
            return torch.from_numpy(ecg[idx]), torch.from_numpy(mri[idx].astype(np.float32))

        model.train()
        t0 = time.perf_counter() - elapsed
        running: dict[str, float] = {}
        bar = tqdm(total=steps, initial=start_step, desc="train", unit="step", disable=not progress)
        for step in range(start_step, steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr)
            e_b, m_b = batch_at(step)
            losses = compute_losses(
                model, e_b, m_b, fuse_generator(seed, step),
                contrastive_weight=contrastive_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for key, value in losses.items():
                v = value.item()
                running[key] = 0.9 * running.get(key, v) + 0.1 * v
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()} | {"T": f"{1 / model.logit_scale.exp().item():.3f}"})
            done = step + 1
            if done % checkpoint_every == 0 or done == steps:
                record = {"step": done, "seconds": round(time.perf_counter() - t0, 1)}
                record |= {f"train_{k}": round(v, 5) for k, v in running.items()}
                record |= {f"val_{k}": round(v, 5) for k, v in validation_losses(model, val_ecg, val_mri, seed).items()}
                history.append(record)
                model.train()
                _save_last(out_dir, model, optimizer, done, time.perf_counter() - t0, history, tc, config)
        bar.close()
        train_seconds = time.perf_counter() - t0
        model.eval()
        # Not checkpointed on its own: it takes about a minute, and from the same trained
        # autoencoder it is deterministic, so a resumed run simply refits it.
        t_fusion = time.perf_counter()
        fusion_history = fit_fusion(model, ecg, mri, seed=seed, steps=fusion_steps, progress=progress)
        fusion_seconds = time.perf_counter() - t_fusion

        training = {
            **asdict(tc),
            "name": name or out_dir.name,
            "data": data.description,
            "data_provenance": data.provenance,
            "train_ids": [int(train_ids[0]), int(train_ids[-1])] if np.issubdtype(train_ids.dtype, np.integer) else None,
            "eval_ids": [int(eval_ids[0]), int(eval_ids[-1])] if len(eval_ids) and np.issubdtype(eval_ids.dtype, np.integer) else None,
            "train_seconds": round(train_seconds, 1),
            "fusion_seconds": round(fusion_seconds, 1),
            "fusion_history": fusion_history,
            "generate_seconds": round(gen_seconds, 1),
            "parameters": count_parameters(model),
            "threads": threads,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "history": history,
        }
        save_checkpoint(out_dir, model, training=training)
        del ecg, mri
        if evaluate and n_eval > 0:
            from lse_panel.model.evaluation import evaluate_model, write_model_card

            t_eval = time.perf_counter()
            eval_ecg, eval_mri, eval_ph = data.generate(eval_ids, progress=progress, desc="evaluation set")
            raw = {config.ecg_name: eval_ecg, config.mri_name: eval_mri.astype(np.float32)}
            metrics = evaluate_model(model, raw, eval_ph, seed=seed, tasks=data.tasks, progress=progress)
            training["eval_seconds"] = round(time.perf_counter() - t_eval, 1)
            training["metrics"] = metrics
            save_checkpoint(out_dir, model, training=training)
            write_model_card(out_dir, config, training, metrics)
    if not keep_last:
        # The finished checkpoint is complete; the resume file (weights + optimiser, 3x the
        # size) only matters while a run can still be interrupted.
        (out_dir / LAST).unlink(missing_ok=True)
    return out_dir


def fit_fusion(
    model: CrossModalAutoencoder,
    ecg: np.ndarray,
    mri: np.ndarray,
    *,
    seed: int,
    steps: int = 600,
    batch_size: int = 256,
    lr: float = 1e-3,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Fit the fusion head so that one fused latent decodes into both of a subject's records.

    The encoders and decoders stay frozen (eval mode, batch norms folded): only
    ``model.fusion`` learns, on the training set's embeddings, with the same standardised
    MSE as training. Deterministic under ``seed``.

    Returns
    -------
    list of dict
        ``step`` and the running reconstruction loss of both modalities, every 100 steps.
    """
    if steps <= 0:
        return []
    net = inference_copy(model)
    # In chunks: the training MRI is held as float16, and encode_arrays takes float32 copies.
    chunks = [
        encode_arrays(net, {model.config.ecg_name: ecg[i : i + 4096], model.config.mri_name: mri[i : i + 4096]})
        for i in range(0, len(ecg), 4096)
    ]
    z_e = torch.from_numpy(np.concatenate([c["ecg"] for c in chunks]))
    z_m = torch.from_numpy(np.concatenate([c["mri"] for c in chunks]))
    fusion = model.fusion
    fusion.train()
    optimizer = torch.optim.AdamW(fusion.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7)
    history: list[dict[str, float]] = []
    running = None
    batch_size = min(batch_size, len(z_e))
    for step in tqdm(range(steps), desc="fusion head", unit="step", disable=not progress):
        idx = torch.randperm(len(z_e), generator=generator)[:batch_size].sort().values
        x_e = net.normalise_ecg(torch.from_numpy(ecg[idx.numpy()]))
        x_m = net.normalise_mri(torch.from_numpy(mri[idx.numpy()].astype(np.float32)))
        z = fusion(z_e[idx], z_m[idx])
        loss = F.mse_loss(net.ecg_decoder(z), x_e) + F.mse_loss(net.mri_decoder(z), x_m)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            history.append({"step": step + 1, "reconstruction": round(running, 5)})
    fusion.eval()
    return history


def _save_last(
    out_dir: Path,
    model: CrossModalAutoencoder,
    optimizer: torch.optim.Optimizer,
    step: int,
    elapsed: float,
    history: list[dict[str, float]],
    tc: TrainConfig,
    config: ModelConfig,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "elapsed": elapsed,
        # JSON strings keep the file loadable with weights_only=True whatever the values hold.
        "history": json.dumps(history),
        "train_config": json.dumps(asdict(tc)),
        "model_config": json.dumps(config.to_json()),
    }
    _atomic_write(out_dir / LAST, lambda p: torch.save(state, p))


def _resume_state(out_dir: Path, tc: TrainConfig, config: ModelConfig) -> dict[str, Any] | None:
    """``last.pt`` if it exists and was made with these options; refuses a mismatched one."""
    file = out_dir / LAST
    if not file.exists():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        saved_tc = json.loads(state["train_config"])
        saved_model = json.loads(state["model_config"])
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be resumed from
        raise ModelError(
            f"{file}: cannot resume from it ({type(exc).__name__}: {exc}). Delete it, or pass "
            "resume=False (`--no-resume`) to start afresh."
        ) from None
    if saved_tc != json.loads(json.dumps(asdict(tc))) or saved_model != config.to_json():
        diff = sorted(k for k in set(saved_tc) | set(asdict(tc)) if saved_tc.get(k) != asdict(tc).get(k))
        raise ModelError(
            f"{file}: was written by a run with different options ({', '.join(diff) or 'model config'}); "
            "resuming would mix two trainings. Use another --out, or --no-resume to start afresh."
        )
    return state

