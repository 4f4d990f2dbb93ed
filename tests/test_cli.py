"""The `lse` command line: sub-commands, the serve command it builds, clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lse_panel.cli import build_parser, main
from lse_panel.cohort.bundle import open_bundle
from lse_panel.serve import serve_command
from lse_panel.testing import free_port


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "lse_panel.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("synth", "train", "embed", "build", "serve", "subgroups", "bench"):
        assert command in out


def test_serve_binds_loopback_and_warms_up(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", str(tmp_path), "--port", "5099"])
    command = serve_command(args)
    assert command[command.index("--address") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5099"
    assert command[command.index("--setup") + 1].endswith("apps/setup.py")
    assert command[-1] == str(tmp_path.resolve())


def test_serve_refuses_missing_bundle(tmp_path: Path, capsys) -> None:
    assert main(["serve", str(tmp_path / "none")]) == 2
    assert "lse build" in capsys.readouterr().err


def test_synth_writes_a_loadable_bundle(tmp_path: Path) -> None:
    assert main(["synth", "--subjects", "500", "--seed", "1", "--out", str(tmp_path / "b")]) == 0
    cohort = open_bundle(tmp_path / "b")
    assert cohort.n_subjects == 500
    assert {m.kind for m in cohort.modalities.values()} == {"signal", "image_sequence"}
    assert cohort.manifest["raw"]["seed"] == 1


def test_synth_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--subjects", "50", "--out", str(tmp_path / "b")]) == 0
    assert main(["synth", "--subjects", "50", "--out", str(tmp_path / "b")]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("subjects", ["0", "-5"])
def test_synth_rejects_bad_sizes(tmp_path: Path, subjects: str, capsys) -> None:
    assert main(["synth", "--subjects", subjects, "--out", str(tmp_path / "b")]) == 2
    assert "between 1 and" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_subgroups_list_and_export(tmp_path: Path, capsys) -> None:
    import pandas as pd

    from lse_panel.cohort.subgroups import SubgroupStore

    assert main(["synth", "--subjects", "300", "--out", str(tmp_path / "b")]) == 0
    SubgroupStore(open_bundle(tmp_path / "b")).save_condition("older", "age >= 60")
    capsys.readouterr()
    assert main(["subgroups", "list", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.startswith("older\t")
    out = tmp_path / "older.csv"
    assert main(["subgroups", "export", str(tmp_path / "b"), "older", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert (table["age"] >= 60).all() and len(table) == SubgroupStore(open_bundle(tmp_path / "b")).get("older").n
    assert main(["subgroups", "export", str(tmp_path / "b"), "nobody", "--out", str(out)]) == 2
    assert "nobody" in capsys.readouterr().err


def test_serve_builds_to_servable_then_finishes_in_the_background(tmp_path: Path, monkeypatch) -> None:
    import lse_panel.build
    import lse_panel.cli as cli
    from lse_panel.build import synthesise_bundle
    from lse_panel.cohort.bundle_writer import update_bundle

    bundle = tmp_path / "demo"
    calls: dict = {"started": []}

    def fake_build(out, **kwargs):
        calls["until"] = kwargs["until"]
        synthesise_bundle(out, n_subjects=50, progress=False, build_status="servable")
        with update_bundle(out) as update:  # what build_cohort records
            update.manifest["build"]["settings"] = {"n_subjects": 50, "seed": 7, "model": "models/x",
                                                    "projections": ["pca", "umap"]}

    class FakeProcess:
        def __init__(self, command, **kwargs):
            calls["started"].append(self)
            self.command, self.terminated = command, False

        def poll(self):
            return None

        def wait(self):
            return 0

        def terminate(self):
            self.terminated = True

    monkeypatch.setattr(lse_panel.build, "build_cohort", fake_build)
    monkeypatch.setattr(cli.subprocess, "Popen", FakeProcess)
    assert main(["serve", str(bundle), "--build-if-missing", "--subjects", "1000", "--port", str(free_port())]) == 0
    assert calls["until"] == "servable"
    finisher, server = calls["started"]
    # The finisher repeats the bundle's own settings, not serve's defaults.
    assert finisher.command[finisher.command.index("build") + 1 :] == [
        "--out", str(bundle), "--subjects", "50", "--seed", "7", "--model", "models/x", "--projections", "pca", "umap",
    ]
    assert server.command[-1] == str(bundle.resolve())
    assert finisher.terminated and server.terminated  # nothing is left running once serve returns
    assert (bundle / "build.log").exists()


def test_bench_sizes_runs_the_scale_table_with_its_options(monkeypatch, tmp_path) -> None:
    import lse_panel.cli as cli

    ran = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command: ran.append(command) or 0)
    base = tmp_path / "demo"
    base.mkdir()
    assert cli.main(["bench", "--sizes", "500000", "2000000", "--base", str(base), "--json", str(tmp_path / "t.json")]) == 0
    (command,) = ran
    assert command[1].endswith("tests/benchmarks/bench_scale.py")
    assert command[2:] == ["--sizes", "500000", "2000000", "--data", "data", "--json", str(tmp_path / "t.json"),
                           "--base", str(base), "--make", "tile"]
    assert cli.main(["bench", "--sizes", "10"]) == 2  # below the smallest size: refused in one line


def test_dask_option_is_checked_when_parsed(capsys) -> None:
    parser = build_parser()
    for command in (["build", "--out", "x"], ["serve"], ["import", "--out", "x"]):
        assert parser.parse_args([*command, "--dask", "local"]).dask == "local"
        assert parser.parse_args([*command, "--dask", "scheduler:8786"]).dask == "tcp://scheduler:8786"
        assert parser.parse_args([*command, "--dask", "tls://10.0.0.5:8786"]).dask == "tls://10.0.0.5:8786"
    for bad, problem in (("ftp://host:8786", "which Dask does not speak"), ("host", "is not HOST:PORT"),
                         ("tcp://host:99999", "is not HOST:PORT"), ("tcp://bad_host!:8786", "not an IP address")):
        assert main(["build", "--out", "x", "--dask", bad]) == 2
        err = capsys.readouterr().err
        assert problem in err and "--dask" in err and err.count("\n") == 1
    assert main(["build", "--out", "x", "--partitions", "0"]) == 2
