"""The decode pane, driven by the session state: means equal decode(mean latent), empty groups say so."""

from __future__ import annotations


import numpy as np
import panel as pn
import pytest
from bokeh.models import ColumnDataSource

from lse_panel.analysis.decode import decode_group_means
from lse_panel.analysis.sampling import sample_rows
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.schema import SignalModality
from lse_panel.components.decode import MAX_SAMPLES, DecodePane
from lse_panel.components.state import ExplorerState
from lse_panel.testing import TINY_MODALITIES, tiny_cohort, tiny_decoder

N = 300
RESP = SignalModality("resp", ("chest", "abdomen"), n_samples=20, sampling_rate_hz=10.0, units="L")



@pytest.fixture(scope="session")
def cohort() -> Cohort:
    return tiny_cohort(N)


class CountingDecoder:
    """The tiny decoder, counting its calls and the largest batch it was given."""

    def __init__(self, modalities: dict = TINY_MODALITIES) -> None:
        self._decode = tiny_decoder(8, modalities)
        self.calls = 0
        self.largest_batch = 0

    def __call__(self, latents: np.ndarray, kind: str) -> dict[str, np.ndarray]:
        self.calls += 1
        self.largest_batch = max(self.largest_batch, len(latents))
        return self._decode(latents, kind)


