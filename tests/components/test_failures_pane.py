"""The failures pane: a planted failure is found first, a click selects exactly it, its rule saves, the floor holds, names stay text."""

from __future__ import annotations

import numpy as np
import panel as pn
import pytest

from lse_panel.analysis.conditions import parse_condition
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort import derived
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import FilterStep, LassoStep
from lse_panel.cohort.schema import PhenotypeSpec
from lse_panel.cohort.slices import find_failures, slice_members
from lse_panel.components.explorer import Explorer
from lse_panel.components.failures import FailuresPane
from lse_panel.components.state import ExplorerState
from lse_panel.testing import tiny_cohort, tiny_decoder

RULE = 'age >= 70 and sex == "female"'


def _planted(cohort: Cohort, rule: str = RULE, *, latent: str = "ecg", target: str = "lvef") -> np.ndarray:
    """Corrupt ``latent``'s predictions of ``target`` where ``rule`` holds; returns those subjects' mask."""
    planted = evaluate(parse_condition(rule, cohort.phenotype_specs), cohort.phenotype_columns, cohort.phenotype_specs)
    pred = cohort.predictions[latent][target].copy()
    pred[planted] += np.random.default_rng(0).normal(0, 15, planted.sum()).astype(np.float32)
    cohort.predictions[latent] = {**cohort.predictions[latent], target: pred}
    return planted


def _pane(cohort: Cohort, *, floor: int = 10, **params) -> FailuresPane:
    state = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=floor))
    params = {"target": "lvef", "latent": "ecg", "regions": False, **params}
    return FailuresPane(state, **params)


def _click(button: pn.widgets.Button) -> None:
    button.clicks += 1


def test_search_finds_the_planted_slice_and_a_click_selects_exactly_its_members() -> None:
    cohort = tiny_cohort(6_000, seed=3)
    planted = _planted(cohort)
    pane = _pane(cohort)
    _click(pane._search)
    assert not pane.searching and pane.slices is not None
    top = pane.slices.iloc[0]
    assert top["rule"] == RULE and top["latent"] == "ecg"
    shown = pane._table.value
    assert shown.iloc[0]["slice"] == RULE and shown.iloc[0]["n"] == planted.sum()
    # The table reports the slices tried and the other latent kinds' MAE side by side.
    assert shown.iloc[0]["tried"] == sum(pane.slices.attrs["tried"]["ecg"].values()) > 100
    assert shown.iloc[0]["MAE · ecg"] > 2 * shown.iloc[0]["MAE · mri"]
    assert "slices tried: ecg" in pane.message

    pane._table.selection = [0]  # what a click on the first row of the table does
    np.testing.assert_array_equal(pane.state.selection, np.flatnonzero(planted))
    np.testing.assert_array_equal(pane.state.selection, np.flatnonzero(slice_members(cohort, top)))
    assert pane.chosen == 0 and pane.outlined == ""
    per_latent = pane._per_latent.object
    assert list(per_latent.index) == ["ecg", "mri", "fused"]
    assert per_latent.loc["ecg", "MAE in slice"] > 2 * per_latent.loc["mri", "MAE in slice"]

    pane._name.value = "lvef failure"
    _click(pane._save)
    store = pane.state.store
    assert store.names() == ["lvef failure"]
    (step,) = store.get("lvef failure").rule
    assert isinstance(step, FilterStep) and step.text == RULE
    np.testing.assert_array_equal(store.reapply("lvef failure"), np.flatnonzero(planted))


def test_a_phenotype_filter_does_not_narrow_the_chosen_slice() -> None:
    cohort = tiny_cohort(6_000, seed=3)
    planted = _planted(cohort)
    pane = _pane(cohort)
    pane.state.filters = {"lv_mass": (100.0, 140.0)}
    pane.search()
    pane.choose(0)
    assert pane.state.filters == {}
    np.testing.assert_array_equal(pane.state.selection, np.flatnonzero(planted))


