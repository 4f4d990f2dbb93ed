"""The subgroup manager: saved subgroups survive a restart, widgets edit them, errors stay in the pane."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import pytest

from lse_panel.analysis.conditions import parse_condition
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.analysis.privacy import PrivacyError, PrivacyPolicy
from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.bundle_writer import update_bundle, write_bundle
from lse_panel.cohort.rules import FilterStep, IdsStep, SubgroupError
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.components.state import ExplorerState
from lse_panel.components.subgroups import SubgroupManager, selection_rule
from lse_panel.testing import tiny_cohort

N = 300


@pytest.fixture(scope="module")
def source() -> Cohort:
    return tiny_cohort(N)


@pytest.fixture
def bundle(tmp_path: Path, source: Cohort) -> Path:
    path = tmp_path / "bundle"
    write_bundle(path, ids=np.asarray(source.ids), phenotypes=source.phenotypes,
                 phenotype_specs=source.phenotype_specs)  # fmt: skip
    with update_bundle(path) as update:
        for key, coords in source.projections.items():
            latent, method = key.split("/")
            update.add_projection(latent, method, coords)
    return path


@pytest.fixture
def manager() -> SubgroupManager:
    # A fresh in-memory cohort per test: its store starts empty.
    return SubgroupManager(ExplorerState(tiny_cohort(N)))


def _click(button: pn.widgets.Button) -> None:
    button.clicks += 1


def test_saved_selection_survives_a_restart(bundle: Path) -> None:
    state = ExplorerState(open_bundle(bundle))
    manager = SubgroupManager(state)
    state.select(np.arange(20, 120))
    state.filters = {"age": (50.0, None)}
    manager._name.value = "older in region"
    manager._colour.value = "#123456"
    _click(manager._save)
    assert "Saved 'older in region'" in manager.message
    saved = state.selection.copy()
    assert saved.size > 0

    restarted = SubgroupManager(ExplorerState(open_bundle(bundle)))  # new process, same bundle
    assert restarted.names == ["older in region"]
    table = restarted.subgroups
    assert table.loc[0, "n"] == saved.size and table.loc[0, "colour"] == "#123456"
    assert np.array_equal(restarted.store.members("older in region"), saved)
    # The rule (region ids ∩ the age filter) re-applies to the same subjects.
    assert np.array_equal(restarted.store.reapply("older in region"), saved)


def test_selection_rule_without_a_recorded_history(manager: SubgroupManager) -> None:
    state = manager.state
    assert selection_rule(state) == []
    state.filters = {"sex": [0]}
    (step,) = selection_rule(state)
    assert isinstance(step, FilterStep) and step.mode == "new"
    state.select(np.arange(10))
    ids_step, filter_step = selection_rule(state)
    assert isinstance(ids_step, IdsStep) and filter_step.mode == "intersect"
    state.filters = {"sex": [0, 1]}  # keeps every category: no filter
    assert [type(s) for s in selection_rule(state)] == [IdsStep]


def test_rename_recolour_delete_through_the_widgets(manager: SubgroupManager) -> None:
    state = manager.state
    state.select(np.arange(30))
    manager.save_selection("a")
    state.select(np.arange(30, 70))
    manager.save_selection("b")
    assert manager.names == ["a", "b"]
    assert state.param.comparison.objects == ["rest", "all", "a", "b"]

    manager._rows["a"].rename.value = "b"  # taken: refused in the pane, the field reverts
    assert "already exists" in manager.message and manager._status.alert_type == "danger"
    assert manager.names == ["a", "b"] and manager._rows["a"].rename.value == "a"

    _click(manager._rows["a"].compare)
    assert state.comparison == "a"
    manager._rows["a"].show.value = True
    manager._rows["a"].rename.value = "first"
    assert manager.names == ["first", "b"]
    assert state.comparison == "first" and manager.shown == ["first"]
    assert np.array_equal(state.comparison_indices(), np.arange(30))

    manager._rows["first"].colour.value = "#00ff00"
    assert manager.store.get("first").colour == "#00ff00"
    colour, rows = manager.shown_members()["first"]
    assert colour == "#00ff00" and np.array_equal(rows, np.arange(30))

    _click(manager._rows["first"].delete)
    assert manager.names == ["b"] and "first" not in manager.store
    assert state.comparison == "rest" and manager.shown == []
    assert state.param.comparison.objects == ["rest", "all", "b"]
    pn.panel(manager).get_root()


def test_select_loads_members_and_clears_filters(manager: SubgroupManager) -> None:
    state = manager.state
    state.select(np.arange(5, 50))
    manager.save_selection("g")
    state.clear()
    state.filters = {"age": (None, 40.0)}
    _click(manager._rows["g"].select)
    assert np.array_equal(state.selection, np.arange(5, 50)) and state.filters == {}


def test_condition_valid_and_invalid(manager: SubgroupManager) -> None:
    cohort = manager.state.cohort
    manager._condition.value = 'age >= 60 and sex == "femal"'
    feedback = manager._condition_feedback.object
    assert "line 1, column 22" in feedback and "^" in feedback
    manager._name.value = "older women"
    _click(manager._save_condition)  # shown in the pane, never raised
    assert manager.names == [] and manager._status.alert_type == "danger"

    manager._condition.value = "age >= 60 and __import__('os')"
    assert "line 1" in manager._condition_feedback.object

    text = 'age >= 60 and sex == "female"'
    manager._condition.value = text
    expected = np.flatnonzero(evaluate(parse_condition(text, cohort.phenotype_specs), cohort.phenotype_columns, cohort.phenotype_specs))
    assert manager._condition_feedback.object == f"✓ {expected.size:,} subjects match"
    _click(manager._save_condition)
    assert manager.names == ["older women"]
    assert np.array_equal(manager.store.members("older women"), expected)
    assert manager.store.get("older women").rule[0].text == text


def test_refusals_are_messages(manager: SubgroupManager) -> None:
    manager._name.value = "nothing"
    _click(manager._save)
    assert "nothing is selected" in manager.message
    manager.state.select(np.arange(10))
    manager._name.value = "Rest"
    _click(manager._save)
    assert "reserved" in manager.message and manager.names == []
    with pytest.raises(SubgroupError):
        manager.save_selection("all")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips(manager: SubgroupManager, fmt: str) -> None:
    state = manager.state
    state.select(np.arange(40, 90))
    manager.save_selection("export me")
    manager.export_format = fmt
    download = manager._rows["export me"].download
    assert download.filename == f"export-me.{fmt}"
    data = download.callback().getvalue()
    table = pd.read_csv(io.BytesIO(data)) if fmt == "csv" else pd.read_parquet(io.BytesIO(data))
    cohort = state.cohort
    assert table["id"].tolist() == np.asarray(cohort.ids)[40:90].tolist()
    assert list(table.columns) == ["id", *cohort.phenotype_specs]
    assert np.allclose(table["age"], cohort.phenotype("age")[40:90])
    labels = np.asarray(cohort.phenotype_specs["sex"].categories)[cohort.phenotype("sex")[40:90]]
    assert table["sex"].astype(str).tolist() == labels.tolist()


def test_export_off_when_individual_views_are_off() -> None:
    state = ExplorerState(tiny_cohort(N), policy=PrivacyPolicy(individual_views=False))
    manager = SubgroupManager(state)
    state.select(np.arange(20))
    manager.save_selection("private")
    assert manager._rows["private"].download is None
    assert manager._export_note.visible and "switched off" in manager._export_note.object
    with pytest.raises(PrivacyError):
        manager.export_bytes("private")


def test_another_session_sees_changes_after_refresh(bundle: Path) -> None:
    first = SubgroupManager(ExplorerState(open_bundle(bundle)))
    second = SubgroupManager(ExplorerState(open_bundle(bundle)))
    first.state.select(np.arange(12))
    first.save_selection("shared")
    assert second.names == []
    _click(second._refresh)
    assert second.names == ["shared"] and "shared" in second.state.param.comparison.objects
    assert isinstance(second.store, SubgroupStore)
