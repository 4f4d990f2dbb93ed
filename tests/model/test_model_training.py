"""A tiny end-to-end training run: the loss goes down, runs are deterministic, resuming changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lse_panel.model.checkpoint import ModelError, load_model
from lse_panel.model.evaluation import cross_fit_scores, retrieval_accuracy
from lse_panel.model.losses import clip_loss, mixing_probabilities
from lse_panel.model.training import LAST, train_model
from model_fixtures import TINY_TRAIN, tiny_data


def _weights(path):
    model, _ = load_model(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loss_goes_down_and_files_are_written(tmp_path):
    out = train_model(tmp_path / "m", data=tiny_data(400), **{**TINY_TRAIN, "steps": 40, "checkpoint_every": 4, "lr": 5e-3})
    config = json.loads((out / "config.json").read_text())
    history = config["training"]["history"]
    first, last = history[0], history[-1]
    assert last["val_ecg"] + last["val_mri"] < 0.85 * (first["val_ecg"] + first["val_mri"])
    assert last["val_ecg"] < first["val_ecg"] and last["val_mri"] < first["val_mri"]
    assert (out / "model.pt").exists() and (out / "MODEL_CARD.md").exists()
    assert not (out / LAST).exists()  # the resume file goes once the run is complete
    card = (out / "MODEL_CARD.md").read_text()
    for needle in ("Cross-modal retrieval", "top-10", "Downstream accuracy", "qrs_duration", "normalised MSE", "Seed 0"):
        assert needle in card


def test_same_seed_same_weights(tmp_path):
    a = train_model(tmp_path / "a", data=tiny_data(400), evaluate=False, **TINY_TRAIN)
    b = train_model(tmp_path / "b", data=tiny_data(400), evaluate=False, **TINY_TRAIN)
    c = train_model(tmp_path / "c", data=tiny_data(400), evaluate=False, **{**TINY_TRAIN, "seed": 1})
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full = train_model(tmp_path / "full", data=tiny_data(400), evaluate=False, **TINY_TRAIN)
    _checkpoint_at_step(tmp_path / "stopped", 6)
    history = json.loads(torch.load(tmp_path / "stopped" / LAST, weights_only=True)["history"])
    assert [h["step"] for h in history] == [6]
    resumed = train_model(tmp_path / "stopped", data=tiny_data(400), evaluate=False, **TINY_TRAIN)
    wf, wr = _weights(full), _weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    history = json.loads((resumed / "config.json").read_text())["training"]["history"]
    assert [h["step"] for h in history] == [6, 12]


def _checkpoint_at_step(out, step):
    """Leave ``out/last.pt`` exactly as a run interrupted right after ``step`` would."""

    class Stop(Exception):
        pass

    import lse_panel.model.training as training

    original = training._save_last

    def save_then_stop(out_dir, model, optimizer, done, *args):
        original(out_dir, model, optimizer, done, *args)
        if done == step:
            raise Stop

    training._save_last = save_then_stop
    try:
        with pytest.raises(Stop):
            train_model(out, data=tiny_data(400), evaluate=False, **TINY_TRAIN)
    finally:
        training._save_last = original
    assert torch.load(out / LAST, weights_only=True)["step"] == step


def test_resume_refuses_a_run_with_other_options(tmp_path):
    _checkpoint_at_step(tmp_path / "m", 6)
    with pytest.raises(ModelError, match="different options.*lr.*--no-resume"):
        train_model(tmp_path / "m", data=tiny_data(400), evaluate=False, **{**TINY_TRAIN, "lr": 1e-4})
    # resume=False starts afresh instead.
    train_model(tmp_path / "m", data=tiny_data(400), evaluate=False, resume=False, **{**TINY_TRAIN, "lr": 1e-4})


def test_clip_loss_prefers_matched_pairs():
    z = torch.randn(16, 8)
    scale = torch.tensor(np.log(1 / 0.07))
    assert clip_loss(z, z, scale) < clip_loss(z, torch.randn(16, 8), scale)


def test_mixing_probabilities_cover_self_cross_and_fused():
    p = mixing_probabilities(4000, torch.Generator().manual_seed(0))
    shares = {v: float((p == v).float().mean()) for v in (0.0, 0.5, 1.0)}
    assert abs(shares[0.5] - 0.5) < 0.03 and abs(shares[0.0] - 0.25) < 0.03 and abs(shares[1.0] - 0.25) < 0.03


def test_retrieval_accuracy():
    z = np.random.default_rng(0).normal(size=(50, 8))
    assert retrieval_accuracy(z, z)["a_to_b_top1"] == 1.0
    shuffled = retrieval_accuracy(z, z[::-1].copy())
    assert shuffled["a_to_b_top1"] <= 0.04


def test_cross_fitting_never_predicts_a_subject_with_a_model_fitted_on_it():
    # Pure noise that an in-sample fit would memorise (more features than the folds can pin down):
    # cross-fitted R² must stay at or below zero and AUROC near chance.
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 100))
    ph = pd.DataFrame({"age": rng.normal(size=120), "sex": rng.integers(0, 2, 120).astype(np.int8)})
    scores = cross_fit_scores(x, ph, {"age": "regression", "sex": "classification"})
    assert scores["age"] < 0.05
    assert scores["sex"] < 0.7


def test_fusion_head_decodes_both_modalities_better_than_the_mean(tmp_path):
    from lse_panel.model.embedding import encode_arrays
    from lse_panel.model.networks import inference_copy
    from model_fixtures import tiny_raw

    options = {**TINY_TRAIN, "steps": 60, "lr": 5e-3, "fusion_steps": 200}
    out = train_model(tmp_path / "m", data=tiny_data(400), evaluate=False, **options)
    model, config = load_model(out)
    history = json.loads((out / "config.json").read_text())["training"]["fusion_history"]
    assert history[-1]["reconstruction"] < history[0]["reconstruction"]

    raw, _ = tiny_raw(np.arange(5_000, 5_200))  # subjects the model never saw
    net = inference_copy(model)
    z = encode_arrays(net, raw)
    x_e, x_m = torch.from_numpy(raw["ecg"]), torch.from_numpy(raw["mri"])

    def error(latent):
        latent = torch.from_numpy(latent)
        with torch.no_grad():
            return float(((net.decode_ecg(latent) - x_e) ** 2).mean() / x_e.var() + ((net.decode_mri(latent) - x_m) ** 2).mean() / x_m.var())

    assert error(z["fused"]) < 0.95 * error(0.5 * (z["ecg"] + z["mri"]))
