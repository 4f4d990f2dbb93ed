"""``lse import``: a researcher's embeddings, phenotypes, raw records and decoders → a bundle the explorer serves.

Steps, each recorded in the manifest like ``lse build``'s so a rerun skips what is done:

``ingest``
    Read every input's ids, join them (:mod:`~lse_panel.importing.join`), code the phenotypes,
    stream the embeddings into memory-mapped blocks, record the raw files, check and copy the
    decoders. Everything is written into a hidden staging folder that is renamed onto ``--out``
    only when complete: bad input never leaves a bundle behind.
``encode:<kind>``
    For encoders: read each subject's raw record, bring it to the declared shape, encode in
    batches (progress bar), stream into the latent block.
then the steps every bundle gets (:func:`lse_panel.steps.run_analysis`): cross-fitted predictions
of the chosen targets, PCA and the scalable UMAP per latent kind.

Nothing the user gave is written to. If an import fails before the bundle is servable, the
bundle it was creating is removed (an interrupted one, Ctrl-C, is kept and resumes).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lse_panel.cohort.bundle import file_stem, open_bundle, read_manifest
from lse_panel.cohort.bundle_writer import open_npy_for_writing, remove_build_temporaries, update_bundle, write_bundle
from lse_panel.cohort.raw_files import FILES_SOURCE, FileRecordSource, write_records_table
from lse_panel.cohort.records import RecordError, read_record
from lse_panel.cohort.schema import BundleError, ImageSequenceModality, Modality, SignalModality
from lse_panel.digest import file_digest
from lse_panel.importing.join import JoinResult, join_ids, match_rows, read_ids, shown
from lse_panel.importing.phenotypes import PhenotypeTable, build_phenotypes
from lse_panel.importing.spec import ImportSpec, RawInput, SpecError
from lse_panel.importing.tables import EmbeddingReader, TableError, _unknown_column, read_table, table_columns
from lse_panel.steps import StepRunner, build_lock, run_analysis, step_key

INGEST_VERSION = 1
"""Bumped when ingest writes something different from the same inputs, so old imports are redone."""

SAMPLE_RECORDS = 3
"""Raw files read in full at import per modality (``check = "sample"``); every file's existence is checked."""


def import_cohort(
    spec: ImportSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    until: str = "complete",
    progress: bool = True,
    log: Callable[[str], None] = print,
    dask: Any = None,
    partitions: int | None = None,
) -> dict[str, float]:
    """Import a cohort into a bundle at ``out``; returns each step's seconds (0 when skipped).

    Parameters
    ----------
    spec
        From :func:`~lse_panel.importing.spec.read_spec` or :func:`~lse_panel.importing.spec.spec_from_flags`.
    out
        The bundle directory to write.
    overwrite
        Replace a bundle at ``out`` that was imported from other inputs.
    until
        ``"servable"`` stops once the app can serve it; ``"complete"`` adds every map.
    progress
        Progress bars and step times.
    log
        Where the join and phenotype reports go.
    dask
        ``"local"``, a scheduler address or a ``distributed.Client``: encoding raw records (the
        spec's ``[encoders]``) runs as one task per partition there. Reading and joining the
        tables is one streaming pass in this process (disk-bound), and cross-fitting and mapping
        run here as in ``lse build``.
    partitions
        Lay the bundle out as this many Parquet parts per table (``lse import --partitions``), as
        ``lse build --partitions`` does; latents are streamed to ``.npy`` first (their rows arrive
        in the input's order) and then written part by part.

    Raises
    ------
    BundleError
        Any problem with the inputs (its subclasses name the file, row or key and the fix).
    """
    from lse_panel.cohort.dask_backend import connect

    out = Path(out)
    client = connect(dask) if dask is not None else None
    with build_lock(out, command="lse import"):
        run: dict[str, bool] = {"created": False}
        try:
            return _import(spec, out, run, overwrite=overwrite, until=until, progress=progress, log=log, client=client,
                           partitions=partitions)
        except Exception:
            # A failed import leaves no half bundle: what this run created goes unless already servable.
            # Ctrl-C is not a failure: the bundle stays (refused by the app) and a rerun resumes.
            if run["created"] and read_manifest(out).get("build", {}).get("status") == "in_progress":
                shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            if client is not None and client is not dask:  # a cluster this import started
                cluster = client.cluster
                client.close()
                if cluster is not None:
                    cluster.close()