def test_selecting_elsewhere_lets_the_chosen_slice_go() -> None:
    cohort = tiny_cohort(6_000, seed=3)
    planted = _planted(cohort)
    pane = _pane(cohort)
    pane.search()
    pane.choose(0)
    pane.state.select(np.arange(100))
    assert pane.chosen is None and pane._table.selection == [] and pane._save.disabled
    _click(pane._save)  # nothing chosen: said in the pane, nothing saved, nothing raised
    assert "no slice is chosen" in pane._save_status.object and pane.state.store.names() == []
    pane.choose(0)
    group = pane.save("planted")
    assert group.n == planted.sum() and pane.chosen == 0


def test_subgroup_names_are_validated_as_everywhere() -> None:
    cohort = tiny_cohort(6_000, seed=3)
    _planted(cohort)
    pane = _pane(cohort)
    pane.search()
    pane.choose(0)
    for name, said in [("rest", "reserved"), ("a/b", "path separator"), ("", "needs a name")]:
        pane._name.value = name
        _click(pane._save)
        assert said in pane._save_status.object
    assert pane.state.store.names() == []


def test_region_slice_selects_its_polygon_and_is_outlined_on_its_own_map() -> None:
    cohort = tiny_cohort(6_000, seed=3)
    coords = cohort.projection("ecg/pca")
    distance = np.hypot(*(coords - coords[0]).T)
    planted = distance < np.quantile(distance, 0.05)
    pred = cohort.predictions["ecg"]["lvef"].copy()
    pred[planted] += 25
    cohort.predictions["ecg"] = {**cohort.predictions["ecg"], "lvef": pred}
    explorer = Explorer(cohort, tiny_decoder(8), min_group_size=10)
    pane = explorer.failures_pane
    pane.param.update(target="lvef", latent="ecg", regions=True)
    pane.search()
    regions = np.flatnonzero(pane.slices["kind"].to_numpy() == "region")
    index = int(regions[0])
    row = pane.slices.iloc[index]
    assert row["projection"] == "ecg/pca" and explorer.latent_view.method == "umap"
    pane.choose(index)
    members = slice_members(cohort, row)
    np.testing.assert_array_equal(explorer.state.selection, np.flatnonzero(members))
    assert (members & planted).sum() / (members | planted).sum() > 0.5
    # The pair switches to the region's projection, where the ECG view now outlines the polygon.
    assert pane.outlined == "ecg/pca" and explorer.latent_view.method == "pca"
    outline = pane._outline_pipes["ecg/pca"][-1].data
    assert outline["xs"] == row["polygon_x"] and outline["ys"] == row["polygon_y"]
    assert all(p.data is None for key, pipes in pane._outline_pipes.items() if key != "ecg/pca" for p in pipes)
    # Saved, the rule is the lasso on that map, and re-applies to the same subjects.
    explorer.failures_pane.save("ecg region")
    (step,) = explorer.store.get("ecg region").rule
    assert isinstance(step, LassoStep) and step.projection == "ecg/pca"
    np.testing.assert_array_equal(explorer.store.reapply("ecg region"), explorer.state.selection)
    pane.state.clear()
    assert pane.outlined == "" and pane._outline_pipes["ecg/pca"][-1].data is None


def test_no_slice_below_the_privacy_floor_is_listed() -> None:
    cohort = tiny_cohort(6_000, seed=3)
    planted = _planted(cohort)
    floor = int(planted.sum()) + 100
    pane = _pane(cohort, floor=floor, latent="all", regions=True)
    pane.search()
    assert RULE not in set(pane.slices["rule"])
    assert (pane.slices["n"] >= floor).all() and (pane.slices["n_rest"] >= floor).all()
    unfloored = find_failures(cohort, "lvef", latent="ecg", projections=None, policy=PrivacyPolicy(min_group_size=10))
    assert unfloored.iloc[0]["rule"] == RULE  # the same search without the floor would list it


