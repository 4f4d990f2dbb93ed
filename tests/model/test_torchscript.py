"""TorchScript decoders and encoders: loaded with torch.jit.load only, checked against their declared shapes, batched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lse_panel.digest import file_digest
from lse_panel.model.checkpoint import ModelError
from lse_panel.model.torchscript import ScriptedDecoder, ScriptedEncoder, check_decoder, load_torchscript, save_linear_torchscript


def _decoder(tmp_path: Path, name: str, dim: int, shape: tuple[int, ...], seed: int = 0) -> Path:
    size = int(np.prod(shape))
    return save_linear_torchscript(tmp_path / name, np.random.default_rng(seed).normal(size=(size, dim)), np.zeros(size), shape)


def test_decoder_protocol_kind_by_kind(tmp_path: Path) -> None:
    entries = {
        "a": {"file": _decoder(tmp_path, "a.pt", 4, (2, 10)).name, "latent": "fused", "modality": "ecg", "shape": [2, 10]},
        "b": {"file": _decoder(tmp_path, "b.pt", 4, (3, 5, 5)).name, "latent": "fused", "modality": "mri", "shape": [3, 5, 5]},
        "c": {"file": _decoder(tmp_path, "c.pt", 6, (2, 10), seed=1).name, "latent": "ecg", "modality": "ecg", "shape": [2, 10]},
    }
    decoder = ScriptedDecoder.from_manifest(tmp_path, entries)
    decoder.batch_size = 3  # several forward passes for 7 latents
    assert decoder.kinds == ("fused", "ecg") and decoder.shapes == {"ecg": (2, 10), "mri": (3, 5, 5)}
    z = np.random.default_rng(2).normal(size=(7, 4)).astype(np.float32)
    out = decoder(z, "fused")
    assert out["ecg"].shape == (7, 2, 10) and out["mri"].shape == (7, 3, 5, 5)
    module = load_torchscript(tmp_path / "a.pt")
    np.testing.assert_allclose(out["ecg"], module(torch.from_numpy(z)).detach().numpy(), rtol=1e-5)
    assert set(decoder(np.zeros((1, 6), np.float32), "ecg")) == {"ecg"}
    assert decoder(z, "mri") == {}  # no module reads that kind
    with pytest.raises(ValueError, match=r"reads latent kinds \['fused', 'ecg'\]; say which"):
        decoder(z)
    single = ScriptedDecoder.from_manifest(tmp_path, {"c": entries["c"]})
    assert single(np.zeros((2, 6), np.float32))["ecg"].shape == (2, 2, 10)  # one kind: the old one-argument call works


def test_a_changed_decoder_file_is_refused(tmp_path: Path) -> None:
    path = _decoder(tmp_path, "a.pt", 4, (2, 10))
    entry = {"file": "a.pt", "latent": "fused", "modality": "ecg", "shape": [2, 10], "sha256": file_digest(path)}
    _decoder(tmp_path, "a.pt", 4, (2, 10), seed=9)
    with pytest.raises(ModelError, match=r"a.pt: decoder 'a' changed since the import.*Re-run `lse import`"):
        ScriptedDecoder.from_manifest(tmp_path, {"a": entry})


def test_decoder_returning_nan_and_encoder_returning_the_wrong_rank(tmp_path: Path) -> None:
    path = save_linear_torchscript(tmp_path / "nan.pt", np.zeros((20, 4)), np.full(20, np.nan), (2, 10))
    with pytest.raises(ModelError, match=r"nan.pt: decoder \(fused → ecg\) returned NaN or infinite values"):
        check_decoder(load_torchscript(path), path=path, latent="fused", latent_dim=4, modality="ecg", shape=(2, 10))
    path = save_linear_torchscript(tmp_path / "enc.pt", np.zeros((8, 20)), np.zeros(8), (2, 4))
    with pytest.raises(ModelError, match=r"enc.pt: encoder \(ecg → ecg\) returned shape \(2, 2, 4\).*must return \(2, latent_dim\)"):
        ScriptedEncoder(path, modality="ecg", shape=(2, 10), latent="ecg")
    encoder = ScriptedEncoder(save_linear_torchscript(tmp_path / "ok.pt", np.eye(20)[:5], np.zeros(5), (5,)),
                              modality="ecg", shape=(2, 10), latent="ecg")
    assert encoder.latent_dim == 5
    np.testing.assert_allclose(encoder(np.arange(40, dtype=np.float32).reshape(2, 2, 10)), [[0, 1, 2, 3, 4], [20, 21, 22, 23, 24]])
