"""A cohort with three modalities (two signals, one image sequence), none named ecg or mri, decoded from two latent kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.importing import import_cohort, read_spec
from lse_panel.model.torchscript import ScriptedDecoder, save_linear_torchscript
from lse_panel.sources import open_raw_source

N, DIM = 120, 6
SHAPES = {"pcg": (1, 400), "ppg": (2, 250), "echo": (10, 24, 24)}


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("three")
    rng = np.random.default_rng(3)
    ids = [f"P{i:04d}" for i in range(N)]  # text ids, as a hospital registry has
    for kind in ("heart", "vessels"):
        table = pd.DataFrame(rng.normal(size=(N, DIM)).astype(np.float32), columns=[f"d{i}" for i in range(DIM)])
        table.insert(0, "patient", ids)
        table.to_parquet(folder / f"{kind}.parquet", index=False)
    pd.DataFrame({"patient": ids, "nt_probnp": rng.lognormal(5, 1, N).round(1),
                  "nyha": rng.choice(["I", "II", "III", "IV"], N)}).to_csv(folder / "clinical.csv", index=False)
    (folder / "raw").mkdir()
    rows = []
    for i in range(10):
        np.save(folder / f"raw/{ids[i]}_pcg.npy", rng.normal(size=(1, 900)).astype(np.float32))
        np.save(folder / f"raw/{ids[i]}_echo.npy", rng.random((14, 24, 24)).astype(np.float32))
        rows.append((ids[i], f"{ids[i]}_pcg.npy", f"{ids[i]}_echo.npy"))
    records = pd.DataFrame(rows, columns=["patient", "pcg", "echo"])
    records.to_csv(folder / "raw/records.csv", index=False)
    for latent, modality in (("heart", "pcg"), ("heart", "echo"), ("vessels", "ppg"), ("heart", "ppg")):
        size = int(np.prod(SHAPES[modality]))
        save_linear_torchscript(folder / f"{latent}_{modality}.pt", rng.normal(size=(size, DIM)), np.zeros(size), SHAPES[modality])
    (folder / "cohort.toml").write_text("""
[cohort]
id_column = "patient"
[latents.heart]
file = "heart.parquet"
[latents.vessels]
file = "vessels.parquet"
[phenotypes]
file = "clinical.csv"
[phenotypes.columns.nyha]
type = "categorical"
categories = ["I", "II", "III", "IV"]
[phenotypes.columns.nt_probnp]
units = "pg/mL"
[modalities.pcg]
kind = "signal"
channel_names = ["mitral"]
n_samples = 400
sampling_rate_hz = 2000
[modalities.ppg]
kind = "signal"
channel_names = ["finger", "ear"]
n_samples = 250
sampling_rate_hz = 125
[modalities.echo]
kind = "image_sequence"
shape = [10, 24, 24]
frame_interval_ms = 33.3
[[decoders]]
latent = "heart"
modality = "pcg"
file = "heart_pcg.pt"
[[decoders]]
latent = "heart"
modality = "echo"
file = "heart_echo.pt"
[[decoders]]
latent = "heart"
modality = "ppg"
file = "heart_ppg.pt"
[[decoders]]
latent = "vessels"
modality = "ppg"
file = "vessels_ppg.pt"
[raw.pcg]
records = "raw/records.csv"
path_column = "pcg"
[raw.echo]
records = "raw/records.csv"
path_column = "echo"
[build]
projections = ["pca"]
""")
    out = folder / "bundle"
    import_cohort(read_spec(folder / "cohort.toml"), out, progress=False, log=lambda _: None)
    return out


def test_three_modalities_declared_decoded_and_read(three: Path) -> None:
    cohort = open_bundle(three)
    assert cohort.ids.dtype.kind == "U" and cohort.ids[0] == "P0000"
    assert {name: (m.kind, m.shape) for name, m in cohort.modalities.items()} == {
        "pcg": ("signal", (1, 400)), "ppg": ("signal", (2, 250)), "echo": ("image_sequence", (10, 24, 24))}
    assert cohort.targets == {"nt_probnp": "regression"}  # NYHA has four classes: not a probe target
    assert cohort.phenotype_specs["nyha"].categories == ("I", "II", "III", "IV")
    decoder = ScriptedDecoder.from_manifest(cohort.path, cohort.manifest["decoders"])
    heart = decoder(np.asarray(cohort.latent("heart")[:3]), "heart")
    assert {name: a.shape[1:] for name, a in heart.items()} == SHAPES
    assert set(decoder(np.asarray(cohort.latent("vessels")[:3]), "vessels")) == {"ppg"}
    source = open_raw_source(cohort)
    pcg, echo = source.record("pcg", 0), source.record("echo", 0)
    assert pcg.values.shape == (1, 900) and pcg.sampling_rate_hz == 2000.0 and pcg.channel_names == ("mitral",)
    assert echo.values.shape == (14, 24, 24) and echo.frame_interval_ms == pytest.approx(33.3)
    assert source.record("pcg", 50) is None and "ppg" not in source.modalities  # no raw PPG, only decoded
    conformed = source.raw(cohort.ids[:2])
    assert conformed["echo"].shape == (2, 10, 24, 24) and conformed["pcg"].shape == (2, 1, 400)
