"""Property-based: any argv for any `lse` subcommand ends in exit 0 or 2 with one clear message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lse_panel.build
import lse_panel.cli as cli
from lse_panel.cli_validation import MriShapeAction
from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.config import SETTINGS
from lse_panel.testing import tiny_cohort, write_cohort_bundle

EXAMPLES = settings.default.max_examples

NUMBERS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.integers(0, 70_000).map(str),
    st.sampled_from(["0", "-1", "1", "2", "65535", "65536", "1e3", "0x10", "1_000", "", " ", "٣", "NaN", "inf",
                     "9" * 400, "4294967296", "-0", "+5", "1.5"]),
    st.text(max_size=8),
)
HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "not_a_host", "256.1.1.1", "example.invalid",
                     "a" * 300, "", "-x", "10.255.255.1", "lse.example.org:80", "[::1]", "*", "ex ample"]),
    st.text(max_size=12),
)
ORIGINS = HOSTS | st.sampled_from(["lse.example.org", "lse.example.org:443", "host:0", "host:99999", "1.2.3.4:80"])
TEXT = st.text(max_size=60) | st.sampled_from(["k" * 40, "short", "x" * 5000, "ünïcödé-secret-ünïcödé-secret-ünïcödé"])


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real paths of every kind a path argument can meet: a bundle, a file, a secret file, nothing."""
    root = tmp_path_factory.mktemp("cli")
    bundle = write_cohort_bundle(tiny_cohort(150, latent_dim=4), root / "bundle")
    SubgroupStore(open_bundle(bundle)).save_condition("older", "age >= 60")
    users = root / "users.json"
    users.write_text('{"alice": "correct horse battery"}')
    users.chmod(0o600)
    loose = root / "loose.json"
    loose.write_text('{"alice": "correct horse battery"}')
    loose.chmod(0o644)
    (root / "file.txt").write_text("not a directory")
    return {"bundle": str(bundle), "users": str(users), "loose": str(loose), "file": str(root / "file.txt"),
            "dir": str(root), "missing": str(root / "missing"), "out": str(root / "new" / "out"),
            "model": str(SETTINGS.demo_model), "csv": str(root / "export.csv"), "under-file": str(root / "file.txt" / "x")}


def paths(places: dict[str, str]) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(places.values())) | st.sampled_from(["", "~", ".", "x" * 5000, "a/" * 2000, "名前",
                                                                        "with space", "-dash"]) | st.text(max_size=20)


def options(places: dict[str, str]) -> dict[str, dict[str, st.SearchStrategy | None]]:
    """Each subcommand's options and the values to try (None: a flag without a value)."""
    path = paths(places)
    shape = st.lists(NUMBERS, min_size=0, max_size=4).map(" ".join)
    return {
        "synth": {"--subjects": NUMBERS, "--seed": NUMBERS, "--out": path, "--overwrite": None, "--mri-shape": shape},
        "train": {"--out": path, "--bundle": path, "--seed": NUMBERS, "--n-train": NUMBERS, "--steps": NUMBERS,
                  "--latent-dim": NUMBERS, "--batch-size": NUMBERS, "--mri-shape": shape},
        "embed": {"--bundle": path, "--model": path, "--batch-size": NUMBERS},
        "build": {"--subjects": NUMBERS, "--seed": NUMBERS, "--out": path, "--model": path,
                  "--projections": st.sampled_from(["pca", "umap", "umap_full", "tsne", "pca umap", ""]),
                  "--until": st.sampled_from(["servable", "complete", "never", ""])},
        "serve": {"": path, "--port": NUMBERS, "--address": HOSTS, "--num-procs": NUMBERS,
                  "--privacy": st.sampled_from(["aggregate", "full", "none", ""]), "--build-if-missing": None,
                  "--subjects": NUMBERS, "--seed": NUMBERS, "--model": path, "--allow-origin": ORIGINS,
                  "--basic-auth": path, "--cookie-secret": TEXT, "--oauth-provider": st.sampled_from(["github", "pam", "x"]),
                  "--oauth-key": TEXT, "--oauth-secret": TEXT, "--oauth-redirect-uri": TEXT | st.just("https://a.example/login"),
                  "--oauth-encryption-key": TEXT, "--ssl-certfile": path, "--ssl-keyfile": path,
                  "--insecure-network": None},
        "subgroups": {"": st.sampled_from(["list", "export", "delete", ""]), " bundle": path,
                      " name": st.sampled_from(["older", "nobody", "", "<b>x</b>"]) | st.text(max_size=10), "--out": path},
        "slices": {" bundle": path, "--target": st.sampled_from(["lvef", "age", "sex", "nobody", ""]) | TEXT,
                   "--latent": st.sampled_from(["fused", "ecg", "all", "none"]), "--max-conditions": NUMBERS,
                   "--fdr": NUMBERS | st.floats().map(str), "--top": NUMBERS, "--out": path,
                   "--loss": st.sampled_from(["absolute", "brier", "log", "cubic"]),
                   "--bins": st.sampled_from(["age=45,55,65", "age=", "=1", "age=x,y", "lvef=40:%", "nobody=1"]) | TEXT,
                   "--include-target": None, "--given-target": None, "--no-regions": None, "--all": None},
        "import": {"--spec": path, "--latent": st.sampled_from(["fused=x.parquet", "=x", "fused", ""]) | TEXT,
                   "--phenotypes": path, "--id-column": TEXT, "--out": path, "--allow-partial": None, "--overwrite": None,
                   "--until": st.sampled_from(["servable", "complete", "later"]), "--finish": None},
        "export": {" bundle": path, "--anndata": path | st.sampled_from(["x.h5ad", "nowhere/x.h5ad"])},
        "example-cohort": {"--out": path, "--subjects": NUMBERS, "--records": NUMBERS},
        "bench": {"--only": TEXT},
    }


