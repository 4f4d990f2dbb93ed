"""The interpolation pane: endpoints decode to the group means, steps and layouts, the path on a map, privacy."""

from __future__ import annotations


import numpy as np
import panel as pn
import pytest

from lse_panel.analysis.latent_paths import interpolate, pca_transform
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.components.interpolate import MONTAGE_GAP, InterpolatePane, colour_ramp
from lse_panel.components.state import ExplorerState
from lse_panel.testing import TINY_MODALITIES, tiny_cohort, tiny_decoder

N = 300



@pytest.fixture
def cohort() -> Cohort:
    # Function-scoped: tests save subgroups (kept per in-memory cohort) and edit the manifest.
    return tiny_cohort(N)


class CountingDecoder:
    def __init__(self) -> None:
        self._decode = tiny_decoder(8)
        self.calls = 0

    def __call__(self, latents: np.ndarray, kind: str) -> dict[str, np.ndarray]:
        self.calls += 1
        return self._decode(latents, kind)


def _mean(cohort: Cohort, kind: str, rows: np.ndarray) -> np.ndarray:
    return cohort.latent(kind)[rows].astype(np.float64).mean(axis=0)


def _assert_decodes_to(decoded: dict[str, np.ndarray], step: int, z: np.ndarray) -> None:
    expected = tiny_decoder(8)(np.asarray(z, np.float32)[None], "fused")
    for name, values in expected.items():
        np.testing.assert_allclose(decoded[name][step], values[0], rtol=1e-5, atol=1e-5)