def _by_hand(cohort: Cohort, kind: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    mean = cohort.latent(kind)[rows].astype(np.float64).mean(axis=0)
    return {name: values[0] for name, values in tiny_decoder(8)(mean[None].astype(np.float32), kind).items()}


def _rest(n: int, selection: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(n), selection)


def test_empty_selection_shows_a_message_not_an_error(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder())
    assert pane.decoded == {}
    assert "No subjects selected" in pane.message
    assert pane.sample_rows.size == 0
    pn.panel(pane).get_root()


@pytest.mark.parametrize("kind", ["fused", "ecg", "mri"])
def test_means_equal_decode_of_mean_latent(cohort: Cohort, kind: str) -> None:
    state = ExplorerState(cohort, decode_from=kind)
    pane = DecodePane(state, decode=CountingDecoder())
    selection = np.arange(0, N, 7)
    state.select(selection)
    for group, rows in (("selection", selection), ("comparison", _rest(N, selection))):
        expected = _by_hand(cohort, kind, rows)
        assert set(pane.decoded[group]) == set(TINY_MODALITIES)
        for name, values in expected.items():
            np.testing.assert_allclose(pane.decoded[group][name], values, rtol=1e-5, atol=1e-5)
    assert pane.message == ""


def test_comparison_rest_vs_all(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder())
    selection = np.arange(50, 120)
    state.select(selection)
    rest = pane.decoded["comparison"]["mri"]
    state.comparison = "all"
    everyone = pane.decoded["comparison"]["mri"]
    np.testing.assert_allclose(rest, _by_hand(cohort, state.decode_from, _rest(N, selection))["mri"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(everyone, _by_hand(cohort, state.decode_from, np.arange(N))["mri"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(rest, everyone)
    # The selection's mean does not depend on what it is compared with.
    np.testing.assert_allclose(
        pane.decoded["selection"]["ecg"], _by_hand(cohort, state.decode_from, selection)["ecg"], rtol=1e-5, atol=1e-5
    )


def test_every_subject_selected_leaves_rest_empty_with_a_message(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder())
    state.select(np.arange(N))
    assert set(pane.decoded) == {"selection"}
    assert "comparison group is empty" in pane.message
    pn.panel(pane).get_root()
    state.comparison = "all"
    assert set(pane.decoded) == {"selection", "comparison"}
    assert pane.message == ""


def test_decode_from_widget_is_bound_to_the_state(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder())
    state.select(np.arange(10))
    pane._decode_from.value = "ecg"
    assert state.decode_from == "ecg"
    np.testing.assert_allclose(pane.decoded["selection"]["ecg"], _by_hand(cohort, "ecg", np.arange(10))["ecg"], rtol=1e-5, atol=1e-5)


def test_recomputes_only_on_its_inputs_and_sends_small_payloads(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    decoder = CountingDecoder()
    pane = DecodePane(state, decode=decoder)
    state.select(np.arange(0, N, 2))
    calls = decoder.calls
    state.focus_phenotype = "age"
    state.inspected = 3
    assert decoder.calls == calls
    state.comparison = "all"
    assert decoder.calls > calls
    pane._samples.collapsed = False
    # Means and a capped sample only: never a batch the size of the selection.
    assert decoder.largest_batch <= max(2, MAX_SAMPLES)
    for name, pipe in pane._cards.pipes.items():
        assert set(pipe.data) == {"selection", "comparison"}
        for item in pipe.data.values():
            assert item.shape == cohort.modalities[name].shape


def test_plots_receive_the_means(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder())
    root = pn.panel(pane).get_root()
    selection = np.arange(0, 40)
    state.select(selection)
    ecg_lead0 = _by_hand(cohort, state.decode_from, selection)["ecg"][0]
    sources = [m.data for m in root.select({"type": ColumnDataSource})]
    # The grid draws channel 0 in the top-left cell, unshifted, at the start of the group's path.
    n = len(ecg_lead0)
    assert any(
        len(d.get("ecg_value", [])) > n and np.allclose(np.asarray(d["ecg_value"])[:n], ecg_lead0, rtol=1e-5, atol=1e-5)
        for d in sources
    )


def test_sample_shows_at_most_four_subjects_reconstructed(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder())
    selection = np.arange(100, 200)
    state.select(selection)
    assert pane.sample_rows.size == 0  # computed only while the subjects' card is open
    pane._samples.collapsed = False
    rows = pane.sample_rows
    assert len(rows) == MAX_SAMPLES
    assert np.isin(rows, selection).all()
    np.testing.assert_array_equal(rows, sample_rows(selection, MAX_SAMPLES))
    recon = tiny_decoder(8)(cohort.latent(state.decode_from)[rows], state.decode_from)
    for i in range(len(rows)):
        for name, pipe in pane._sample_pipes[i].items():
            np.testing.assert_allclose(pipe.data["reconstruction"], recon[name][i], rtol=1e-5, atol=1e-5)
            assert "original" not in pipe.data  # the tiny cohort has no raw source
    assert "not shown" in pane._sample_note.object
    state.select(selection[:2])
    assert len(pane.sample_rows) == 2
    pane.show_subjects = False
    assert pane.sample_rows.size == 0


def test_originals_come_from_the_raw_source() -> None:
    cohort = tiny_cohort(60)
    decode = tiny_decoder(8)

    class Raw:
        def raw(self, ids: np.ndarray) -> dict[str, np.ndarray]:
            rows = np.searchsorted(cohort.ids, ids)
            return {name: values + 1.0 for name, values in decode(cohort.latent("ecg")[rows], "ecg").items()}

    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder(), raw_source=Raw())
    pane._samples.collapsed = False
    state.select(np.arange(10))
    rows = pane.sample_rows
    expected = decode(cohort.latent("ecg")[rows], "ecg")["ecg"] + 1.0
    np.testing.assert_allclose(pane._sample_pipes[0]["ecg"].data["original"], expected[0], rtol=1e-5)
    assert not pane._sample_note.visible


def test_a_third_signal_modality_is_decoded_and_drawn() -> None:
    cohort = tiny_cohort(80)
    modalities = {**TINY_MODALITIES, "resp": RESP}
    cohort.modalities = modalities
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=CountingDecoder(modalities))
    state.select(np.arange(20))
    assert pane.decoded["selection"]["resp"].shape == RESP.shape
    assert pane._cards.specs["resp"] is RESP
    pn.panel(pane).get_root()
    # A modality the cohort does not declare is drawn by the kind its shape implies.
    cohort.modalities = dict(TINY_MODALITIES)
    other = DecodePane(ExplorerState(cohort, selection=np.arange(12)), decode=CountingDecoder(modalities))
    assert other._cards.specs["resp"].kind == "signal"
    assert other._cards.specs["resp"].channel_names == ("ch0", "ch1")


def test_pure_helpers_agree(cohort: Cohort) -> None:
    block = cohort.latent("mri")
    selection = np.arange(10, 90)
    out = decode_group_means(block, {"a": selection, "empty": np.empty(0, dtype=np.int64)}, tiny_decoder(8), "fused")
    assert set(out) == {"a"}


def test_a_saved_subgroup_as_comparison_decodes_its_mean() -> None:
    from lse_panel.components.subgroups import SubgroupManager

    cohort = tiny_cohort(N)  # its own cohort: in-memory subgroups are shared per cohort object
    state = ExplorerState(cohort)
    manager = SubgroupManager(state)
    members = np.arange(100, 180, 2)
    state.select(members)
    manager.save_selection("evens")
    pane = DecodePane(state, decode=CountingDecoder())
    selection = np.arange(0, 60)
    state.select(selection)
    state.comparison = "evens"
    expected = _by_hand(cohort, state.decode_from, members)
    for name, values in expected.items():
        np.testing.assert_allclose(pane.decoded["comparison"][name], values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        pane.decoded["selection"]["ecg"], _by_hand(cohort, state.decode_from, selection)["ecg"], rtol=1e-5, atol=1e-5
    )
    assert "'evens' (40)" in pane._header.object
    mean = state.groups.mean_latent("comparison", "mri")
    np.testing.assert_allclose(mean, cohort.latent("mri")[members].astype(np.float64).mean(0), rtol=1e-6)


def test_privacy_floor_hides_small_groups_and_says_why(cohort: Cohort) -> None:
    from lse_panel.analysis.privacy import PrivacyPolicy

    decoder = CountingDecoder()
    state = ExplorerState(cohort)
    pane = DecodePane(state, decode=decoder)
    state.select(np.arange(5))
    # Five subjects: nothing of them is decoded, nor the rest (with the cohort's mean it gives theirs away).
    assert pane.decoded == {}
    assert set(pane.hidden) == {"selection", "comparison"}
    assert "fewer than 10 subjects (5)" in pane.message and pane._alert.visible
    assert not pane._means.visible
    state.comparison = "all"  # the whole cohort may be shown; the selection still not
    assert set(pane.decoded) == {"comparison"} and set(pane.hidden) == {"selection"}
    # Every subject but five selected: the selection would give the five away.
    state.comparison = "rest"
    state.select(np.arange(N - 5))
    assert pane.decoded == {} and "fewer than 10 subjects (5)" in pane.message
    # A floor of 1 (or 0) turns it off.
    for floor in (0, 1):
        open_state = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=floor))
        open_pane = DecodePane(open_state, decode=decoder)
        open_state.select(np.arange(5))
        assert set(open_pane.decoded) == {"selection", "comparison"} and open_pane.hidden == {}
