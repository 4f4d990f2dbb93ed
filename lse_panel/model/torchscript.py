"""TorchScript decoders and encoders a researcher brings: loaded with ``torch.jit.load`` (never pickle), shape-checked, run in batches.

A decoder maps one latent kind to one modality: ``(k, latent_dim)`` float32 → ``(k, *shape)``
with the shape the modality declares (``channels × samples`` for a signal, ``frames × height ×
width`` for an image sequence). An encoder maps one modality to one latent kind: ``(k, *shape)``
→ ``(k, latent_dim)``. Both are checked once with a dummy batch when imported, so a module that
does not produce what its declaration says is refused with the shapes side by side.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lse_panel.digest import file_digest
from lse_panel.model.checkpoint import ModelError

_CHECK_BATCH = 2


def load_torchscript(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """Load a TorchScript module onto the CPU in eval mode.

    Raises
    ------
    ModelError
        The file is missing or is not a TorchScript archive (a pickled model or a ``state_dict``
        is refused: loading those would run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file. Fix the `file` of this decoder or encoder in the import spec.")
    try:
        with warnings.catch_warnings():
            # torch 2.13 marks TorchScript deprecated in favour of torch.export; TorchScript is still the
            # one format that loads a model without running pickled code, so it is what we accept.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, ValueError or zipfile errors
        raise ModelError(
            f"{path}: not a TorchScript module ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Export it with `torch.jit.script(model).save(path)` (or `torch.jit.trace(model, example).save(path)`); "
            "pickled models and state_dicts are not loaded."
        ) from None
    return module.eval()


def _run(module: torch.jit.ScriptModule, batch: np.ndarray, what: str, path: Path) -> np.ndarray:
    try:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.array(batch, dtype=np.float32)))
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises
        raise ModelError(
            f"{path}: the {what} failed on a batch of shape {tuple(batch.shape)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Check the input shape it expects."
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{path}: the {what} returned a {type(out).__name__}; it must return one tensor.")
    return out.detach().to(torch.float32).numpy()


def check_decoder(module: torch.jit.ScriptModule, *, path: str | os.PathLike[str], latent: str, latent_dim: int,
                  modality: str, shape: Sequence[int]) -> None:
    """Run ``module`` on a dummy batch of ``latent_dim``-value latents and compare with the declared shape.

    Raises
    ------
    ModelError
        Naming the file, the shape it produced and the shape declared, and what to change.
    """
    path = Path(path)
    out = _run(module, np.zeros((_CHECK_BATCH, latent_dim), np.float32), f"decoder ({latent} → {modality})", path)
    expected = (_CHECK_BATCH, *map(int, shape))
    if tuple(out.shape) != expected:
        raise ModelError(
            f"{path}: decoder ({latent} → {modality}) returned shape {tuple(out.shape)} for a batch of "
            f"{_CHECK_BATCH} {latent} latents ({latent_dim} values each), but modality {modality!r} is declared "
            f"{tuple(expected[1:])} per record. Fix the declaration in [modalities.{modality}] or export the "
            "decoder that produces that shape."
        )
    if not np.isfinite(out).all():
        raise ModelError(f"{path}: decoder ({latent} → {modality}) returned NaN or infinite values for zero latents.")


def check_encoder(module: torch.jit.ScriptModule, *, path: str | os.PathLike[str], modality: str, shape: Sequence[int],
                  latent: str) -> int:
    """Run ``module`` on a dummy batch of the modality's shape; return the latent dimension it produces.

    Raises
    ------
    ModelError
        The encoder fails on that input or does not return ``(batch, dim)``.
    """
    path = Path(path)
    out = _run(module, np.zeros((_CHECK_BATCH, *map(int, shape)), np.float32), f"encoder ({modality} → {latent})", path)
    if out.ndim != 2 or out.shape[0] != _CHECK_BATCH:
        raise ModelError(
            f"{path}: encoder ({modality} → {latent}) returned shape {tuple(out.shape)} for a batch of "
            f"{_CHECK_BATCH} records of shape {tuple(shape)}; it must return ({_CHECK_BATCH}, latent_dim)."
        )
    return int(out.shape[1])


class ScriptedEncoder:
    """A TorchScript encoder as a numpy callable: ``(k, *shape)`` → ``(k, latent_dim)`` float32."""

    def __init__(self, path: str | os.PathLike[str], *, modality: str, shape: Sequence[int], latent: str) -> None:
        self.path = Path(path)
        self.module = load_torchscript(self.path)
        self.latent_dim = check_encoder(self.module, path=self.path, modality=modality, shape=shape, latent=latent)
        self.what = f"encoder ({modality} → {latent})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = _run(self.module, batch, self.what, self.path)
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise ModelError(f"{self.path}: the {self.what} returned NaN or infinite values (batch row {bad}).")
        return out


@dataclass(frozen=True)
class DecoderPart:
    """One TorchScript module of a :class:`ScriptedDecoder`: latent kind ``latent`` → modality ``modality``."""

    latent: str
    modality: str
    module: Any
    shape: tuple[int, ...]


class ScriptedDecoder:
    """Several TorchScript decoders behind the explorer's decoder protocol.

    ``decoder(latents, kind)`` decodes ``(k, d)`` latents of kind ``kind`` through every module
    that reads that kind and returns ``{modality: (k, *shape)}``; a kind no module reads gives
    ``{}``. ``kind`` may be left out when only one kind is decoded.

    Attributes
    ----------
    kinds
        The latent kinds some module decodes.
    shapes
        Modality → the shape of one decoded record.
    """

    def __init__(self, parts: Sequence[DecoderPart], *, batch_size: int = 256) -> None:
        self.parts = list(parts)
        self.kinds: tuple[str, ...] = tuple(dict.fromkeys(p.latent for p in self.parts))
        self.shapes = {p.modality: p.shape for p in self.parts}
        self.batch_size = int(batch_size)

    @classmethod
    def from_manifest(cls, bundle: str | os.PathLike[str], decoders: Mapping[str, Mapping[str, Any]]) -> ScriptedDecoder:
        """Load the modules ``manifest["decoders"]`` names (files relative to ``bundle``), checking their digests.

        Raises
        ------
        ModelError
            A module is missing, is not TorchScript, or changed since the import.
        """
        bundle = Path(bundle)
        parts = []
        for name, entry in decoders.items():
            path = bundle / entry["file"]
            if not path.is_file():
                raise ModelError(f"{path}: decoder {name!r} is missing from the bundle. Re-run `lse import`.")
            if entry.get("sha256") and file_digest(path) != entry["sha256"]:
                raise ModelError(
                    f"{path}: decoder {name!r} changed since the import (digest {entry['sha256']}, now "
                    f"{file_digest(path)}). Re-run `lse import` so the bundle records the decoder it uses."
                )
            parts.append(DecoderPart(entry["latent"], entry["modality"], load_torchscript(path), tuple(entry["shape"])))
        return cls(parts)

    def __call__(self, latents: np.ndarray, kind: str | None = None) -> dict[str, np.ndarray]:
        if kind is None:
            if len(self.kinds) != 1:
                raise ValueError(f"this decoder reads latent kinds {list(self.kinds)}; say which with decode(latents, kind).")
            kind = self.kinds[0]
        z = np.atleast_2d(np.asarray(latents, dtype=np.float32))
        out: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for part in self.parts:
                if part.latent != kind:
                    continue
                block = np.empty((len(z), *part.shape), dtype=np.float32)
                for start in range(0, len(z), self.batch_size):
                    chunk = torch.from_numpy(np.array(z[start : start + self.batch_size], dtype=np.float32))
                    block[start : start + len(chunk)] = part.module(chunk).to(torch.float32).numpy()
                out[part.modality] = block
        return out


class _Linear(torch.nn.Module):
    """``(k, *in_shape)`` → flatten → affine map → ``(k, *out_shape)``: what :func:`save_linear_torchscript` scripts."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, out_shape: Sequence[int]) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(np.asarray(weight, np.float32)))
            self.linear.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))
        self.out_shape = [int(s) for s in out_shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.reshape(x.shape[0], -1))
        return y.reshape([x.shape[0]] + self.out_shape)


def save_linear_torchscript(path: str | os.PathLike[str], weight: np.ndarray, bias: np.ndarray, out_shape: Sequence[int]) -> Path:
    """Script and save an affine map ``y = W x + b`` between flattened shapes (``W``: ``(out, in)``).

    A linear encoder or decoder (a PCA, say) as a TorchScript file: what the example cohort's
    ``models/`` hold, and a template for exporting your own (``torch.jit.script(model).save(path)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Linear(weight, bias, out_shape)).save(str(path))
    return path
