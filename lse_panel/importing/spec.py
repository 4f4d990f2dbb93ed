"""The import spec: a TOML file (read with ``tomllib``) or command-line flags, checked into plain dataclasses.

Every path is resolved against the spec file's folder; every key is checked against the ones
this module knows, so a typo (``colums``) is an error naming the key and the likely intended one,
not a setting silently ignored. See ``docs/bundle.md`` and the README's "Bring your own cohort".
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from lse_panel.cohort.records import RECORD_FORMATS
from lse_panel.cohort.schema import BundleError
from lse_panel.config import SETTINGS

TABLE_FORMATS = ("parquet", "csv", "npy", "h5ad")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".gz": "csv",
             ".npy": "npy", ".h5ad": "h5ad"}


class SpecError(BundleError):
    """The import spec (or a flag) is wrong; the message names the key and what to write instead."""


@dataclass(frozen=True)
class LatentInput:
    """One latent kind read from a table: ``file`` with an id column and numeric columns (or one list column)."""

    kind: str
    file: Path
    format: str
    id_column: str | None = None
    columns: tuple[str, ...] | None = None
    column: str | None = None
    prefix: str | None = None
    ids: Path | None = None
    obsm: str | None = None


@dataclass(frozen=True)
class EncoderInput:
    """One latent kind computed by a TorchScript encoder from a modality's raw records."""

    kind: str
    file: Path
    modality: str
    batch_size: int = 64


@dataclass(frozen=True)
class PhenotypeInput:
    """The phenotype table and what to take from it."""

    file: Path
    format: str
    id_column: str | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    targets: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DecoderInput:
    """A TorchScript decoder from latent kind ``latent`` to modality ``modality``."""

    latent: str
    modality: str
    file: Path


@dataclass(frozen=True)
class RawInput:
    """A table of id → raw file for one modality."""

    modality: str
    records: Path
    id_column: str | None = None
    path_column: str = "path"
    format: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    check: str = "sample"


@dataclass(frozen=True)
class ImportSpec:
    """Everything ``lse import`` reads, resolved and checked."""

    id_column: str | None
    latents: tuple[LatentInput, ...] = ()
    encoders: tuple[EncoderInput, ...] = ()
    phenotypes: PhenotypeInput | None = None
    modalities: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    decoders: tuple[DecoderInput, ...] = ()
    raw: tuple[RawInput, ...] = ()
    name: str = ""
    allow_partial: bool = False
    projections: tuple[str, ...] = SETTINGS.projection_methods
    seed: int = SETTINGS.seed
    crossfit_splits: int = SETTINGS.crossfit_splits
    crossfit_max_train: int = SETTINGS.crossfit_max_train
    source: Path | None = None

    @property
    def kinds(self) -> list[str]:
        """Every latent kind, read or encoded, in spec order."""
        return [x.kind for x in self.latents] + [x.kind for x in self.encoders]


# -- reading --------------------------------------------------------------------------------------
_TOP = {"cohort", "latents", "encoders", "phenotypes", "modalities", "decoders", "raw", "build"}
_COHORT = {"name", "id_column", "allow_partial"}
_BUILD = {"projections", "seed", "crossfit_splits", "crossfit_max_train"}
_LATENT = {"file", "format", "id_column", "columns", "column", "prefix", "ids", "obsm"}
_ENCODER = {"file", "modality", "batch_size"}
_PHENOTYPES = {"file", "format", "id_column", "include", "exclude", "targets", "rename", "columns"}
_PHENOTYPE_COLUMN = {"type", "units", "description", "categories"}
_MODALITY = {"kind", "channel_names", "sampling_rate_hz", "n_samples", "shape", "frame_interval_ms", "units", "description"}
_DECODER = {"latent", "modality", "file"}
_RAW = {"records", "id_column", "path_column", "format", "options", "check"}


