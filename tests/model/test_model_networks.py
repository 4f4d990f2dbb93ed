"""Shapes, determinism and inference folding of the cross-modal networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lse_panel.model.networks import CrossModalAutoencoder, ModelConfig, count_parameters, inference_copy


@pytest.mark.parametrize(
    ("ecg_shape", "mri_shape"),
    [((12, 64), (4, 16, 16)), ((3, 70), (5, 15, 17)), ((12, 600), (16, 48, 48)), ((1, 9), (1, 5, 7))],
)
def test_shapes_adapt_to_any_modality_shape(ecg_shape, mri_shape):
    config = ModelConfig(ecg_shape=ecg_shape, mri_shape=mri_shape, latent_dim=8, ecg_widths=(4, 8), mri_widths=(4, 8))
    model = CrossModalAutoencoder(config).eval()
    ecg = torch.randn(3, *ecg_shape)
    mri = torch.rand(3, *mri_shape)
    with torch.no_grad():
        z_e, z_m = model(ecg, mri)
        assert z_e.shape == z_m.shape == (3, 8)
        assert model.decode_ecg(z_e).shape == (3, *ecg_shape)
        assert model.decode_mri(z_m).shape == (3, *mri_shape)


def test_same_seed_same_model_and_outputs():
    config = ModelConfig(ecg_shape=(12, 64), mri_shape=(4, 16, 16), latent_dim=8)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = CrossModalAutoencoder(config).eval()
        torch.manual_seed(99)
        x = torch.randn(4, 12, 64), torch.rand(4, 4, 16, 16)
        with torch.no_grad():
            outs.append(torch.cat(model(*x), dim=1))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_fuse_takes_each_value_from_one_modality():
    z_e = torch.zeros(100, 64)
    z_m = torch.ones(100, 64)
    g = torch.Generator().manual_seed(0)
    fused = CrossModalAutoencoder.fuse(z_e, z_m, g)
    assert set(fused.unique().tolist()) == {0.0, 1.0}
    assert 0.45 < fused.mean().item() < 0.55
    again = CrossModalAutoencoder.fuse(z_e, z_m, torch.Generator().manual_seed(0))
    assert torch.equal(fused, again)
    p = torch.tensor([[1.0], [0.0]])
    pure = CrossModalAutoencoder.fuse(z_e[:2], z_m[:2], g, p)
    assert torch.equal(pure[0], z_e[0]) and torch.equal(pure[1], z_m[1])


def test_untrained_fusion_head_gives_the_mean_of_the_two_latents():
    torch.manual_seed(0)
    model = CrossModalAutoencoder(ModelConfig(ecg_shape=(12, 64), mri_shape=(4, 16, 16), latent_dim=8))
    z_e, z_m = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(model.fuse_latents(z_e, z_m), 0.5 * (z_e + z_m))


def test_inference_copy_folds_batchnorm_without_changing_outputs():
    torch.manual_seed(0)
    config = ModelConfig(ecg_shape=(12, 64), mri_shape=(4, 16, 16), latent_dim=8)
    model = CrossModalAutoencoder(config)
    model.train()
    with torch.no_grad():  # give the batch norms non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, 12, 64) * 2 + 1, torch.rand(16, 4, 16, 16))
    model.eval()
    folded = inference_copy(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x_e, x_m = torch.randn(5, 12, 64), torch.rand(5, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded.encode_ecg(x_e), model.encode_ecg(x_e), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(folded.encode_mri(x_m), model.encode_mri(x_m), atol=1e-5, rtol=1e-4)
        z = torch.randn(5, 8)
        torch.testing.assert_close(folded.decode_mri(z), model.decode_mri(z), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(folded.decode_ecg(z), model.decode_ecg(z), atol=1e-5, rtol=1e-4)
    assert model.training is False and any(p.requires_grad for p in model.parameters())


def test_config_json_round_trip_and_demo_size():
    config = ModelConfig(ecg_shape=(12, 600), mri_shape=(16, 48, 48))
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_json({**config.to_json(), "colour": "blue"})
    # The demo checkpoint must stay small: a few MB of float32 weights.
    assert count_parameters(CrossModalAutoencoder(config)) * 4 < 5e6


def test_set_normalisation_standardises():
    config = ModelConfig(ecg_shape=(2, 32), mri_shape=(2, 8, 8), latent_dim=4)
    model = CrossModalAutoencoder(config)
    ecg = torch.randn(64, 2, 32) * torch.tensor([[3.0], [0.5]]) + 2
    mri = torch.rand(64, 2, 8, 8) * 4
    model.set_normalisation(ecg, mri)
    n_e = model.normalise_ecg(ecg)
    n_m = model.normalise_mri(mri)
    assert abs(float(n_e.mean())) < 1e-4 and np.allclose(n_e.std(dim=(0, 2)).numpy(), 1, atol=0.02)
    assert abs(float(n_m.mean())) < 1e-4 and abs(float(n_m.std()) - 1) < 0.02
