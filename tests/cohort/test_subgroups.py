"""Saved subgroups: persistence across restarts, atomic writes, id mapping, re-applied rules, export."""

from __future__ import annotations

from typing import Callable

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lse_panel.analysis.conditions import ConditionError
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.analysis.privacy import PrivacyError, PrivacyPolicy
from lse_panel.cohort import subgroups as subgroups_module
from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.bundle_writer import update_bundle, write_bundle
from lse_panel.cohort.rules import (
    FilterStep,
    IdsStep,
    LassoStep,
    SubgroupError,
    UnknownSubgroupError,
    apply_rule,
)
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.palette import SUBGROUP_COLOURS
from lse_panel.testing import tiny_cohort

N = 400


def _write(path: Path, cohort: Cohort, *, order: np.ndarray | None = None) -> Path:
    """Write ``cohort`` as a bundle (rows permuted by ``order`` if given) with its projections."""
    order = np.arange(cohort.n_subjects) if order is None else order
    write_bundle(
        path,
        ids=np.asarray(cohort.ids)[order],
        phenotypes=cohort.phenotypes.iloc[order].reset_index(drop=True),
        phenotype_specs=cohort.phenotype_specs,
    )
    with update_bundle(path) as update:
        for key, coords in cohort.projections.items():
            latent, method = key.split("/")
            update.add_projection(latent, method, coords[order])
    return path


@pytest.fixture
def bundle(tmp_path: Path, source: Cohort) -> Path:
    return _write(tmp_path / "bundle", source)


# ----------------------------------------------------------------------------- persistence


def test_save_then_restart_lists_the_same_members(bundle: Path, draw_lasso: Callable[[Cohort], LassoStep]) -> None:
    cohort = open_bundle(bundle)
    store = SubgroupStore(cohort)
    rule = [draw_lasso(cohort), FilterStep(ranges={"age": (55, None), "sex": [0]}, mode="intersect")]
    indices = apply_rule(rule, cohort)
    assert 0 < indices.size < N
    saved = store.save("Older women, left", indices, rule)
    assert saved.colour == SUBGROUP_COLOURS[0]
    store.save("everyone", np.ones(N, dtype=bool), colour="#ABC")

    restarted = SubgroupStore(open_bundle(bundle))  # a new process: nothing shared but the disk
    assert restarted.names() == ["Older women, left", "everyone"]
    group = restarted.get("Older women, left")
    np.testing.assert_array_equal(restarted.members("Older women, left"), indices)
    np.testing.assert_array_equal(group.ids, cohort.ids[indices])
    assert group.n == indices.size and group.colour == saved.colour
    assert group.created == saved.created
    # The rule comes back equal, with the category code stored as its label.
    assert group.rule[0] == rule[0]
    assert group.rule[1].ranges == {"age": (55, None), "sex": ("female",)}
    np.testing.assert_array_equal(restarted.reapply("Older women, left"), indices)
    assert restarted.get("everyone").colour == "#aabbcc"
    assert [s.name for s in restarted.list()] == ["Older women, left", "everyone"]
    assert "EVERYONE" in restarted and len(restarted) == 2


def test_layout_keeps_members_out_of_the_json(bundle: Path) -> None:
    cohort = open_bundle(bundle)
    SubgroupStore(cohort).save("half", np.arange(0, N, 2))
    data = json.loads((bundle / "subgroups.json").read_text())
    assert data["version"] == 1
    (entry,) = data["subgroups"]
    assert entry["n"] == N // 2 and entry["rule"] == []
    for relative in entry["files"].values():
        assert relative.startswith("subgroups/") and relative.endswith(".npy")
        assert (bundle / relative).exists()
    np.testing.assert_array_equal(np.load(bundle / entry["files"]["rows"]), np.arange(0, N, 2))
    np.testing.assert_array_equal(np.load(bundle / entry["files"]["ids"]), cohort.ids[::2])
    # The bundle itself still opens: subgroups do not touch the manifest.
    open_bundle(bundle)


def test_rename_recolour_delete_persist(bundle: Path) -> None:
    store = SubgroupStore(open_bundle(bundle))
    store.save("a", [1, 2, 3])
    store.save("b", [4, 5])
    store.save("c", [6])
    store.rename("a", "alpha")
    store.recolour("b", "#00ff00")
    store.delete("c")
    restarted = SubgroupStore(open_bundle(bundle))
    assert restarted.names() == ["alpha", "b"]
    np.testing.assert_array_equal(restarted.members("alpha"), [1, 2, 3])
    assert restarted.get("b").colour == "#00ff00"
    # The deleted subgroup's files stay while the backup generation names them, and go with it.
    assert len(list((bundle / "subgroups").iterdir())) == 6
    # Renaming to a different case of the same name is allowed.
    restarted.rename("alpha", "Alpha")
    assert SubgroupStore(open_bundle(bundle)).names() == ["Alpha", "b"]
    assert len(list((bundle / "subgroups").iterdir())) == 4