def read_spec(path: str | Path) -> ImportSpec:
    """Read and check a TOML import spec; relative paths in it are relative to its folder.

    Raises
    ------
    SpecError
        Naming the spec file, the key and the fix (unknown keys, wrong types, bad names).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file. Write one (see the README's 'Bring your own cohort') or use flags.")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML ({exc}). Fix the line it names.") from None
    return spec_from_mapping(data, base=path.parent, source=path)


def spec_from_mapping(data: Mapping[str, Any], *, base: Path, source: Path | None = None) -> ImportSpec:
    """Check a spec given as a mapping (a parsed TOML file); paths resolve against ``base``."""
    where = str(source) if source else "spec"
    _known(data, _TOP, where, "")
    cohort = _table(data, "cohort", where)
    _known(cohort, _COHORT, where, "cohort.")
    build = _table(data, "build", where)
    _known(build, _BUILD, where, "build.")
    id_column = _opt_str(cohort, "id_column", where, "cohort.")

    latents = []
    for kind, entry, key in _named_tables(data, "latents", _LATENT, where, "latent kind"):
        file = _path(entry, "file", base, where, key, required=True)
        fmt = _format(entry, file, where, key, TABLE_FORMATS)
        ids = _path(entry, "ids", base, where, key)
        if fmt == "npy" and ids is None:
            raise SpecError(f"{where}: {key}ids is missing; a .npy embedding needs a file of ids, one per row (.txt, .csv or .npy).")
        if fmt == "h5ad" and not entry.get("obsm"):
            raise SpecError(f"{where}: {key}obsm is missing; name the .obsm key holding the {kind} embedding (e.g. obsm = \"X_{kind}\").")
        columns = entry.get("columns")
        if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise SpecError(f"{where}: {key}columns must be a list of column names.")
        latents.append(LatentInput(
            kind, file, fmt, _opt_str(entry, "id_column", where, key), tuple(columns) if columns else None,
            _opt_str(entry, "column", where, key), _opt_str(entry, "prefix", where, key), ids,
            _opt_str(entry, "obsm", where, key),
        ))

    encoders = []
    for kind, entry, key in _named_tables(data, "encoders", _ENCODER, where, "latent kind"):
        modality = _opt_str(entry, "modality", where, key)
        if not modality:
            raise SpecError(f"{where}: {key}modality is missing; name the modality whose raw records this encoder reads.")
        batch = entry.get("batch_size", 64)
        if not isinstance(batch, int) or batch < 1:
            raise SpecError(f"{where}: {key}batch_size must be a positive integer, got {batch!r}.")
        encoders.append(EncoderInput(kind, _path(entry, "file", base, where, key, required=True), modality, batch))

    kinds = [x.kind for x in latents] + [x.kind for x in encoders]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise SpecError(f"{where}: latent kind(s) {repeated} are both read ([latents]) and encoded ([encoders]); keep one.")
    if not kinds:
        raise SpecError(f"{where}: no latents. Add a [latents.NAME] table (or --latent NAME=FILE), or an [encoders.NAME] with raw records.")

    phenotypes = None
    if "phenotypes" in data:
        entry = _as_table(data["phenotypes"], where, "phenotypes")
        _known(entry, _PHENOTYPES, where, "phenotypes.")
        file = _path(entry, "file", base, where, "phenotypes.", required=True)
        columns = _as_table(entry.get("columns", {}), where, "phenotypes.columns")
        for name, override in columns.items():
            _known(_as_table(override, where, f"phenotypes.columns.{name}"), _PHENOTYPE_COLUMN, where, f"phenotypes.columns.{name}.")
        rename = _as_table(entry.get("rename", {}), where, "phenotypes.rename")
        if not all(isinstance(v, str) for v in rename.values()):
            raise SpecError(f"{where}: phenotypes.rename maps column names to new names (text).")
        targets = entry.get("targets")
        if targets == "all":
            targets = None
        elif targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
            raise SpecError(f"{where}: phenotypes.targets must be a list of phenotype names, or \"all\".")
        phenotypes = PhenotypeInput(
            file, _format(entry, file, where, "phenotypes.", ("parquet", "csv")), _opt_str(entry, "id_column", where, "phenotypes."),
            _opt_list(entry, "include", where, "phenotypes."), _opt_list(entry, "exclude", where, "phenotypes.") or (),
            tuple(targets) if targets is not None else None, dict(rename), {k: dict(v) for k, v in columns.items()},
        )

    modalities = {}
    for name, entry, _ in _named_tables(data, "modalities", _MODALITY, where, "modality"):
        if entry.get("kind") not in ("signal", "image_sequence"):
            raise SpecError(f"{where}: modalities.{name}.kind must be \"signal\" or \"image_sequence\", got {entry.get('kind')!r}.")
        modalities[name] = dict(entry)

    decoders = []
    raw_decoders = data.get("decoders", [])
    if not isinstance(raw_decoders, list):
        raise SpecError(f"{where}: decoders is a list of tables: write each as [[decoders]] with latent, modality and file.")
    for i, entry in enumerate(raw_decoders):
        key = f"decoders[{i}]."
        entry = _as_table(entry, where, key[:-1])
        _known(entry, _DECODER, where, key)
        latent, modality = _opt_str(entry, "latent", where, key), _opt_str(entry, "modality", where, key)
        if latent not in kinds:
            raise SpecError(f"{where}: {key}latent is {latent!r}; the latent kinds are {kinds}.")
        if modality not in modalities:
            raise SpecError(f"{where}: {key}modality is {modality!r}, which no [modalities.NAME] table declares "
                            f"(declared: {list(modalities) or 'none'}). Declare its kind and shape.")
        decoders.append(DecoderInput(latent, modality, _path(entry, "file", base, where, key, required=True)))
    pairs = [(d.latent, d.modality) for d in decoders]
    if len(set(pairs)) != len(pairs):
        raise SpecError(f"{where}: two decoders from the same latent kind to the same modality; keep one per pair.")

    raw = []
    for name, entry, key in _named_tables(data, "raw", _RAW, where, "modality"):
        fmt = _opt_str(entry, "format", where, key)
        if fmt is not None and fmt not in RECORD_FORMATS:
            raise SpecError(f"{where}: {key}format is {fmt!r}; use one of {', '.join(RECORD_FORMATS)} (or leave it out to infer it).")
        check = entry.get("check", "sample")
        if check not in ("sample", "all"):
            raise SpecError(f"{where}: {key}check must be \"sample\" (read a few files at import) or \"all\".")
        raw.append(RawInput(
            name, _path(entry, "records", base, where, key, required=True), _opt_str(entry, "id_column", where, key),
            _opt_str(entry, "path_column", where, key) or "path", fmt,
            dict(_as_table(entry.get("options", {}), where, f"{key}options")), check,
        ))
    for encoder in encoders:
        if encoder.modality not in {r.modality for r in raw}:
            raise SpecError(f"{where}: encoders.{encoder.kind} reads modality {encoder.modality!r}, which has no "
                            f"[raw.{encoder.modality}] records table. Add one.")
        if encoder.modality not in modalities:
            raise SpecError(f"{where}: encoders.{encoder.kind} reads modality {encoder.modality!r}; declare its shape in "
                            f"[modalities.{encoder.modality}] (the encoder's input shape).")

    projections = build.get("projections", list(SETTINGS.projection_methods))
    if not isinstance(projections, list) or not projections:
        raise SpecError(f"{where}: build.projections must be a non-empty list such as [\"pca\", \"umap\"].")
    for key_name in ("seed", "crossfit_splits", "crossfit_max_train"):
        if key_name in build and (not isinstance(build[key_name], int) or build[key_name] < 0):
            raise SpecError(f"{where}: build.{key_name} must be a non-negative integer.")
    allow_partial = cohort.get("allow_partial", False)
    if not isinstance(allow_partial, bool):
        raise SpecError(f"{where}: cohort.allow_partial must be true or false.")
    return ImportSpec(
        id_column=id_column, latents=tuple(latents), encoders=tuple(encoders), phenotypes=phenotypes,
        modalities=modalities, decoders=tuple(decoders), raw=tuple(raw), name=str(cohort.get("name", "")),
        allow_partial=allow_partial, projections=tuple(projections), seed=int(build.get("seed", SETTINGS.seed)),
        crossfit_splits=int(build.get("crossfit_splits", SETTINGS.crossfit_splits)),
        crossfit_max_train=int(build.get("crossfit_max_train", SETTINGS.crossfit_max_train)), source=source,
    )


def spec_from_flags(
    latents: list[str], *, phenotypes: str | None = None, id_column: str | None = None, base: Path | None = None
) -> ImportSpec:
    """The spec the simple flags describe: ``--latent NAME=FILE`` (repeatable), ``--phenotypes``, ``--id-column``."""
    data: dict[str, Any] = {"cohort": {}, "latents": {}}
    if id_column:
        data["cohort"]["id_column"] = id_column
    for item in latents:
        kind, sep, file = item.partition("=")
        if not sep or not kind or not file:
            raise SpecError(f"--latent {item!r}: write NAME=FILE, e.g. --latent fused=embeddings/fused.parquet.")
        if kind in data["latents"]:
            raise SpecError(f"--latent {kind}: given twice; one file per latent kind.")
        data["latents"][kind] = {"file": file}
    if phenotypes:
        data["phenotypes"] = {"file": phenotypes}
    return spec_from_mapping(data, base=base or Path.cwd())


# -- checks ---------------------------------------------------------------------------------------
def _known(entry: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    for key in entry:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else f" Known keys: {', '.join(sorted(allowed))}."
            raise SpecError(f"{where}: unknown key {prefix}{key}.{hint}")


def _named_tables(data: Mapping[str, Any], section: str, allowed: set[str], where: str, what: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``(name, entry, "section.name.")`` for each ``[section.NAME]`` table, its name and keys checked."""
    for name, entry in _table(data, section, where).items():
        _check_name(name, where, f"{section}.{name}", what)
        entry = _as_table(entry, where, f"{section}.{name}")
        _known(entry, allowed, where, f"{section}.{name}.")
        yield name, entry, f"{section}.{name}."


