"""Save and load model checkpoints (a ``state_dict`` plus a JSON config) with errors that say what to do."""

from __future__ import annotations

import json
import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from lse_panel.cohort.schema import Modality
from lse_panel.model.networks import MODEL_FORMAT, CrossModalAutoencoder, ModelConfig

WEIGHTS = "model.pt"
CONFIG = "config.json"


class ModelError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the model or the cohort it is used with."""


def _retrain_hint(path: Path) -> str:
    return f"Retrain it with `lse train --out {path}` or point --model at another checkpoint."


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    model: CrossModalAutoencoder,
    *,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.pt`` (a pure ``state_dict``) and ``config.json`` into ``out_dir``.

    Each file is written under a temporary name and renamed, so a reader never sees half of
    one. The weights go first and the config last: a directory with a config has weights.

    Parameters
    ----------
    out_dir
        Checkpoint directory, created if needed.
    model
        The trained model.
    training
        Provenance to record next to the architecture (seed, sizes, time, metrics).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(out_dir / WEIGHTS, lambda p: torch.save(state, p))
    config = {"format": MODEL_FORMAT, "model": model.config.to_json(), "training": dict(training or {})}
    _atomic_write(out_dir / CONFIG, lambda p: p.write_text(json.dumps(config, indent=2, default=str)))
    return out_dir


def read_config(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, Any]]:
    """Read a checkpoint's ``config.json``: the :class:`ModelConfig` and the training record.

    Parameters
    ----------
    path
        The checkpoint directory, or its ``model.pt`` / ``config.json``.
    """
    directory = _checkpoint_dir(path)
    file = directory / CONFIG
    if not file.exists():
        raise ModelError(f"{file}: missing, so {directory} is not a complete checkpoint. {_retrain_hint(directory)}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{file}: not valid JSON ({exc}). {_retrain_hint(directory)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelError(f"{file}: has no 'model' section describing the architecture. {_retrain_hint(directory)}")
    if data.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{file}: checkpoint format {data.get('format')!r}, but this lse-panel reads format "
            f"{MODEL_FORMAT}. {_retrain_hint(directory)}"
        )
    try:
        config = ModelConfig.from_json(data["model"])
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{file}: field 'model' is not a valid model config ({exc}). {_retrain_hint(directory)}") from None
    return config, dict(data.get("training") or {})


def _checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.name in (WEIGHTS, CONFIG):
        path = path.parent
    if not path.exists():
        raise ModelError(f"{path}: no such model checkpoint. Train one with `lse train --out {path}`.")
    if not path.is_dir():
        raise ModelError(f"{path}: expected a checkpoint directory holding {WEIGHTS} and {CONFIG}.")
    return path


def load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Load a ``state_dict`` safely (``weights_only=True``), turning every failure into a :class:`ModelError`."""
    if not file.exists():
        raise ModelError(f"{file}: missing. {_retrain_hint(file.parent)}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{file}: unreadable as a torch state_dict ({first}); the file is truncated, corrupt "
            f"or not a checkpoint. {_retrain_hint(file.parent)}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{file}: holds a {type(state).__name__}, not a state_dict of tensors. {_retrain_hint(file.parent)}")
    return state


def load_model(path: str | os.PathLike[str]) -> tuple[CrossModalAutoencoder, ModelConfig]:
    """Rebuild a trained model from its checkpoint directory, in eval mode.

    Parameters
    ----------
    path
        The checkpoint directory (``models/NAME``), or its ``model.pt``.

    Returns
    -------
    tuple
        ``(model, config)``.

    Raises
    ------
    ModelError
        Missing files, malformed JSON, a truncated or non-checkpoint ``model.pt``, missing or
        unexpected keys, tensors whose shapes differ from what the config builds.
    """
    directory = _checkpoint_dir(path)
    config, _ = read_config(directory)
    state = load_state_dict(directory / WEIGHTS)
    model = CrossModalAutoencoder(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise ModelError(
            f"{directory / WEIGHTS}: does not match the architecture in {CONFIG} ({'; '.join(parts)}). "
            f"The two files come from different models. {_retrain_hint(directory)}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ModelError(
            f"{directory / WEIGHTS}: tensor shapes differ from what {CONFIG} builds ({_few(wrong)}). "
            f"The two files come from different models. {_retrain_hint(directory)}"
        )
    model.load_state_dict(state)
    return model.eval(), config


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def check_compatible(config: ModelConfig, modalities: Mapping[str, Modality]) -> dict[str, str]:
    """Check that a model fits a cohort's declared modalities; map its roles to the cohort's names.

    The model's signal input is matched to the cohort's modality of the same name, or else to
    its only ``signal`` modality; likewise the image-sequence input. Views and the manifest
    dispatch on kinds, so a cohort may call its modalities anything.

    Parameters
    ----------
    config
        The model's config.
    modalities
        The cohort's modalities (``Cohort.modalities``, from the manifest).

    Returns
    -------
    dict
        ``{"ecg": cohort name of the signal modality, "mri": cohort name of the image sequence}``.

    Raises
    ------
    ModelError
        Naming both shapes and how to get a matching model.
    """
    roles = {
        "ecg": ("signal", config.ecg_name, tuple(config.ecg_shape)),
        "mri": ("image_sequence", config.mri_name, tuple(config.mri_shape)),
    }
    names: dict[str, str] = {}
    for role, (kind, name, shape) in roles.items():
        candidates = [n for n, m in modalities.items() if m.kind == kind]
        if name in modalities and modalities[name].kind == kind:
            chosen = name
        elif len(candidates) == 1:
            chosen = candidates[0]
        else:
            declared = ", ".join(f"{n} ({m.kind}, {tuple(m.shape)})" for n, m in modalities.items()) or "none"
            raise ModelError(
                f"the model needs one {kind} modality {name!r} of shape {shape}, but the cohort declares: "
                f"{declared}. Build the bundle with its raw modalities declared, or use a model trained "
                "on this cohort's modalities."
            )
        got = tuple(modalities[chosen].shape)
        if got != shape:
            raise ModelError(
                f"modality {chosen!r}: the model was trained on shape {shape} but the cohort declares {got}. "
                f"Train a model for these shapes (`lse train --bundle <this bundle> --out models/NEW`) "
                f"or rebuild the cohort with shape {shape}."
            )
        names[role] = chosen
    return names