def test_a_search_runs_once_per_process_for_every_session(monkeypatch) -> None:
    cohort = tiny_cohort(3_000, seed=3)
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs["latent"])
        return find_failures(*args, **kwargs)

    monkeypatch.setattr(derived, "find_failures", counted)
    first = _pane(cohort, latent="all").search()
    assert sorted(calls) == ["ecg", "fused", "mri"]
    second = _pane(cohort, latent="mri").search()  # another session, one of the same kinds
    assert sorted(calls) == ["ecg", "fused", "mri"]
    assert second.equals(first[first["latent"] == "mri"].reset_index(drop=True))
    _pane(cohort, latent="mri", fdr=0.1).search()  # other options: searched again
    assert len(calls) == 4


def _hostile_cohort(n: int = 6_000) -> tuple[Cohort, str, str]:
    """tiny_cohort with a phenotype, its categories and a latent kind named as an attacker would."""
    base = tiny_cohort(n, seed=3)
    name, kind = '<img src=x onerror="alert(1)">', "<b onmouseover=alert(2)>"
    phenotype = {"sex": name}
    latent = {"ecg": kind}
    specs = {
        phenotype.get(k, k): PhenotypeSpec(name, "categorical", "", "", ("<script>alert(3)</script>", "male"))
        if k == "sex" else spec
        for k, spec in base.phenotype_specs.items()
    }  # fmt: skip
    projections = {}
    for key in base.projections:
        k, _, method = key.partition("/")
        projections[f"{latent.get(k, k)}/{method}"] = base.projection(key)
    cohort = Cohort(
        ids=base.ids, phenotypes={phenotype.get(k, k): v for k, v in base.phenotype_columns.items()},
        phenotype_specs=specs,
        latents={latent.get(k, k): base.latent(k) for k in base.latents}, projections=projections,
        predictions={latent.get(k, k): {phenotype.get(p, p): v for p, v in per.items()} for k, per in base.predictions.items()},
    )  # fmt: skip
    return cohort, name, kind


def test_hostile_phenotype_and_latent_names_reach_the_page_as_text() -> None:
    cohort, name, kind = _hostile_cohort()
    rule = f"age >= 70 and `{name}` == " + '"<script>alert(3)</script>"'
    planted = _planted(cohort, rule, latent=kind)
    pane = _pane(cohort, latent=kind)
    pane.search()
    assert pane.slices.iloc[0]["rule"] == rule
    pane.choose(0)
    np.testing.assert_array_equal(pane.state.selection, np.flatnonzero(planted))
    pane._name.value = "x/y"  # an error message quoting the name
    _click(pane._save)

    hostile = ("<img", "<script", "<b on")
    markup = (pn.pane.HTML, pn.pane.Markdown)
    for obj in pane._layout.select(lambda o: isinstance(o, markup) and not isinstance(o, pn.pane.DataFrame)):
        text = str(obj.object or "")
        assert not any(h in text for h in hostile), text
    assert pane._per_latent.escape and kind in list(pane._per_latent.object.index)
    # What the browser receives: every text column through Tabulator's escaping 'plaintext'
    # formatter, and titles (rendered as HTML by Tabulator) escaped.
    model = pane._table.get_root()
    config = {c["field"]: c for c in model.configuration["columns"]}
    assert rule in set(pane._table.value["slice"])
    for column in ("slice", "latent", "kind", "gap [interval]", "q"):
        assert config[column]["formatter"] == "plaintext"
    titles = [c.title for c in model.columns]
    assert not any("<" in t for t in titles) and any("&lt;b onmouseover" in t for t in titles)


def test_explorer_has_the_tab_only_with_predictions() -> None:
    explorer = Explorer(tiny_cohort(500), tiny_decoder(8))
    assert isinstance(explorer.failures_pane, FailuresPane)
    tabs = explorer.main_panes()[-1]
    assert "Failures" in tabs._names and hasattr(explorer.failures_pane, "scheduler")
    bare = tiny_cohort(500)
    bare.predictions = {}
    explorer = Explorer(bare, tiny_decoder(8))
    assert explorer.failures_pane is None and "Failures" not in explorer.main_panes()[-1]._names
    with pytest.raises(ValueError, match="no cross-fitted predictions"):
        FailuresPane(ExplorerState(bare))