def _as_table(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {key} must be a table ([{key}] with keys under it), got {type(value).__name__}.")
    return value


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    return _as_table(data.get(key, {}), where, key)


def _opt_str(entry: Mapping[str, Any], key: str, where: str, prefix: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{where}: {prefix}{key} must be text, got {value!r}.")
    return value


def _opt_list(entry: Mapping[str, Any], key: str, where: str, prefix: str) -> tuple[str, ...] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise SpecError(f"{where}: {prefix}{key} must be a list of column names.")
    return tuple(value)


def _path(entry: Mapping[str, Any], key: str, base: Path, where: str, prefix: str, *, required: bool = False) -> Path | None:
    value = _opt_str(entry, key, where, prefix)
    if value is None:
        if required:
            raise SpecError(f"{where}: {prefix}{key} is missing; give the file's path (relative to the spec's folder).")
        return None
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _format(entry: Mapping[str, Any], file: Path, where: str, prefix: str, allowed: tuple[str, ...]) -> str:
    fmt = _opt_str(entry, "format", where, prefix) or _SUFFIXES.get(file.suffix.lower())
    if fmt not in allowed:
        raise SpecError(
            f"{where}: {prefix}file {file.name}: cannot read {'format ' + repr(fmt) if fmt else 'this kind of file'} "
            f"here; supported: {', '.join(allowed)}. Convert it, or set {prefix}format if the extension misleads."
        )
    return fmt


def _check_name(name: str, where: str, key: str, what: str) -> None:
    if not _NAME.fullmatch(name):
        raise SpecError(
            f"{where}: {key}: {what} names start with a letter and hold letters, digits, '_' or '-' "
            f"(at most 32); {name!r} does not. Rename it in the spec."
        )