def test_names_and_colours_are_validated(bundle: Path) -> None:
    store = SubgroupStore(open_bundle(bundle))
    store.save("LVH", [1])
    for bad, why in [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 81, "at most 80"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("tab\there", "control character"),
    ]:
        with pytest.raises(SubgroupError, match=why):
            store.save(bad, [1])
    store.save("y" * 80, [1])
    with pytest.raises(SubgroupError, match="already exists"):
        store.save("lvh", [2])
    store.save("lvh", [2], overwrite=True)
    np.testing.assert_array_equal(store.members("LVH"), [2])
    with pytest.raises(SubgroupError, match="already exists"):
        store.rename("LVH", "y" * 80)
    with pytest.raises(SubgroupError, match="hex colour"):
        store.recolour("LVH", "red")
    with pytest.raises(SubgroupError, match="indices must lie"):
        store.save("out of range", [N])
    with pytest.raises(SubgroupError, match="mode"):
        store.save("bad rule", [1], [{"mode": "xor", "ids": [1]}])


@pytest.mark.parametrize("method", ["get", "members", "delete", "recolour", "rename", "export"])
def test_unknown_names_are_clear_errors(bundle: Path, tmp_path: Path, method: str) -> None:
    store = SubgroupStore(open_bundle(bundle))
    store.save("known", [1])
    args = {"recolour": ("#000000",), "rename": ("new",), "export": (tmp_path / "x.csv",)}.get(method, ())
    with pytest.raises(UnknownSubgroupError) as info:
        getattr(store, method)("unknown", *args)
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "no subgroup called 'unknown'; saved subgroups: 'known'."


def test_a_crash_mid_save_leaves_the_previous_list_intact(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SubgroupStore(open_bundle(bundle))
    store.save("kept", [1, 2, 3])
    before = (bundle / "subgroups.json").read_bytes()
    real_replace = os.replace

    def crash(src, dst, *args, **kwargs):
        if Path(dst).name == "subgroups.json":
            raise OSError("simulated power cut")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash)
    for action in (
        lambda: store.save("lost", [4, 5]),
        lambda: store.save("kept", [9], overwrite=True),
        lambda: store.delete("kept"),
        lambda: store.rename("kept", "other"),
    ):
        # A clear error, not an OSError escaping into the page, and no temporary file left behind.
        with pytest.raises(SubgroupError, match="power cut.*nothing was changed"):
            action()
        assert not [p for p in bundle.rglob("*.tmp")]
    monkeypatch.undo()

    assert (bundle / "subgroups.json").read_bytes() == before
    restarted = SubgroupStore(open_bundle(bundle))
    assert restarted.names() == ["kept"]
    np.testing.assert_array_equal(restarted.members("kept"), [1, 2, 3])
    # The crashed saves left member files behind; the next change removes them.
    orphans = len(list((bundle / "subgroups").iterdir()))
    assert orphans > 2
    restarted.save("next", [7])
    assert len(list((bundle / "subgroups").iterdir())) == 4


def test_a_corrupt_list_is_reported_with_the_file(bundle: Path) -> None:
    (bundle / "subgroups.json").write_text("{not json")
    with pytest.raises(SubgroupError, match="subgroups.json: not valid JSON"):
        SubgroupStore(open_bundle(bundle)).list()


# ----------------------------------------------------------------------------- members and rules


def test_members_follow_ids_into_a_rebuilt_bundle(tmp_path: Path, source: Cohort, bundle: Path) -> None:
    store = SubgroupStore(open_bundle(bundle))
    chosen = np.array([3, 50, 51, 200, 399])
    store.save("five", chosen)
    # The same subjects, shuffled, in a new bundle that receives the subgroup files.
    order = np.random.default_rng(1).permutation(N)
    rebuilt_path = _write(tmp_path / "rebuilt", source, order=order)
    shutil.copy(bundle / "subgroups.json", rebuilt_path / "subgroups.json")
    shutil.copytree(bundle / "subgroups", rebuilt_path / "subgroups")
    rebuilt = open_bundle(rebuilt_path)
    members = SubgroupStore(rebuilt).members("five")
    np.testing.assert_array_equal(np.sort(rebuilt.ids[members]), source.ids[chosen])
    np.testing.assert_array_equal(members, np.sort(np.argsort(order)[chosen]))
    # Or without copying anything: look the ids up in another cohort.
    np.testing.assert_array_equal(store.members("five", cohort=rebuilt), members)
    # Subjects the other cohort lacks are dropped, or reported.
    smaller = Cohort.from_arrays(source.ids[:100], source.phenotypes.iloc[:100], source.phenotype_specs)
    np.testing.assert_array_equal(store.members("five", cohort=smaller), [3, 50, 51])
    with pytest.raises(SubgroupError, match="2 of its 5 subjects are not in this cohort"):
        store.members("five", cohort=smaller, missing="raise")


