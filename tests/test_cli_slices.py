"""`lse slices`: finds a planted failure in a bundle, prints a table, writes the file, refuses bad arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lse_panel.analysis.conditions import parse_condition
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.cli import main
from lse_panel.cohort.bundle_writer import update_bundle, write_bundle
from lse_panel.testing import tiny_cohort

RULE = 'age >= 70 and sex == "female"'


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose ECG-latent predictions of LVEF are corrupted where RULE holds."""
    cohort = tiny_cohort(6_000, seed=3)
    path = tmp_path_factory.mktemp("slices") / "b"
    write_bundle(path, ids=cohort.ids, phenotypes=cohort.phenotypes, phenotype_specs=cohort.phenotype_specs)
    planted = evaluate(parse_condition(RULE, cohort.phenotype_specs), cohort.phenotype_columns, cohort.phenotype_specs)
    with update_bundle(path) as update:
        for kind, per in cohort.predictions.items():
            for name, values in per.items():
                values = values.copy()
                if kind == "ecg" and name == "lvef":
                    values[planted] += np.random.default_rng(0).normal(0, 15, planted.sum()).astype(np.float32)
                update.add_prediction(kind, name, values, task=cohort.prediction_tasks()[name])
        for key, coords in cohort.projections.items():
            update.add_projection(*key.split("/"), coords)
    return path


def test_slices_prints_and_writes_the_planted_failure(bundle: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "found.csv"
    assert main(["slices", str(bundle), "--target", "lvef", "--latent", "all", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert RULE in printed and "slices tried (ecg:" in printed and "r2 mri" in printed
    table = pd.read_csv(out)
    ecg = table[table["latent"] == "ecg"].iloc[0]
    assert ecg["rule"] == RULE and ecg["rank"] == 1 and bool(ecg["significant"])
    assert {"mae_ecg", "mae_mri", "mae_fused", "q_value", "gap_ci_low", "n_tried"} <= set(table.columns)


def test_slices_with_three_conditions_and_parquet(bundle: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "found.parquet"
    args = ["slices", str(bundle), "--target", "lvef", "--latent", "ecg", "--max-conditions", "3", "--top", "3",
            "--no-regions", "--bins", "age=60,70:years", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_parquet(out)
    assert len(table) <= 3 and table.iloc[0]["rule"] == RULE
    assert (table["kind"] == "phenotype").all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "lvfe"], "unknown target 'lvfe'. Did you mean 'lvef'"),
        (["--target", "lvef", "--latent", "ekg"], "latent kind 'ekg'"),
        (["--target", "lvef", "--fdr", "1.5"], "--fdr: '1.5' is not a number strictly between 0 and 1"),
        (["--target", "lvef", "--top", "0"], "--top: '0' is out of range"),
        (["--target", "lvef", "--out", "x.xlsx"], "--out: 'x.xlsx' has suffix '.xlsx'; name a .csv or .parquet file"),
        (["--target", "lvef", "--bins", "age=old"], "--bins 'age=old'"),
    ],
)
def test_slices_refuses_bad_arguments(bundle: Path, extra: list[str], message: str, capsys) -> None:
    assert main(["slices", str(bundle), *extra]) == 2
    assert message in capsys.readouterr().err


def test_slices_refuses_a_bundle_without_predictions(tmp_path: Path, capsys) -> None:
    cohort = tiny_cohort(200)
    write_bundle(tmp_path / "b", ids=cohort.ids, phenotypes=cohort.phenotypes, phenotype_specs=cohort.phenotype_specs)
    assert main(["slices", str(tmp_path / "b"), "--target", "lvef"]) == 2
    assert "no cross-fitted predictions" in capsys.readouterr().err


def test_help_lists_slices_with_real_defaults(capsys) -> None:
    assert main(["slices", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--target" in out and "default: 0.05" in out and "default: 20" in out
