"""Checkpoint round trip and every way a checkpoint can fail to fit, each with a clear message."""

from __future__ import annotations

import json

import pytest
import torch

from model_fixtures import TINY_ECG, TINY_MRI, tiny_modalities
from lse_panel.model.checkpoint import ModelError, check_compatible, load_model, read_config, save_checkpoint
from lse_panel.model.networks import MODEL_FORMAT, CrossModalAutoencoder, ModelConfig


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CrossModalAutoencoder(ModelConfig(ecg_shape=TINY_ECG, mri_shape=TINY_MRI, latent_dim=8)).eval()
    save_checkpoint(tmp_path / "m", model, training={"seed": 0})
    loaded, config = load_model(tmp_path / "m")
    assert config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not loaded.training
    assert read_config(tmp_path / "m" / "model.pt")[1] == {"seed": 0}
    # The weights file is a pure state_dict: loadable with weights_only=True.
    assert isinstance(torch.load(tmp_path / "m" / "model.pt", weights_only=True), dict)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="no such model checkpoint.*lse train --out"):
        load_model(tmp_path / "nope")


def test_missing_config(tiny_checkpoint):
    (tiny_checkpoint / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json: missing.*Retrain"):
        load_model(tiny_checkpoint)


def test_malformed_config(tiny_checkpoint):
    (tiny_checkpoint / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(tiny_checkpoint)
    (tiny_checkpoint / "config.json").write_text(json.dumps({"format": MODEL_FORMAT, "model": {"ecg_shape": [12]}}))
    with pytest.raises(ModelError, match="not a valid model config"):
        load_model(tiny_checkpoint)


def test_truncated_weights(tiny_checkpoint):
    weights = tiny_checkpoint / "model.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="unreadable as a torch state_dict.*truncated"):
        load_model(tiny_checkpoint)
    weights.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="unreadable"):
        load_model(tiny_checkpoint)


def test_missing_weights(tiny_checkpoint):
    (tiny_checkpoint / "model.pt").unlink()
    with pytest.raises(ModelError, match="model.pt: missing"):
        load_model(tiny_checkpoint)


def test_not_a_state_dict(tiny_checkpoint):
    torch.save([torch.zeros(1)], tiny_checkpoint / "model.pt")
    with pytest.raises(ModelError, match="not a state_dict"):
        load_model(tiny_checkpoint)


def test_missing_and_unexpected_keys(tiny_checkpoint):
    state = torch.load(tiny_checkpoint / "model.pt", weights_only=True)
    state.pop("logit_scale")
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tiny_checkpoint / "model.pt")
    with pytest.raises(ModelError, match=r"missing keys logit_scale; unexpected keys extra\.weight"):
        load_model(tiny_checkpoint)


def test_shape_mismatch(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["model"]["latent_dim"] = 16
    (tiny_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"tensor shapes differ.*checkpoint \(8.*vs config \(16"):
        load_model(tiny_checkpoint)


def test_check_compatible_names_both_shapes_and_the_fix():
    config = ModelConfig(ecg_shape=TINY_ECG, mri_shape=TINY_MRI)
    assert check_compatible(config, tiny_modalities()) == {"ecg": "ecg", "mri": "mri"}
    with pytest.raises(ModelError) as err:
        check_compatible(config, tiny_modalities(mri_shape=(4, 32, 32)))
    msg = str(err.value)
    assert "(4, 16, 16)" in msg and "(4, 32, 32)" in msg and "lse train --bundle" in msg
    with pytest.raises(ModelError, match=r"\(12, 64\).*\(12, 100\)"):
        check_compatible(config, tiny_modalities(ecg_shape=(12, 100)))
    with pytest.raises(ModelError, match="needs one image_sequence modality"):
        check_compatible(config, {"ecg": tiny_modalities()["ecg"]})


def test_check_compatible_matches_by_kind_when_names_differ():
    config = ModelConfig(ecg_shape=TINY_ECG, mri_shape=TINY_MRI)
    mods = tiny_modalities()
    renamed = {"beat": mods["ecg"], "cine": mods["mri"]}
    assert check_compatible(config, renamed) == {"ecg": "beat", "mri": "cine"}
