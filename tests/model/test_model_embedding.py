"""Embedding: encode_arrays, and streaming a whole bundle in batches equals a one-shot encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.bundle_writer import write_bundle
from lse_panel.model.checkpoint import ModelError, save_checkpoint
from lse_panel.model.embedding import FUSION, LATENT_KINDS, embed_bundle, encode_arrays
from lse_panel.model.networks import CrossModalAutoencoder, ModelConfig
from model_fixtures import TINY_ECG, TINY_MRI, tiny_raw

SYNTH_MRI = (4, 16, 16)


def _model(ecg_shape, mri_shape, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(ecg_shape=ecg_shape, mri_shape=mri_shape, latent_dim=8, ecg_widths=(4, 8), mri_widths=(4, 8))
    return CrossModalAutoencoder(config).eval()


def test_encode_arrays_shapes_and_batch_invariance():
    model = _model(TINY_ECG, TINY_MRI)
    raw, _ = tiny_raw(np.arange(37))
    one = encode_arrays(model, raw, batch_size=1000)
    many = encode_arrays(model, raw, batch_size=5)
    assert set(one) == set(LATENT_KINDS)
    for kind in LATENT_KINDS:
        assert one[kind].shape == (37, 8) and one[kind].dtype == np.float32
        np.testing.assert_allclose(one[kind], many[kind], atol=1e-5)
    np.testing.assert_allclose(one["fused"], (one["ecg"] + one["mri"]) / 2, atol=1e-6)
    with pytest.raises(ModelError, match=r"\(4, 8, 8\).*\(4, 16, 16\)"):
        encode_arrays(model, {"ecg": raw["ecg"], "mri": raw["mri"][:, :, :8, :8]})


@pytest.fixture(scope="module")
def synth_bundle(tmp_path_factory):
    synth_mod = pytest.importorskip("lse_panel.synth")
    synth = synth_mod.SyntheticCohort(seed=0, mri_shape=SYNTH_MRI)
    ids = np.arange(300)
    path = tmp_path_factory.mktemp("bundle") / "cohort"
    write_bundle(
        path,
        ids=ids,
        phenotypes=synth.phenotypes(ids),
        phenotype_specs=synth_mod.PHENOTYPES,
        modalities=synth.modalities,
        raw=synth.to_json(),
    )
    return path, synth


def test_streaming_embed_equals_one_shot(synth_bundle, tmp_path):
    path, synth = synth_bundle
    ecg_shape = synth.modalities["ecg"].shape
    model = _model(ecg_shape, SYNTH_MRI)
    raw = synth.raw(np.arange(300))
    with torch.no_grad():
        model.set_normalisation(torch.from_numpy(raw["ecg"]), torch.from_numpy(raw["mri"]))
    save_checkpoint(tmp_path / "m", model)
    timing = embed_bundle(path, tmp_path / "m", batch_size=128, progress=False)  # 3 batches, the last partial
    assert timing["n_subjects"] == 300 and timing["subjects_per_s"] > 0
    cohort = open_bundle(path)
    expected = encode_arrays(model, raw)
    for kind in LATENT_KINDS:
        block = cohort.latent(kind)
        assert block.shape == (300, 8) and block.dtype == np.float32
        np.testing.assert_allclose(block, expected[kind], atol=1e-5)
    assert cohort.manifest["latents"]["fused"]["fusion"] == FUSION
    assert not list((path / "latents").glob(".*"))  # no temporary files left behind


def test_embed_refuses_a_model_of_other_shapes(synth_bundle, tmp_path):
    path, synth = synth_bundle
    before = open_bundle(path).manifest.get("latents")
    save_checkpoint(tmp_path / "m", _model(synth.modalities["ecg"].shape, (4, 32, 32)))
    with pytest.raises(ModelError) as err:
        embed_bundle(path, tmp_path / "m", progress=False)
    assert "(4, 32, 32)" in str(err.value) and "(4, 16, 16)" in str(err.value)
    assert open_bundle(path).manifest.get("latents") == before

