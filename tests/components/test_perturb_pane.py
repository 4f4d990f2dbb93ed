"""The perturbation pane, driven by the session state and its own params: exact decodes, privacy floor."""

from __future__ import annotations


import numpy as np
import panel as pn
import pytest

from lse_panel.analysis.latent_paths import principal_directions
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.components.perturb import N_PRINCIPAL, PerturbPane
from lse_panel.components.state import ExplorerState
from lse_panel.testing import TINY_MODALITIES, tiny_cohort, tiny_decoder

N = 300



@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return tiny_cohort(N)


class CountingDecoder:
    """The tiny decoder, counting its calls."""

    def __init__(self) -> None:
        self._decode = tiny_decoder(8)
        self.calls = 0

    def __call__(self, latents: np.ndarray, kind: str) -> dict[str, np.ndarray]:
        self.calls += 1
        return self._decode(latents, kind)


def _decode_one(z: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[0] for name, values in tiny_decoder(8)(np.asarray(z, np.float32)[None], "fused").items()}


def _assert_decodes_to(decoded: dict[str, np.ndarray], z: np.ndarray) -> None:
    expected = _decode_one(z)
    assert set(decoded) == set(TINY_MODALITIES)
    for name, values in expected.items():
        np.testing.assert_allclose(decoded[name], values, rtol=1e-5, atol=1e-5)


def _mean(cohort: Cohort, kind: str, rows: np.ndarray) -> np.ndarray:
    return cohort.latent(kind)[rows].astype(np.float64).mean(axis=0)


def test_empty_selection_shows_a_message(cohort: Cohort) -> None:
    decode = CountingDecoder()
    pane = PerturbPane(ExplorerState(cohort), decode)
    assert pane.decoded == {} and pane.latent is None
    assert "No subjects selected" in pane.message
    assert decode.calls == 0
    pn.panel(pane).get_root()


def test_privacy_floor_hides_a_selection_of_five(cohort: Cohort) -> None:
    decode = CountingDecoder()
    state = ExplorerState(cohort)
    pane = PerturbPane(state, decode)
    state.select(np.arange(5))
    pane.amount = 2.0
    assert pane.decoded == {}
    assert "fewer than 10 subjects (5)" in pane.message
    assert decode.calls == 0
    # A lower floor shows it.
    state2 = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=5))
    pane2 = PerturbPane(state2, decode)
    state2.select(np.arange(5))
    assert pane2.message == "" and set(pane2.decoded) == {"perturbed", "original"}


def test_amount_zero_equals_the_original_decode(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = PerturbPane(state, CountingDecoder())
    rows = np.arange(0, N, 5)
    state.select(rows)
    assert pane.amount == 0.0
    mean = _mean(cohort, "fused", rows)
    _assert_decodes_to(pane.decoded["original"], mean)
    for name in TINY_MODALITIES:
        np.testing.assert_allclose(pane.decoded["perturbed"][name], pane.decoded["original"][name], atol=1e-6)


@pytest.mark.parametrize("which", range(N_PRINCIPAL))
def test_principal_direction_moves_by_sd_units(cohort: Cohort, which: int) -> None:
    state = ExplorerState(cohort)
    pane = PerturbPane(state, CountingDecoder(), direction=which)
    rows = np.arange(40, 120)
    state.select(rows)
    pane.amount = 1.5
    directions, variance = principal_directions(cohort.latent("fused"), k=N_PRINCIPAL)
    np.testing.assert_allclose(pane.unit, directions[which], atol=1e-9)
    assert pane.sd == pytest.approx(np.sqrt(variance[which]), rel=1e-9)
    expected = _mean(cohort, "fused", rows) + 1.5 * np.sqrt(variance[which]) * directions[which]
    np.testing.assert_allclose(pane.latent, expected, atol=1e-9)
    _assert_decodes_to(pane.decoded["perturbed"], expected)
    _assert_decodes_to(pane.decoded["original"], _mean(cohort, "fused", rows))


def test_single_dimension_and_decode_from(cohort: Cohort) -> None:
    state = ExplorerState(cohort, decode_from="ecg")
    pane = PerturbPane(state, CountingDecoder(), direction_type="dimension")
    rows = np.arange(0, 200, 2)
    state.select(rows)
    pane.param.update(direction=6, amount=-2.0)
    block = cohort.latent("ecg").astype(np.float64)
    sd = block[:, 6].std(ddof=1)
    assert pane.sd == pytest.approx(sd, rel=1e-9)
    expected = _mean(cohort, "ecg", rows)
    expected[6] -= 2.0 * sd
    np.testing.assert_allclose(pane.latent, expected, atol=1e-9)
    _assert_decodes_to(pane.decoded["perturbed"], expected)
    # Switching the latent kind re-decodes from that kind's mean.
    state.decode_from = "mri"
    _assert_decodes_to(pane.decoded["original"], _mean(cohort, "mri", rows))
    assert pane.param.direction.bounds == (0, 7)


def test_comparison_to_selection_direction(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = PerturbPane(state, CountingDecoder(), direction_type="group")
    rows = np.arange(0, 60)
    state.select(rows)
    rest = np.setdiff1d(np.arange(N), rows)
    diff = _mean(cohort, "fused", rows) - _mean(cohort, "fused", rest)
    np.testing.assert_allclose(pane.unit, diff / np.linalg.norm(diff), atol=1e-9)
    # Moving the comparison's mean by the gap (in SD) along the direction reaches the selection's.
    gap = np.linalg.norm(diff) / pane.sd
    pane.amount = -gap if abs(gap) <= 4 else -4.0
    np.testing.assert_allclose(pane.latent, _mean(cohort, "fused", rows) + pane.amount * pane.sd * pane.unit, atol=1e-9)
    assert "comparison → selection" in pane._header.object
    # A comparison group under the floor hides the decode.
    state.select(np.arange(N - 4))
    assert pane.decoded == {} and "comparison group" in pane.message and "(4)" in pane.message


def test_plots_receive_both_groups(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = PerturbPane(state, CountingDecoder())
    state.select(np.arange(100))
    pane.amount = 1.0
    pn.panel(pane).get_root()
    assert set(pane._cards.pipes) == set(TINY_MODALITIES)
    for name, pipe in pane._cards.pipes.items():
        assert set(pipe.data) == {"perturbed", "original"}
        np.testing.assert_array_equal(pipe.data["perturbed"], pane.decoded["perturbed"][name])
    pane.amount = 0.0
    for name, pipe in pane._cards.pipes.items():
        np.testing.assert_allclose(pipe.data["perturbed"], pipe.data["original"], atol=1e-6)