def test_endpoints_decode_to_comparison_and_selection_means(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = InterpolatePane(state, CountingDecoder())
    assert "No subjects selected" in pane.message
    rows = np.arange(0, N, 3)
    state.select(rows)
    rest = np.setdiff1d(np.arange(N), rows)
    assert pane.message == ""
    assert {name: v.shape for name, v in pane.decoded.items()} == {
        name: (8, *m.shape) for name, m in TINY_MODALITIES.items()
    }
    start, end = _mean(cohort, "fused", rest), _mean(cohort, "fused", rows)
    np.testing.assert_allclose(pane.latents[0], start, atol=1e-9)
    np.testing.assert_allclose(pane.latents[-1], end, atol=1e-9)
    np.testing.assert_allclose(pane.latents, interpolate(start, end, 8), atol=1e-9)
    _assert_decodes_to(pane.decoded, 0, start)
    _assert_decodes_to(pane.decoded, -1, end)
    assert pane.labels[0] == "0 · rest" and pane.labels[-1] == "7 · selection"
    pn.panel(pane).get_root()


def test_steps_and_signal_layouts(cohort: Cohort) -> None:
    state = ExplorerState(cohort, decode_from="mri")
    pane = InterpolatePane(state, CountingDecoder())
    state.select(np.arange(100))
    pane.steps = 12
    assert pane.latents.shape == (12, 8) and len(pane.labels) == 12
    assert pane.decoded["ecg"].shape == (12, 3, 64)
    pn.panel(pane).get_root()
    ecg = pane._pipes["ecg"].data
    assert list(ecg) == pane.labels
    np.testing.assert_array_equal(ecg[pane.labels[5]], pane.decoded["ecg"][5])
    # The images: one strip per frame, the steps side by side.
    mri = pane._pipes["mri"].data["path"]
    assert mri.shape == (4, 12, 12 * 12 + 11 * MONTAGE_GAP)
    np.testing.assert_array_equal(mri[:, :, :12], pane.decoded["mri"][0])
    last = 11 * (12 + MONTAGE_GAP)
    np.testing.assert_array_equal(mri[:, :, last : last + 12], pane.decoded["mri"][11])
    # One channel, a cell per step; the channel is chosen by name.
    pane.param.update(signal_layout="strip", channel="V1")
    strip = pane._pipes["ecg"].data
    np.testing.assert_array_equal(strip["path"], pane.decoded["ecg"][:, 2])
    np.testing.assert_array_equal(strip["start"][7], pane.decoded["ecg"][0, 2])
    assert pane.param.channel.objects == ["I", "II", "V1"]
    pn.panel(pane).get_root()
    with pytest.raises(ValueError):
        pane.steps = 21


def test_two_saved_subgroups(cohort: Cohort) -> None:
    store = SubgroupStore(cohort)
    a, b = np.arange(10, 60), np.arange(200, 290)
    store.save("young", a)
    store.save("old", b)
    state = ExplorerState(cohort, store=store)
    pane = InterpolatePane(state, CountingDecoder(), endpoints="subgroups")
    assert (pane.start, pane.end) == ("young", "old")
    np.testing.assert_allclose(pane.latents[0], _mean(cohort, "fused", a), atol=1e-9)
    np.testing.assert_allclose(pane.latents[-1], _mean(cohort, "fused", b), atol=1e-9)
    _assert_decodes_to(pane.decoded, 0, _mean(cohort, "fused", a))
    _assert_decodes_to(pane.decoded, -1, _mean(cohort, "fused", b))
    pane.param.update(start="old", end="young")
    np.testing.assert_allclose(pane.latents[0], _mean(cohort, "fused", b), atol=1e-9)
    # A subgroup saved later shows up after a refresh; one under the floor is not decoded.
    store.save("tiny", np.arange(7))
    assert "tiny" in pane.refresh_subgroups()
    pane.end = "tiny"
    assert pane.decoded == {} and "fewer than 10 subjects (7)" in pane.message
    pane.end = "old"
    assert "same subgroup" in pane.message


def test_privacy_floor_nothing_decoded_and_no_path(cohort: Cohort) -> None:
    decode = CountingDecoder()
    state = ExplorerState(cohort)
    pane = InterpolatePane(state, decode)
    overlay = pane.create_path_overlay("fused/umap")
    state.select(np.arange(5))
    assert pane.decoded == {} and pane.latents is None
    assert "fewer than 10 subjects (5)" in pane.message
    assert decode.calls == 0
    assert pane.path_coords("fused/umap") is None
    assert len(overlay[()].Points.I) == 0


def test_path_coords_exact_on_pca_and_neighbours_on_umap(cohort: Cohort) -> None:
    block = cohort.latent("fused")
    mean = block.mean(0)
    _, _, vt = np.linalg.svd(block - mean, full_matrices=False)
    cohort.manifest["projections"] = {
        "fused/pca": {"latent": "fused", "method": "pca", "params": {"mean": mean.tolist(), "components": vt[:2].tolist()}},
        "fused/umap": {"latent": "fused", "method": "umap", "params": {}},
    }
    state = ExplorerState(cohort)
    pane = InterpolatePane(state, CountingDecoder())
    pca_overlay = pane.create_path_overlay("fused/pca")
    umap_overlay = pane.create_path_overlay("fused/umap")
    rows = np.arange(50, 150)
    state.select(rows)
    xy = pane.path_coords("fused/pca")
    params = {"mean": mean, "components": vt[:2]}
    np.testing.assert_allclose(xy, pca_transform(pane.latents, params), atol=1e-9)
    # On a linear map the path is the straight line between the groups' mean positions.
    np.testing.assert_allclose(xy[-1], cohort.projection("fused/pca")[rows].astype(np.float64).mean(0), atol=1e-3)
    np.testing.assert_allclose(np.diff(xy, 2, axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(pca_overlay[()].Points.I.array(["x", "y"]), xy)
    umap = pane.path_coords("fused/umap")
    assert umap.shape == (8, 2) and np.isfinite(umap).all()
    np.testing.assert_allclose(umap_overlay[()].Points.I.array(["x", "y"]), umap)
    # Another latent kind: the same groups' path in that kind's latents.
    ecg = pane.path_coords("ecg/umap")
    assert ecg.shape == (8, 2)
    pane.steps = 3
    assert pca_overlay[()].Points.I.array().shape[0] == 3


def test_path_coords_prefer_a_given_projector(cohort: Cohort) -> None:
    from lse_panel.analysis.projection import LinearProjector

    block = cohort.latent("fused")
    mean = block.mean(0)
    _, _, vt = np.linalg.svd(block - mean, full_matrices=False)
    projector = LinearProjector(vt[:2].astype(np.float32), mean.astype(np.float32))
    state = ExplorerState(cohort)
    pane = InterpolatePane(state, CountingDecoder(), projectors={"fused/umap": projector})
    state.select(np.arange(30, 90))
    np.testing.assert_allclose(
        pane.path_coords("fused/umap"), pca_transform(pane.latents, {"mean": mean, "components": vt[:2]}), atol=1e-4
    )


def test_colour_ramp() -> None:
    ramp = colour_ramp(5)
    assert ramp[0] == "#1f77b4" and ramp[-1] == "#d62728" and len(set(ramp)) == 5
