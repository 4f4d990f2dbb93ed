"""Every bad input `lse import` can meet gets a clear error naming the file, the row or key, and the fix; no bundle is left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lse_panel.cohort.schema import BundleError
from lse_panel.importing import import_cohort, read_spec, spec_from_flags
from lse_panel.importing.spec import SpecError

N = 40


def _tables(folder: Path, *, ids: np.ndarray | None = None) -> tuple[Path, Path]:
    """A small embedding (Parquet, 4 values) and phenotype table (CSV) over the same subjects."""
    rng = np.random.default_rng(0)
    ids = np.arange(100, 100 + N) if ids is None else ids
    emb = pd.DataFrame(rng.normal(size=(len(ids), 4)).astype(np.float32), columns=[f"z{i}" for i in range(4)])
    emb.insert(0, "eid", ids)
    emb_path = folder / "emb.parquet"
    emb.to_parquet(emb_path, index=False)
    ph = pd.DataFrame({"eid": np.arange(100, 100 + N), "age": rng.normal(60, 8, N).round(1),
                       "af": rng.integers(0, 2, N), "sex": rng.choice(["female", "male"], N)})
    ph_path = folder / "ph.csv"
    ph.to_csv(ph_path, index=False)
    return emb_path, ph_path


def _spec(folder: Path, text: str) -> Path:
    path = folder / "cohort.toml"
    path.write_text("[build]\nprojections = [\"pca\"]\n" + text)
    return path


def _fails(spec, out: Path, match: str, error: type[Exception] = BundleError) -> str:
    with pytest.raises(error, match=match) as info:
        import_cohort(spec, out, progress=False, log=lambda _: None)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith((out.name, f".{out.name}.partial"))]
    assert leftovers == [], f"a failed import left {leftovers}"
    return str(info.value)


def test_mismatched_subjects_refused_then_kept_with_allow_partial(tmp_path: Path) -> None:
    emb, ph = _tables(tmp_path, ids=np.arange(105, 105 + N))  # 5 subjects on each side unmatched
    spec = spec_from_flags([f"ecg={emb}"], phenotypes=str(ph), id_column="eid")
    message = _fails(spec, tmp_path / "out", r"different subjects.*40 subjects, 35 in every input.*--allow-partial")
    assert "e.g. [100, 101, 102]" in message and "e.g. [140, 141, 142]" in message
    lines: list[str] = []
    from dataclasses import replace

    import_cohort(replace(spec, allow_partial=True, projections=("pca",)), tmp_path / "out", progress=False, log=lines.append)
    assert any("kept the 35 subjects every input has; dropped 5 of phenotypes (ph.csv), 5 of latents.ecg" in line for line in lines)


def test_duplicate_ids_named_with_rows(tmp_path: Path) -> None:
    emb, ph = _tables(tmp_path)
    table = pd.read_parquet(emb)
    table.loc[7, "eid"] = table.loc[3, "eid"]
    table.to_parquet(emb, index=False)
    spec = spec_from_flags([f"ecg={emb}"], phenotypes=str(ph), id_column="eid")
    _fails(spec, tmp_path / "out", r"latents.ecg \(emb.parquet\): 1 duplicate id\(s\), e.g. 103 at rows 4, 8.*deduplicate")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embedding_values_named_by_row_id_and_column(tmp_path: Path, bad: float) -> None:
    emb, ph = _tables(tmp_path)
    table = pd.read_parquet(emb)
    table.loc[11, "z2"] = bad
    table.to_parquet(emb, index=False)
    spec = spec_from_flags([f"ecg={emb}"], phenotypes=str(ph), id_column="eid")
    _fails(spec, tmp_path / "out", rf"emb.parquet: row 12 \(id 111\), column 'z2' is {'nan' if bad != bad else 'inf'}.*must be\s+finite")


def test_mixed_dimensions_in_a_list_column(tmp_path: Path) -> None:
    values = [list(np.arange(4.0)) for _ in range(N)]
    values[9] = [1.0, 2.0, 3.0]
    pq.write_table(pa.table({"eid": np.arange(100, 100 + N), "embedding": values}), tmp_path / "emb.parquet")
    spec = _spec(tmp_path, '[latents.ecg]\nfile = "emb.parquet"\nid_column = "eid"\ncolumn = "embedding"\n')
    _fails(read_spec(spec), tmp_path / "out", r"row 10 of column 'embedding' holds 3 values, but earlier rows hold 4 \(mixed dimensions\)")


def test_a_list_column_imports(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=(N, 256)).astype(np.float32)  # 256 values, as the issue asks
    pq.write_table(pa.table({"eid": np.arange(N), "embedding": list(values)}), tmp_path / "emb.parquet")
    spec = _spec(tmp_path, '[latents.fused]\nfile = "emb.parquet"\nid_column = "eid"\ncolumn = "embedding"\n')
    import_cohort(read_spec(spec), tmp_path / "out", progress=False, log=lambda _: None)
    from lse_panel.cohort.bundle import open_bundle

    np.testing.assert_array_equal(open_bundle(tmp_path / "out").latent("fused"), values)


def test_ragged_csv_row_and_text_in_an_embedding_column(tmp_path: Path) -> None:
    (tmp_path / "emb.csv").write_text("eid,z0,z1\n1,0.1,0.2\n2,0.3\n3,0.5,0.6\n")
    spec = spec_from_flags([f"ecg={tmp_path / 'emb.csv'}"], id_column="eid")
    _fails(spec, tmp_path / "out", r"emb.csv: cannot be read as csv .*Expected 3 columns, got 2")
    (tmp_path / "emb.csv").write_text("eid,z0,site\n1,0.1,Leeds\n2,0.3,York\n")
    _fails(spec, tmp_path / "out", r"column 'site' holds string, not numbers.*latents.ecg.columns or .prefix")


def test_unknown_columns_name_the_file_and_list_the_columns(tmp_path: Path) -> None:
    emb, ph = _tables(tmp_path)
    _fails(spec_from_flags([f"ecg={emb}"], phenotypes=str(ph), id_column="subject"), tmp_path / "out",
           r"emb.parquet: no column 'subject' \(the id column\). Its columns are: eid, z0, z1, z2, z3")
    spec = _spec(tmp_path, f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\ncolumns = ["z0", "z9"]\n')
    _fails(read_spec(spec), tmp_path / "out", r"no column 'z9' \(latents.ecg.columns\)")
    spec = _spec(tmp_path, f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\n[phenotypes]\nfile = "{ph}"\n'
                           '[phenotypes.columns.lv_mass]\nunits = "g"\n')
    _fails(read_spec(spec), tmp_path / "out", r"ph.csv: no column 'lv_mass' \(phenotypes.columns\). Its columns are: age, af, sex")
    spec = _spec(tmp_path, f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\n[phenotypes]\nfile = "{ph}"\ntargets = ["bmi"]\n')
    _fails(read_spec(spec), tmp_path / "out", r"phenotypes.targets names 'bmi', which is not an imported phenotype")


def test_phenotype_values_that_contradict_their_declaration(tmp_path: Path) -> None:
    emb, ph = _tables(tmp_path)
    base = f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\n[phenotypes]\nfile = "{ph}"\n'
    spec = _spec(tmp_path, base + '[phenotypes.columns.sex]\ntype = "continuous"\n')
    _fails(read_spec(spec), tmp_path / "out", r"column 'sex' is continuous but holds '(fe)?male' \(cohort row 1\)")
    spec = _spec(tmp_path, base + '[phenotypes.columns.sex]\ncategories = ["female", "other"]\n')
    _fails(read_spec(spec), tmp_path / "out", r"column 'sex' holds \['male'\], not among phenotypes.columns.sex.categories")
    table = pd.read_csv(ph)
    table["site"] = np.where(np.arange(N) % 3 == 0, "A", np.where(np.arange(N) % 3 == 1, "B", "C"))
    table.to_csv(ph, index=False)
    spec = _spec(tmp_path, base.replace("[phenotypes]\n", "[phenotypes]\ntargets = [\"site\"]\n"))
    _fails(read_spec(spec), tmp_path / "out", r"'site' cannot be a target: 3 categories")


def test_spec_mistakes_name_the_key_and_the_fix(tmp_path: Path) -> None:
    emb, _ = _tables(tmp_path)
    with pytest.raises(SpecError, match=r"unknown key latents.ecg.colums. Did you mean latents.ecg.columns\?"):
        read_spec(_spec(tmp_path, f'[latents.ecg]\nfile = "{emb}"\ncolums = ["z0"]\n'))
    with pytest.raises(SpecError, match=r"latents.ECG v2: latent kind names start with a letter"):
        read_spec(_spec(tmp_path, f'[latents."ECG v2"]\nfile = "{emb}"\n'))
    with pytest.raises(SpecError, match=r"latents.ecg.ids is missing; a .npy embedding needs a file of ids"):
        read_spec(_spec(tmp_path, '[latents.ecg]\nfile = "emb.npy"\n'))
    with pytest.raises(SpecError, match=r"not valid TOML"):
        read_spec(_spec(tmp_path, "[latents.ecg\n"))
    with pytest.raises(SpecError, match=r"decoders\[0\].modality is 'ecg', which no \[modalities.NAME\] table declares"):
        read_spec(_spec(tmp_path, f'[latents.fused]\nfile = "{emb}"\n[[decoders]]\nlatent = "fused"\nmodality = "ecg"\nfile = "d.pt"\n'))
    with pytest.raises(SpecError, match=r"--latent 'ecg': write NAME=FILE"):
        spec_from_flags(["ecg"])
    with pytest.raises(SpecError, match=r"emb.xlsx: cannot read this kind of file here; supported: parquet, csv, npy, h5ad"):
        spec_from_flags(["ecg=emb.xlsx"])


def _signal_spec(tmp_path: Path, emb: Path, decoder: Path, n_samples: int = 50) -> Path:
    return _spec(tmp_path, f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\n'
                           f'[modalities.ecg]\nkind = "signal"\nchannel_names = ["I", "II"]\nn_samples = {n_samples}\nsampling_rate_hz = 100\n'
                           f'[[decoders]]\nlatent = "ecg"\nmodality = "ecg"\nfile = "{decoder}"\n')


def test_decoder_output_not_matching_its_declaration(tmp_path: Path) -> None:
    import torch

    from lse_panel.model.torchscript import save_linear_torchscript

    emb, _ = _tables(tmp_path)
    decoder = save_linear_torchscript(tmp_path / "dec.pt", np.zeros((2 * 40, 4)), np.zeros(2 * 40), (2, 40))
    _fails(read_spec(_signal_spec(tmp_path, emb, decoder)), tmp_path / "out", error=ValueError, match=
           r"dec.pt: decoder \(ecg → ecg\) returned shape \(2, 2, 40\) for a batch of 2 ecg latents \(4 values each\), "
           r"but modality 'ecg' is declared \(2, 50\) per record. Fix the declaration in \[modalities.ecg\]")
    wrong_input = save_linear_torchscript(tmp_path / "dec.pt", np.zeros((100, 7)), np.zeros(100), (2, 50))
    _fails(read_spec(_signal_spec(tmp_path, emb, wrong_input)), tmp_path / "out", error=ValueError, match=
           r"dec.pt: the decoder \(ecg → ecg\) failed on a batch of shape \(2, 4\)")
    torch.save(torch.nn.Linear(4, 100).state_dict(), tmp_path / "pickled.pt")
    _fails(read_spec(_signal_spec(tmp_path, emb, tmp_path / "pickled.pt")), tmp_path / "out", error=ValueError, match=
           r"pickled.pt: not a TorchScript module.*torch.jit.script\(model\).save\(path\).*pickled models and state_dicts are not loaded")


def test_unreadable_or_missing_raw_files(tmp_path: Path) -> None:
    emb, _ = _tables(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/bad.dcm").write_bytes(b"not a dicom file at all")
    pd.DataFrame({"eid": [100, 101], "path": ["bad.dcm", "gone.dcm"]}).to_csv(tmp_path / "raw/records.csv", index=False)
    text = (f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\n'
            '[modalities.ecg]\nkind = "signal"\nchannel_names = ["I"]\nn_samples = 10\nsampling_rate_hz = 100\n'
            '[raw.ecg]\nrecords = "raw/records.csv"\n')
    _fails(read_spec(_spec(tmp_path, text)), tmp_path / "out",
           r"records.csv: 1 of 2 raw files are missing, e.g. id 101: .*gone.dcm. Fix the paths in the records table")
    pd.DataFrame({"eid": [100], "path": ["bad.dcm"]}).to_csv(tmp_path / "raw/records.csv", index=False)
    _fails(read_spec(_spec(tmp_path, text)), tmp_path / "out",
           r"bad.dcm: cannot be read as dicom \(InvalidDicomError.*\).*\(raw.ecg, id 100, row 1 of records.csv\)")


def test_a_raw_file_of_the_wrong_kind(tmp_path: Path) -> None:
    import nibabel

    emb, _ = _tables(tmp_path)
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), str(tmp_path / "cine.nii"))
    pd.DataFrame({"eid": [100], "path": ["cine.nii"]}).to_csv(tmp_path / "records.csv", index=False)
    text = (f'[cohort]\nid_column = "eid"\n[latents.ecg]\nfile = "{emb}"\n'
            '[modalities.ecg]\nkind = "signal"\n[raw.ecg]\nrecords = "records.csv"\n')
    _fails(read_spec(_spec(tmp_path, text)), tmp_path / "out",
           r"cine.nii: holds a NIfTI image, but the modality is a signal. Declare this modality with kind = 'image_sequence'")


def test_existing_folder_that_is_not_a_bundle_is_left_alone(tmp_path: Path) -> None:
    emb, _ = _tables(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    with pytest.raises(BundleError, match=r"out: exists and is not a bundle. Choose another --out \(nothing was written\)"):
        import_cohort(spec_from_flags([f"ecg={emb}"], id_column="eid"), out, progress=False, log=lambda _: None)
    assert (out / "thesis.docx").read_text() == "precious"