def finish_import(out: str | Path, *, until: str = "complete", progress: bool = True) -> dict[str, float]:
    """Run the remaining steps of an imported bundle with its recorded settings (no inputs needed)."""
    out = Path(out)
    with build_lock(out, command="lse import"):
        settings = read_manifest(out).get("build", {}).get("settings", {})
        if settings.get("producer") != "import":
            raise BundleError(f"{out}: was not made by `lse import` (producer {settings.get('producer')!r}); finish it with `lse build`.")
        steps = StepRunner(out, progress)
        _analyse(out, steps, settings, until=until, progress=progress)
        return steps.timings


def _analyse(out: Path, steps: StepRunner, settings: dict[str, Any], *, until: str, progress: bool) -> None:
    run_analysis(
        out, steps, upstream_key=settings["upstream_key"], projections=settings["projections"], seed=settings["seed"],
        crossfit_splits=settings["crossfit_splits"], crossfit_max_train=settings["crossfit_max_train"],
        until=until, progress=progress,
    )


def _fingerprints(spec: ImportSpec) -> list[Any]:
    """Path, size and modification time of every input: a changed file makes the ingest run again."""
    files = [x.file for x in spec.latents] + [x.ids for x in spec.latents if x.ids] + [x.file for x in spec.encoders]
    files += [x.file for x in spec.decoders] + [x.records for x in spec.raw]
    files += [spec.phenotypes.file] if spec.phenotypes else []
    out = []
    for file in files:
        stat = file.stat() if file.exists() else None
        out.append([str(file), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return out


def _spec_record(spec: ImportSpec) -> dict[str, Any]:
    """The spec as JSON-ready data, for the ingest key and the manifest's provenance."""
    from dataclasses import asdict

    record = asdict(spec)
    record.pop("source", None)
    return record


def _import(spec: ImportSpec, out: Path, run: dict[str, bool], *, overwrite: bool, until: str, progress: bool,
            log: Callable[[str], None], client: Any = None, partitions: int | None = None) -> dict[str, float]:
    steps = StepRunner(out, progress)
    ingest_key = step_key("import", INGEST_VERSION, _spec_record(spec), _fingerprints(spec), partitions)
    if (out / "manifest.json").exists() and not steps.up_to_date("ingest", ingest_key) and not overwrite:
        raise BundleError(
            f"{out}: exists and was not imported from these inputs (or they changed since). Pass --overwrite to "
            "replace it, or choose another --out."
        )
    if out.exists() and not (out / "manifest.json").exists() and any(out.iterdir()) and not overwrite:
        raise BundleError(f"{out}: exists and is not a bundle. Choose another --out (nothing was written).")
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of an interrupted ingest
    remove_build_temporaries(out)  # and of a killed stream or write, as `lse build` does
    if steps.up_to_date("ingest", ingest_key):
        steps.skipped("ingest")
    else:
        start = time.perf_counter()
        _ingest(spec, out, ingest_key=ingest_key, progress=progress, log=log, partitions=partitions)
        run["created"] = True
        steps.record("ingest", ingest_key, time.perf_counter() - start)
    encode_keys = []
    for encoder in spec.encoders:
        key = step_key(ingest_key, "encode", encoder.kind, file_digest(encoder.file))
        steps.run(f"encode:{encoder.kind}", key,
                  lambda encoder=encoder: _encode(out, encoder, spec, progress=progress, client=client))
        encode_keys.append(key)
    settings = {
        "producer": "import", "spec": str(spec.source) if spec.source else None, "projections": list(spec.projections),
        "seed": spec.seed, "crossfit_splits": spec.crossfit_splits, "crossfit_max_train": spec.crossfit_max_train,
        "upstream_key": step_key(ingest_key, encode_keys),
    }
    with update_bundle(out) as update:
        update.manifest.setdefault("build", {})["settings"] = settings  # so `lse serve` can finish it
    _analyse(out, steps, settings, until=until, progress=progress)
    cohort = open_bundle(out)  # the bundle must load; fail loudly here rather than in the app
    if progress:
        log(steps.summary())
        log(f"imported {cohort.n_subjects:,} subjects into {out} (status: {cohort.build_status}); "
            f"serve it with `lse serve {out}`")
    return steps.timings


# -- ingest ---------------------------------------------------------------------------------------
def _ingest(spec: ImportSpec, out: Path, *, ingest_key: str, progress: bool, log: Callable[[str], None],
            partitions: int | None = None) -> None:
    readers = {x.kind: EmbeddingReader(x, spec.id_column) for x in spec.latents}
    labels = {kind: f"latents.{kind} ({r.file.name})" for kind, r in readers.items()}
    inputs: dict[str, np.ndarray] = {}
    frame = None
    if spec.phenotypes is not None:
        frame, label = _phenotype_frame(spec)
        inputs[label] = read_ids(frame.pop("__id__").to_numpy(), label)
    for kind, reader in readers.items():
        inputs[labels[kind]] = read_ids(reader.ids(), labels[kind])
    raw_tables = {r.modality: _records_table(r, spec) for r in spec.raw}
    encoded = {e.modality for e in spec.encoders}
    for modality in encoded:  # encoders need every subject's record: their tables take part in the join
        inputs[raw_tables[modality][0]] = raw_tables[modality][1]
    join = join_ids(inputs, allow_partial=spec.allow_partial)
    log("joined on subject id:\n  " + "\n  ".join(join.report()))

    n = len(join.ids)
    phenotypes = _phenotypes(frame, join, spec, n, log)
    matched = {r.modality: _match_records(r, raw_tables[r.modality], join.ids) for r in spec.raw}
    modalities = _modalities(spec, raw_tables, matched)
    staging = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        write_bundle(
            staging / "bundle", ids=join.ids, phenotypes=pd.DataFrame(phenotypes.columns, copy=False),
            phenotype_specs=phenotypes.specs, modalities=modalities, targets=phenotypes.targets,
            provenance={"producer": "lse import", "spec": str(spec.source) if spec.source else "flags",
                        "name": spec.name, "join": join.report(), "inputs": _fingerprints(spec)},
            build_status="in_progress", partitions=partitions,
        )
        bundle = staging / "bundle"
        dims = {kind: _stream_latent(bundle, kind, reader, join.rows[labels[kind]], inputs[labels[kind]], progress)
                for kind, reader in readers.items()}
        for kind in readers:
            _into_layout(bundle, kind)
        dims |= {e.kind: _check_encoder(e, modalities) for e in spec.encoders}
        raw_entries = {r.modality: _write_records(bundle, r, raw_tables[r.modality], matched[r.modality], modalities[r.modality], log)
                       for r in spec.raw}
        decoders = {f"{d.latent}__{d.modality}": _copy_decoder(bundle, d, dims[d.latent], modalities[d.modality])
                    for d in spec.decoders}
        with update_bundle(bundle) as update:
            if raw_entries:
                update.manifest["raw"] = {"source": FILES_SOURCE, "modalities": raw_entries}
            update.manifest["decoders"] = decoders
            update.record_step("ingest", key=ingest_key)
        if out.exists():
            shutil.rmtree(out)
        os.replace(bundle, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        # Arrow's allocator keeps what the tables used (1.25 GB after a 500k × 3 × 256 ingest): hand
        # it back before the cross-fit and maps, or it counts towards the import's peak memory.
        import pyarrow as pa

        pa.default_memory_pool().release_unused()


def _phenotype_frame(spec: ImportSpec) -> tuple[pd.DataFrame, str]:
    source = spec.phenotypes
    assert source is not None
    label = f"phenotypes ({source.file.name})"
    id_column = source.id_column or spec.id_column
    columns = table_columns(source.file, source.format)
    if not id_column:
        raise TableError(f"{source.file}: which column holds the subject ids? Set [cohort] id_column (or --id-column).")
    if id_column not in columns:
        raise _unknown_column(source.file, id_column, "the id column", columns)
    frame = read_table(source.file, source.format).to_pandas()
    frame.insert(0, "__id__", frame.pop(id_column))
    return frame, label


def _phenotypes(frame: pd.DataFrame | None, join: JoinResult, spec: ImportSpec, n: int, log: Callable[[str], None]) -> PhenotypeTable:
    if frame is None or spec.phenotypes is None:
        return PhenotypeTable({}, {}, {})
    label = next(iter(join.rows))
    rows = join.rows[label]
    order = np.empty(n, dtype=np.int64)
    order[rows[rows >= 0]] = np.flatnonzero(rows >= 0)
    table = build_phenotypes(frame.iloc[order].reset_index(drop=True), spec.phenotypes, min_per_class=spec.crossfit_splits)
    log(f"phenotypes ({len(table.specs)}, {len(table.targets)} targets):\n" + "\n".join(table.report()))
    return table


def _stream_latent(bundle: Path, kind: str, reader: EmbeddingReader, rows: np.ndarray, ids: np.ndarray, progress: bool) -> int:
    """Write one embedding into ``latents/<kind>.npy`` batch by batch, rows placed in cohort order."""
    n = int((rows >= 0).sum())
    relative = f"latents/{file_stem(kind)}.npy"
    block = open_npy_for_writing(bundle / relative, (n, reader.dim))
    columns = getattr(reader, "value_columns", None)
    with tqdm(total=len(rows), desc=f"latents.{kind}", unit="row", disable=not progress) as bar:
        for start, values in reader.batches():
            if values.shape[1] != reader.dim:
                raise TableError(f"{reader.file}: rows from {start + 1} hold {values.shape[1]} values, earlier ones "
                                 f"{reader.dim} (mixed dimensions). Every embedding must have the same length.")
            target = rows[start : start + len(values)]
            keep = target >= 0
            finite = np.isfinite(values)
            bad = np.flatnonzero(~finite.all(axis=1) & keep)
            if bad.size:
                row = int(bad[0])
                col = int(np.flatnonzero(~finite[row])[0])
                column = f"column {columns[col]!r}" if columns and not reader.list_column else f"value {col + 1}"
                raise TableError(
                    f"{reader.file}: row {start + row + 1} (id {shown(ids[start + row])}), {column} is "
                    f"{values[row, col]} ({bad.size} row(s) in this batch have NaN or infinite values). Embeddings must be "
                    "finite: re-export them, or drop those subjects (with --allow-partial the other inputs may keep them)."
                )
            block[target[keep]] = values[keep]
            bar.update(len(values))
    block.flush()
    del block
    with update_bundle(bundle) as update:
        update.register_latent(kind, relative, reader.dim, source=str(reader.file), format=reader.source.format)
    return int(reader.dim)


def _into_layout(bundle: Path, kind: str) -> None:
    """A latent block streamed to ``.npy`` moved into the bundle's layout: Parquet parts when it has them."""
    with update_bundle(bundle) as update:
        if update.layout["format"] != "parquet":
            return
        meta = dict(update.manifest["latents"][kind])
        file = bundle / meta.pop("file")
        meta.pop("dim", None)
        update.add_latent(kind, np.load(file, mmap_mode="r"), **meta)  # written part by part from the memory map
    file.unlink()


# -- raw records ----------------------------------------------------------------------------------
def _records_table(raw: RawInput, spec: ImportSpec) -> tuple[str, np.ndarray, list[Path]]:
    """(label, ids, absolute paths) of one modality's records table; paths resolve against the table's folder."""
    fmt = "parquet" if raw.records.suffix.lower() in (".parquet", ".pq") else "csv"
    label = f"raw.{raw.modality} ({raw.records.name})"
    id_column = raw.id_column or spec.id_column
    columns = table_columns(raw.records, fmt)
    if not id_column or id_column not in columns:
        raise _unknown_column(raw.records, str(id_column), "the id column", columns)
    if raw.path_column not in columns:
        raise _unknown_column(raw.records, raw.path_column, f"raw.{raw.modality}.path_column", columns)
    table = read_table(raw.records, fmt, [id_column, raw.path_column])
    ids = read_ids(table.column(id_column).combine_chunks(), label)
    base = raw.records.parent
    paths = []
    for i, value in enumerate(table.column(raw.path_column).to_pylist()):
        if not value:
            raise TableError(f"{raw.records}: row {i + 1} (id {shown(ids[i])}) has no path. Give each subject's file, or drop the row.")
        path = Path(str(value)).expanduser()
        paths.append(path if path.is_absolute() else base / path)
    return label, ids, paths


def _match_records(raw: RawInput, table: tuple[str, np.ndarray, list[Path]], cohort_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each listed record's bundle row (``-1``: not in the cohort) and the listed rows that are; every such file must exist."""
    label, ids, paths = table
    rows = match_rows(cohort_ids, ids)
    keep = np.flatnonzero(rows >= 0)
    if keep.size == 0:
        raise RecordError(f"{raw.records}: none of its {len(ids):,} ids is in the cohort (first ids: "
                          f"{ids[:3].tolist()}; the cohort's: {cohort_ids[:3].tolist()}). Check its id column.")
    missing = [(ids[i], paths[i]) for i in keep if not (paths[i].exists() or Path(f"{paths[i]}.hea").exists())]
    if missing:
        examples = "; ".join(f"id {shown(i)}: {p}" for i, p in missing[:3])
        raise RecordError(f"{raw.records}: {len(missing):,} of {len(keep):,} raw files are missing, e.g. {examples}. "
                          "Fix the paths in the records table (relative paths are relative to its folder).")
    return rows, keep


def _write_records(bundle: Path, raw: RawInput, table: tuple[str, np.ndarray, list[Path]],
                   matched: tuple[np.ndarray, np.ndarray], modality: Modality, log: Callable[[str], None]) -> dict[str, Any]:
    label, ids, paths = table
    rows, keep = matched
    check = keep if raw.check == "all" else keep[:SAMPLE_RECORDS]
    for i in check:
        _read_listed(raw, table, int(i), modality.kind, modality)
    entry = write_records_table(bundle, raw.modality, rows[keep], [str(paths[i]) for i in keep], raw.records.parent)
    entry |= {"format": raw.format, "options": dict(raw.options), "checked": "all" if raw.check == "all" else len(check)}
    log(f"{label}: {len(ids):,} records, {len(keep):,} of the cohort's subjects have one"
        + (f"; {len(ids) - len(keep):,} ids not in the cohort ignored" if len(keep) < len(ids) else ""))
    return entry


def _read_listed(raw: RawInput, table: tuple[str, np.ndarray, list[Path]], i: int, kind: str, modality: Modality | None) -> Any:
    """Read row ``i`` of a records table; an error says which table, row and subject it came from."""
    _, ids, paths = table
    try:
        return read_record(paths[i], kind, format=raw.format, modality=modality, options=dict(raw.options))
    except RecordError as exc:
        raise RecordError(f"{exc} (raw.{raw.modality}, id {shown(ids[i])}, row {i + 1} of {raw.records.name})") from None


def _modalities(spec: ImportSpec, raw_tables: dict[str, tuple[str, np.ndarray, list[Path]]],
                matched: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Modality]:
    """The declared modalities, completed from a first raw record where a declaration leaves fields out."""
    names = list(dict.fromkeys([*spec.modalities, *raw_tables]))
    needs_shape = {d.modality for d in spec.decoders} | {e.modality for e in spec.encoders}
    raw_by_name = {r.modality: r for r in spec.raw}
    out = {}
    for name in names:
        decl = dict(spec.modalities.get(name, {}))
        sample = None
        if name in raw_tables and name not in needs_shape:
            raw = raw_by_name[name]
            first = int(matched[name][1][0])
            kind = decl.get("kind") or _kind_of_format(raw, raw_tables[name][2][first])
            sample = _read_listed(raw, raw_tables[name], first, kind, None)
            decl.setdefault("kind", kind)
        out[name] = _modality(name, decl, sample, spec)
    return out


def _kind_of_format(raw: RawInput, first: Path) -> str:
    from lse_panel.cohort.records import record_format

    fmt = raw.format or record_format(first)
    if fmt == "wfdb":
        return "signal"
    if fmt == "nifti":
        return "image_sequence"
    raise SpecError(f"[raw.{raw.modality}]: {fmt} files may hold signals or image sequences; declare "
                    f"[modalities.{raw.modality}] kind = \"signal\" or \"image_sequence\".")


def _modality(name: str, decl: dict[str, Any], sample: Any, spec: ImportSpec) -> Modality:
    where = f"{spec.source or 'spec'}: modalities.{name}"
    shape = decl.get("shape")

    def need(key: str, value: Any) -> Any:
        if value is None:
            raise SpecError(f"{where}.{key} is missing; declare it (decoders and encoders need the exact shape).")
        return value

    common = {"units": str(decl.get("units", getattr(sample, "units", "") or ("mV" if decl["kind"] == "signal" else "a.u."))),
              "description": str(decl.get("description", ""))}
    if decl["kind"] == "signal":
        names = decl.get("channel_names") or (list(sample.channel_names) if sample else None)
        n_samples = decl.get("n_samples") or (shape[1] if shape else None) or (sample.values.shape[1] if sample else None)
        if names is None and shape:
            names = [f"ch{i + 1}" for i in range(shape[0])]
        rate = decl.get("sampling_rate_hz") or (sample.sampling_rate_hz if sample else None)
        names = need("channel_names", names)
        if shape and len(shape) != 2 or shape and shape[0] != len(names):
            raise SpecError(f"{where}.shape is {shape}; a signal is [channels, samples] with one channel per name ({len(names)}).")
        return SignalModality(name, tuple(map(str, names)), int(need("n_samples", n_samples)),
                              float(need("sampling_rate_hz", rate)), **common)
    if shape is None and sample is not None:
        shape = list(sample.values.shape)
    shape = need("shape", shape)
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise SpecError(f"{where}.shape is {shape!r}; an image sequence is [frames, height, width].")
    interval = decl.get("frame_interval_ms") or (sample.frame_interval_ms if sample else None)
    return ImageSequenceModality(name, *shape, frame_interval_ms=float(need("frame_interval_ms", interval)), **common)


# -- decoders and encoders ------------------------------------------------------------------------
def _copy_decoder(bundle: Path, decoder: Any, latent_dim: int, modality: Modality) -> dict[str, Any]:
    from lse_panel.model.torchscript import check_decoder, load_torchscript

    module = load_torchscript(decoder.file)
    check_decoder(module, path=decoder.file, latent=decoder.latent, latent_dim=latent_dim,
                  modality=decoder.modality, shape=modality.shape)
    relative = f"decoders/{file_stem(decoder.latent)}__{file_stem(decoder.modality)}.pt"
    (bundle / "decoders").mkdir(exist_ok=True)
    shutil.copyfile(decoder.file, bundle / relative)  # the bundle keeps its own copy: the user's file may move
    return {"file": relative, "latent": decoder.latent, "modality": decoder.modality, "shape": list(modality.shape),
            "latent_dim": int(latent_dim), "sha256": file_digest(bundle / relative), "source": str(decoder.file)}


def _check_encoder(encoder: Any, modalities: dict[str, Modality]) -> int:
    from lse_panel.model.torchscript import ScriptedEncoder

    return ScriptedEncoder(encoder.file, modality=encoder.modality, shape=modalities[encoder.modality].shape,
                           latent=encoder.kind).latent_dim


ENCODE_PARTITION_ROWS = 50_000
"""Subjects per encode task (a partition): about a minute of reading and encoding raw records per
core at the example cohort's cost, small enough that a lost worker costs little and a cluster of
many workers has a partition each."""


def _encode(out: Path, encoder: Any, spec: ImportSpec, *, progress: bool, client: Any = None) -> dict[str, Any]:
    """Encode every subject's raw record of ``encoder.modality`` into the latent block ``encoder.kind``.

    One task per partition of :data:`ENCODE_PARTITION_ROWS` subjects: on the Dask cluster
    ``client`` (each worker reads the records its partition names and encodes them on one torch
    thread) or, without one, one after another here on every core. Finished partitions wait in
    ``<bundle>/.staging/encode-<kind>-<tag>/``, so a rerun after a kill encodes only the others.
    """
    from lse_panel.cohort.dask_backend import run_tasks
    from lse_panel.cohort.partitions import row_bounds
    from lse_panel.model.embedding import STAGING, concatenate_npy, hashlib_key

    n = open_bundle(out, allow_incomplete=True).n_subjects
    bounds = row_bounds(n, max(1, -(-n // ENCODE_PARTITION_ROWS)))
    staging = out / STAGING / f"encode-{file_stem(encoder.kind)}-{hashlib_key(file_digest(encoder.file), bounds)}"
    staging.mkdir(parents=True, exist_ok=True)
    parts = [staging / f"part-{i:05d}.npy" for i in range(len(bounds) - 1)]
    todo = [i for i, part in enumerate(parts) if not part.exists()]
    calls = [((str(out), str(encoder.file), encoder.modality, encoder.kind, bounds[i], bounds[i + 1], str(parts[i])),
              {"batch_size": encoder.batch_size, "threads": 1 if client is not None else None}) for i in todo]  # fmt: skip
    figures = run_tasks(encode_partition, calls, client=client, progress=progress,
                        desc=f"encode {encoder.modality} → {encoder.kind}", sizes=[bounds[i + 1] - bounds[i] for i in todo])
    relative = f"latents/{file_stem(encoder.kind)}.npy"
    latent_dim = int(np.load(parts[0], mmap_mode="r").shape[1])
    concatenate_npy(parts, out / relative, (n, latent_dim))
    shutil.rmtree(staging, ignore_errors=True)
    read_s, encode_s = sum(f["read_s"] for f in figures), sum(f["encode_s"] for f in figures)
    with update_bundle(out) as update:
        update.register_latent(encoder.kind, relative, latent_dim, encoder=str(encoder.file),
                               encoder_sha256=file_digest(encoder.file), modality=encoder.modality)
    _into_layout(out, encoder.kind)
    return {"read_s": round(read_s, 2), "encode_s": round(encode_s, 2), "partitions": len(parts),
            "partitions_done_before": len(parts) - len(todo)}


def encode_partition(out: str, encoder_file: str, modality_name: str, kind: str, start: int, stop: int, target: str,
                     *, batch_size: int, threads: int | None) -> dict[str, float]:  # fmt: skip
    """Encode subjects ``start:stop`` (one task): their raw records read and conformed, the TorchScript encoder run.

    Writes the ``(stop - start, d)`` block to ``target`` atomically; returns the seconds spent
    reading and encoding.
    """
    from lse_panel.cohort.records import conform
    from lse_panel.model.embedding import torch_threads
    from lse_panel.model.torchscript import ScriptedEncoder

    cohort = open_bundle(out, allow_incomplete=True)
    modality = cohort.modalities[modality_name]
    source = FileRecordSource(Path(out), cohort.manifest["raw"], cohort.modalities, cohort.ids)
    model = ScriptedEncoder(Path(encoder_file), modality=modality_name, shape=modality.shape, latent=kind)
    block = np.empty((stop - start, model.latent_dim), dtype=np.float32)
    read_s = encode_s = 0.0
    with torch_threads(threads):
        for lo in range(start, stop, batch_size):
            t0 = time.perf_counter()
            batch = np.empty((min(batch_size, stop - lo), *modality.shape), dtype=np.float32)
            for i in range(len(batch)):
                record = source.record(modality_name, lo + i)
                if record is None:
                    raise RecordError(f"subject {shown(cohort.ids[lo + i])} has no {modality_name} record to encode.")
                batch[i] = conform(record, modality)
            t1 = time.perf_counter()
            block[lo - start : lo - start + len(batch)] = model(batch)
            read_s += t1 - t0
            encode_s += time.perf_counter() - t1
    tmp = Path(target).with_name(f".{Path(target).name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, block, allow_pickle=False)
    os.replace(tmp, target)
    return {"read_s": read_s, "encode_s": encode_s}