@st.composite
def argv(draw, places: dict[str, str]) -> list[str]:
    table = options(places)
    command = draw(st.sampled_from(sorted(table)))
    chosen = draw(st.lists(st.sampled_from(sorted(table[command])), max_size=6))
    words = [command]
    for option in chosen:
        values = table[command][option]
        if option.strip() != option or option == "":  # a positional
            words.append(draw(values))
        elif values is None:
            words.append(option)
        elif option == "--mri-shape":
            words += [option, *draw(values).split(" ")]
        else:
            words += [option, draw(values)]
    if draw(st.booleans()):  # a stray word or a dangling option
        words.insert(draw(st.integers(1, len(words))), draw(st.text(max_size=6) | st.sampled_from(["--", "-h", "--port"])))
    return words


@pytest.fixture
def harness(places, monkeypatch, tmp_path):
    """Heavy commands (synth, train, embed, build, import, export, example-cohort, bench, a build inside serve,
    the server itself) replaced by stubs that record their arguments; `subgroups`, `slices` and the checks
    inside `serve` run for real."""
    calls: list = []

    def stub(args):
        calls.append(args)
        return 0

    for name in ("_cmd_synth", "_cmd_train", "_cmd_embed", "_cmd_build", "_cmd_bench", "_cmd_import", "_cmd_export",
                 "_cmd_example_cohort"):
        monkeypatch.setattr(cli, name, stub)
    monkeypatch.setattr(lse_panel.build, "build_cohort", lambda *a, **k: calls.append(("build", a, k)))

    class FakeServer:
        def __init__(self, command, **kwargs):
            calls.append(("server", command))

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    monkeypatch.chdir(tmp_path)
    return calls


def check_parsed(args) -> None:
    """What a command that parsed may assume about its arguments."""
    if getattr(args, "port", None) is not None:
        assert 1 <= args.port <= 65_535
    for name in ("subjects", "n_train"):
        if getattr(args, name, None) is not None:
            assert 1 <= getattr(args, name) <= SETTINGS.max_subjects
    if getattr(args, "fdr", None) is not None:
        assert 0 < args.fdr < 1
    if getattr(args, "top", None) is not None:
        assert args.top >= 1
    if getattr(args, "seed", None) is not None:
        assert 0 <= args.seed < 2**32
    for name in ("batch_size", "steps", "latent_dim"):
        if getattr(args, name, None) is not None:
            assert getattr(args, name) >= 1
    if getattr(args, "mri_shape", None) is not None:
        assert len(args.mri_shape) == 3
        assert all(lo <= v <= hi for v, (_, lo, hi) in zip(args.mri_shape, MriShapeAction.LIMITS))


@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_any_argv_ends_in_a_clear_exit(places, harness, capsys, data) -> None:
    words = data.draw(argv(places), label="argv")
    capsys.readouterr()
    harness.clear()
    status = cli.main(words)
    out, err = capsys.readouterr()
    assert status in (0, 2), (status, err[-2000:])
    assert "Traceback" not in err + out
    if status == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and any(line.startswith(("lse", "error:")) for line in lines), err
        if err.startswith("lse"):  # a refused argument: one line naming it
            assert len(lines) == 1 and "error:" in lines[0], err
    for call in harness:
        if not isinstance(call, tuple):
            check_parsed(call)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["synth", "--mri-shape", "0", "0", "0", "--out", "x"], "argument --mri-shape: FRAMES '0' is out of range"),
        (["embed", "--bundle", ".", "--batch-size", "0"], "argument --batch-size: '0' is out of range"),
        (["serve", "--port", "70000"], "argument --port: '70000' is out of range; pass a whole number between 1 and 65,535"),
        (["serve", "--address", "not_a_host"], "argument --address: 'not_a_host' is not an IP address or a valid host name"),
        (["serve", "--address", "no-such-host.invalid"], "does not resolve on this machine"),
        (["synth", "--out", "x" * 5000], "argument --out"),
        (["train", "--out", ".", "--batch-size", "1"], "between 2 and 4,096"),
    ],
)
def test_issue_examples_get_one_line(harness, words, message, capsys) -> None:
    assert cli.main(words) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_help_exits_zero(capsys) -> None:
    assert cli.main(["serve", "--help"]) == 0
    assert "--basic-auth" in capsys.readouterr().out


def test_real_process_exit_status_for_a_bad_argument() -> None:
    run = subprocess.run([sys.executable, "-m", "lse_panel.cli", "synth", "--mri-shape", "0", "0", "0", "--out", "x"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 2 and "Traceback" not in run.stderr and "--mri-shape" in run.stderr