def test_rule_reapplied_to_a_reprojected_bundle_gives_the_same_members(bundle: Path, draw_lasso: Callable[[Cohort], LassoStep]) -> None:
    cohort = open_bundle(bundle)
    store = SubgroupStore(cohort)
    lasso = draw_lasso(cohort)
    rule = [lasso, FilterStep(condition=None, ranges={"lvef": (55, None)}, mode="intersect")]
    indices = apply_rule(rule, cohort)
    store.save("rule", indices, rule)

    # Re-project: the same subjects, every UMAP coordinate rotated by 30° about an off-centre point.
    theta = np.deg2rad(30.0)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = np.array([1.5, -2.0])

    def rotate(xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) - centre) @ rotation.T + centre

    with update_bundle(bundle) as update:
        update.add_projection("fused", "umap", rotate(cohort.projection("fused/umap")).astype(np.float32))
    reprojected = open_bundle(bundle)
    assert not np.allclose(reprojected.projection("fused/umap"), cohort.projection("fused/umap"))

    # The stored rule on the new coordinates lands elsewhere ...
    stored = SubgroupStore(reprojected).get("rule")
    moved = apply_rule(stored.rule, reprojected)
    assert not np.array_equal(moved, indices)
    # ... while the members, looked up by id, are the same subjects.
    np.testing.assert_array_equal(SubgroupStore(reprojected).members("rule"), indices)
    # The same rule with its polygon rotated like the data selects exactly the same subjects.
    polygon = rotate(np.column_stack([lasso.xs, lasso.ys]))
    rotated_rule = [LassoStep("fused/umap", polygon[:, 0], polygon[:, 1]), stored.rule[1]]
    np.testing.assert_array_equal(apply_rule(rotated_rule, reprojected), indices)


def test_large_id_steps_are_stored_beside_the_json(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subgroups_module, "INLINE_IDS", 10)
    cohort = open_bundle(bundle)
    step = IdsStep(cohort.ids[::3])
    SubgroupStore(cohort).save("pasted", apply_rule([step], cohort), [step])
    (entry,) = json.loads((bundle / "subgroups.json").read_text())["subgroups"]
    assert "ids_file" in entry["rule"][0] and "ids" not in entry["rule"][0]
    restored = SubgroupStore(open_bundle(bundle)).get("pasted")
    assert restored.rule == (step,)
    np.testing.assert_array_equal(SubgroupStore(cohort).members("pasted"), np.arange(0, N, 3))


def test_save_condition(bundle: Path) -> None:
    cohort = open_bundle(bundle)
    store = SubgroupStore(cohort)
    text = 'age >= 60 and sex == "female"'
    group = store.save_condition("older women", text, colour="#123456")
    expected = np.flatnonzero(evaluate(text, cohort.phenotype_columns, cohort.phenotype_specs))
    np.testing.assert_array_equal(store.members("older women"), expected)
    (step,) = SubgroupStore(open_bundle(bundle)).get("older women").rule
    assert isinstance(step, FilterStep) and step.text == text and step.condition["kind"] == "and"
    np.testing.assert_array_equal(apply_rule(group.rule, cohort), expected)
    with pytest.raises(ConditionError, match="unknown phenotype"):
        store.save_condition("bad", "agee > 1")
    assert store.names() == ["older women"]


# ----------------------------------------------------------------------------- export and memory


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trip(bundle: Path, tmp_path: Path, suffix: str) -> None:
    cohort = open_bundle(bundle)
    store = SubgroupStore(cohort)
    members = np.array([0, 9, 17, 100, 250])
    store.save("five", members)
    out = store.export("five", tmp_path / "out" / f"five{suffix}")
    back = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(back.columns) == ["id", *cohort.phenotype_specs]
    np.testing.assert_array_equal(back["id"], cohort.ids[members])
    for name, spec in cohort.phenotype_specs.items():
        values = np.asarray(cohort.phenotype(name))[members]
        if spec.type == "continuous":
            np.testing.assert_array_equal(back[name].to_numpy(np.float32), values)
        else:
            assert back[name].tolist() == [spec.categories[c] for c in values]
    only = pd.read_csv(store.export("five", tmp_path / "only.csv", phenotypes=["age"]))
    assert list(only.columns) == ["id", "age"]
    with pytest.raises(SubgroupError, match=".csv or .parquet"):
        store.export("five", tmp_path / "five.xlsx")
    with pytest.raises(PrivacyError, match="individual-level"):
        store.export("five", tmp_path / "no.csv", policy=PrivacyPolicy(individual_views=False))
    assert not (tmp_path / "no.csv").exists()


def test_in_memory_cohort_keeps_subgroups_in_memory(tmp_path: Path) -> None:
    cohort = tiny_cohort(100)
    assert cohort.path is None
    store = SubgroupStore(cohort)
    store.save("a", [1, 2], [{"mode": "new", "ids": cohort.ids[[1, 2]].tolist()}])
    # Another store on the same cohort object (another session) sees it; another cohort does not.
    assert SubgroupStore(cohort).names() == ["a"]
    assert SubgroupStore(tiny_cohort(100)).names() == []
    store.rename("a", "b")
    store.recolour("b", "#010203")
    np.testing.assert_array_equal(SubgroupStore(cohort).members("b"), [1, 2])
    assert SubgroupStore(cohort).get("b").colour == "#010203"
    store.export("b", tmp_path / "b.csv")
    store.delete("b")
    assert len(SubgroupStore(cohort)) == 0
