"""The ``lse`` command: synthesise, train, embed, build and serve cohorts."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from lse_panel.cli_validation import (
    LineParser,
    MriShapeAction,
    allowed_origin,
    cookie_secret,
    dask_cluster,
    existing_directory,
    existing_file,
    export_file,
    fraction,
    host_address,
    integer,
    oauth_encryption_key,
    output_directory,
    output_file,
    password_file,
    port,
    redirect_uri,
)
from lse_panel.config import REPO_ROOT, SETTINGS



def _cmd_synth(args: argparse.Namespace) -> int:
    from lse_panel.build import synthesise_bundle

    start = time.perf_counter()
    path = synthesise_bundle(
        args.out,
        n_subjects=args.subjects,
        seed=args.seed,
        mri_shape=tuple(args.mri_shape),
        overwrite=args.overwrite,
        progress=True,
    )
    print(f"wrote {args.subjects:,} subjects to {path} in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from lse_panel.model.training import train_model

    kwargs = {"seed": args.seed, "mri_shape": tuple(args.mri_shape), "progress": True}
    if args.bundle is not None:
        kwargs["bundle"] = args.bundle
    for name in ("n_train", "steps", "latent_dim", "batch_size"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    path = train_model(args.out, **kwargs)
    print(f"model written to {path}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from lse_panel.model.embedding import embed_bundle

    figures = embed_bundle(args.bundle, args.model, batch_size=args.batch_size, progress=True)
    print(figures)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from lse_panel.build import build_cohort

    build_cohort(
        args.out,
        n_subjects=args.subjects,
        seed=args.seed,
        model=args.model,
        projections=tuple(args.projections),
        until=args.until,
        progress=True,
        partitions=args.partitions,
        dask=args.dask,
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from lse_panel.serve import run_serve

    return run_serve(args)


def _cmd_subgroups(args: argparse.Namespace) -> int:
    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.cohort.subgroups import SubgroupStore

    store = SubgroupStore(open_bundle(args.bundle))
    if args.action == "list":
        for subgroup in store.list():
            print(f"{subgroup.name}\t{subgroup.n}\t{subgroup.colour}")
        return 0
    if not args.name or not args.out:
        raise ValueError("`lse subgroups export` needs a subgroup NAME and --out FILE (.csv or .parquet).")
    path = store.export(args.name, args.out)
    print(f"wrote subgroup {args.name!r} ({store.get(args.name).n:,} subjects) to {path}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lse_panel.importing import finish_import, import_cohort, read_spec, spec_from_flags

    if args.finish:
        finish_import(args.out, until=args.until, progress=True)
        return 0
    if args.spec and (args.latent or args.phenotypes):
        raise ValueError("give either --spec FILE or --latent/--phenotypes flags, not both: put everything in the spec.")
    if args.spec:
        spec = read_spec(args.spec)
        if args.id_column:
            spec = replace(spec, id_column=args.id_column)
    elif args.latent:
        spec = spec_from_flags(args.latent, phenotypes=args.phenotypes, id_column=args.id_column)
    else:
        raise ValueError("nothing to import: give --spec FILE, or at least one --latent NAME=FILE (see `lse import --help`).")
    if args.allow_partial:
        spec = replace(spec, allow_partial=True)
    import_cohort(spec, args.out, overwrite=args.overwrite, until=args.until, progress=True, dask=args.dask,
                  partitions=args.partitions)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lse_panel.importing.export import export_anndata

    path = export_anndata(args.bundle, args.anndata)
    print(f"wrote {path}")
    return 0


def _cmd_example_cohort(args: argparse.Namespace) -> int:
    from lse_panel.importing.example import write_example_cohort

    spec = write_example_cohort(args.out, n_subjects=args.subjects, n_records=args.records)
    print(f"wrote an example cohort to {args.out}; import it with:\n  lse import --spec {spec} --out data/example")
    return 0


def _parse_bins(texts: list[str]) -> dict:
    """``--bins age=45,55,65`` or ``--bins egfr=60,90:mL/min`` → {name: Bins}."""
    from lse_panel.analysis.slices import Bins

    out = {}
    for text in texts:
        name, sep, rest = text.partition("=")
        cuts, _, units = rest.partition(":")
        try:
            values = tuple(float(c) for c in cuts.split(",") if c.strip())
        except ValueError:
            values = ()
        if not sep or not name.strip() or not values:
            raise ValueError(f"--bins {text!r}: write NAME=CUT,CUT,... (optionally :UNITS), e.g. --bins age=45,55,65:years.")
        out[name.strip()] = Bins(tuple(sorted(values)), units.strip())
    return out


def _slices_table(frame) -> str:
    """The found slices as a readable text table: rule, size, loss in and out, gap with its interval, q, each latent's metric."""
    import pandas as pd

    if frame.empty:
        return "no slice found"
    shown = pd.DataFrame({
        "latent": frame["latent"],
        "#": frame["rank"],
        "rule": [r if len(r) <= 60 else r[:57] + "..." for r in frame["rule"]],
        "n": frame["n"],
        f"{frame['loss'].iloc[0]} (slice vs rest)": [f"{a:.3g} vs {b:.3g}" for a, b in zip(frame["loss_slice"], frame["loss_rest"])],
        "gap [interval]": [
            f"{g:+.3g} [{lo:+.3g}, {hi:+.3g}]" for g, lo, hi in zip(frame["gap"], frame["gap_ci_low"], frame["gap_ci_high"])
        ],
        "q": [f"{q:.1e}" for q in frame["q_value"]],
    })
    metric = "r2" if frame.attrs.get("task") == "regression" else "auroc"
    for column in frame.columns:
        if column.startswith(f"{metric}_") and not column.startswith(f"{metric}_rest_"):
            shown[f"{metric} {column[len(metric) + 1:]}"] = [f"{v:.2f}" for v in frame[column]]
    return shown.to_string(index=False)


def _cmd_slices(args: argparse.Namespace) -> int:
    import pandas as pd
    from tqdm import tqdm

    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.cohort.slices import find_failures

    if args.out is not None and args.out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out {args.out}: write a .csv or a .parquet file.")
    if not 0 < args.fdr < 1:
        raise ValueError(f"--fdr {args.fdr}: a false discovery rate lies strictly between 0 and 1, e.g. 0.05.")
    if args.top < 1:
        raise ValueError(f"--top {args.top}: show at least one slice.")
    bins = _parse_bins(args.bins)
    cohort = open_bundle(args.bundle)
    start = time.perf_counter()
    if args.latent == "all":
        kinds = [k for k, per in cohort.predictions.items() if args.target in per] or ["all"]
    else:
        kinds = [args.latent]
    frames, tried = [], {}
    for kind in tqdm(kinds, desc=f"searching {args.target}", unit="latent", disable=len(kinds) < 2):
        frame = find_failures(
            cohort, args.target, latent=kind, max_conditions=args.max_conditions, fdr=args.fdr, top=args.top,
            include_target=args.include_target, projections=None if args.no_regions else "all",
            only_significant=not args.all, loss=args.loss, bins=bins, given_target=args.given_target,
        )
        frames.append(frame)
        tried.update(frame.attrs["tried"])
    result = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    result.attrs = {**frames[0].attrs, "tried": tried}
    print(_slices_table(result))
    counts = ", ".join(f"{kind}: {sum(t.values()):,}" for kind, t in tried.items())
    print(f"{len(result)} slice(s) at FDR {args.fdr:g}; slices tried ({counts}); {time.perf_counter() - start:.1f} s")
    if args.out is not None:
        table = result.drop(columns=["condition"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".csv":
            table.to_csv(args.out, index=False)
        else:
            table.to_parquet(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.sizes:
        command = [sys.executable, str(REPO_ROOT / "tests" / "benchmarks" / "bench_scale.py"), "--sizes",
                   *map(str, args.sizes), "--data", str(args.data)]  # fmt: skip
        if args.json is not None:
            command += ["--json", str(args.json)]
        if args.base is not None:
            command += ["--base", str(args.base)]
        command += ["--make", args.make]
        return subprocess.call(command)
    # The scale table builds cohorts of millions: it runs only when asked for (--sizes).
    scripts = sorted(s for s in (REPO_ROOT / "tests" / "benchmarks").glob("bench_*.py") if s.name != "bench_scale.py")
    if args.only:
        scripts = [s for s in scripts if args.only in s.name]
    status = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        status |= subprocess.call([sys.executable, str(script)])
    return status


def add_cluster_options(p: argparse.ArgumentParser, *, partitions: bool) -> None:
    """``--dask`` (and ``--partitions``) for the commands that can run on a Dask cluster."""
    p.add_argument(
        "--dask", type=dask_cluster, metavar="local|ADDRESS",
        help="run on a Dask cluster: 'local' starts one sized to this machine, an address "
        "(tcp://host:8786) joins a running scheduler (default: everything in this process)",
    )
    if partitions:
        p.add_argument(
            "--partitions", type=integer(1, 100_000, example=40), metavar="N",
            help="lay the bundle out as N-part Parquet tables, which a cluster reads part by part "
            "(default: one memory-mapped .npy per column)",
        )


def build_parser() -> argparse.ArgumentParser:
    from lse_panel.analysis.projection import PROJECTION_METHODS
    from lse_panel.serve import OAUTH_PROVIDERS, PRIVACY_MODES

    parser = LineParser(prog="lse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    subjects = integer(1, SETTINGS.max_subjects, example=20_000)
    seed = integer(0, 2**32 - 1)  # what numpy's and scikit-learn's random_state accept

    def add_shape(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mri-shape", nargs=3, action=MriShapeAction, default=list(SETTINGS.mri_shape),
            metavar=("FRAMES", "HEIGHT", "WIDTH"),
            help="MRI cine shape: frames 1-100, height and width 8-256 (default: %(default)s)",
        )

    p = sub.add_parser("synth", help="write a synthetic cohort bundle (phenotypes; raw data is regenerated on demand)")
    p.add_argument("--subjects", type=subjects, default=SETTINGS.demo_subjects, help="cohort size (default: %(default)s)")
    p.add_argument("--seed", type=seed, default=SETTINGS.seed, help="generator seed (default: %(default)s)")
    p.add_argument("--out", type=output_directory, required=True, help="bundle directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    add_shape(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train the cross-modal autoencoder on synthetic data")
    p.add_argument("--out", type=output_directory, required=True, help="model directory (model.pt, config.json, MODEL_CARD.md)")
    p.add_argument("--bundle", type=existing_directory,
                   help="(optional) train on this bundle's subjects instead of fresh synthetic ones")
    p.add_argument("--seed", type=seed, default=SETTINGS.seed, help="training seed (default: %(default)s)")
    p.add_argument("--n-train", dest="n_train", type=integer(64, SETTINGS.max_subjects, example=32_000), help="training subjects")
    p.add_argument("--steps", type=integer(1, 1_000_000, example=1_600),
                   help="optimiser steps (default: the demo model's 1,600)")
    p.add_argument("--latent-dim", dest="latent_dim", type=integer(2, 1024, example=64), help="latent size per modality")
    # Batch norm needs two subjects per batch while training.
    p.add_argument("--batch-size", dest="batch_size", type=integer(2, 4096, example=128), help="batch size")
    add_shape(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="encode every subject of a bundle (ecg, mri and fused latents)")
    p.add_argument("--bundle", type=existing_directory, required=True, help="bundle directory")
    p.add_argument("--model", type=existing_directory, default=SETTINGS.demo_model,
                   help="model directory (default: %(default)s)")
    p.add_argument("--batch-size", type=integer(1, 65_536, example=SETTINGS.embed_batch_size),
                   default=SETTINGS.embed_batch_size, help="subjects per batch (default: %(default)s)")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("build", help="from nothing to a servable bundle: synthesise, embed, cross-fit, project")
    p.add_argument("--subjects", type=subjects, default=SETTINGS.demo_subjects, help="cohort size (default: %(default)s)")
    p.add_argument("--seed", type=seed, default=SETTINGS.seed, help="seed (default: %(default)s)")
    p.add_argument("--out", type=output_directory, default=SETTINGS.demo_bundle, help="bundle directory (default: %(default)s)")
    p.add_argument("--model", type=existing_directory, default=SETTINGS.demo_model,
                   help="model directory (default: %(default)s)")
    p.add_argument(
        "--projections", nargs="+", choices=PROJECTION_METHODS, default=list(SETTINGS.projection_methods),
        help="projection methods (default: %(default)s)",
    )
    p.add_argument(
        "--until", choices=["servable", "complete"], default="complete",
        help="stop once the app can serve the bundle, or compute every projection (default: %(default)s)",
    )
    add_cluster_options(p, partitions=True)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("serve", help="serve the explorer on a bundle (wraps `panel serve`)")
    p.add_argument("bundle", type=Path, nargs="?", default=SETTINGS.demo_bundle, help="bundle directory (default: %(default)s)")
    p.add_argument("--port", type=port, default=SETTINGS.port, help="port (default: %(default)s)")
    p.add_argument("--address", type=host_address, default=host_address(SETTINGS.address),
                   help="address to bind: an IP or a host name; 0.0.0.0 for every interface "
                        "(default: %(default)s, this machine only; other addresses need a login)")
    p.add_argument("--num-procs", type=integer(0, 64, example=2), default=SETTINGS.num_procs,
                   help="server processes, 0 for one per core (default: %(default)s)")
    p.add_argument("--privacy", choices=PRIVACY_MODES,
                   help="aggregate: no individual-level view reaches the browser; full: subject views and id "
                        "exports too (default: full for synthetic cohorts, aggregate otherwise)")
    p.add_argument("--build-if-missing", action="store_true",
                   help="build the bundle first if it does not exist (up to what the app needs; the rest in the background)")
    p.add_argument("--subjects", type=subjects, default=SETTINGS.demo_subjects, help="cohort size if building (default: %(default)s)")
    p.add_argument("--seed", type=seed, default=SETTINGS.seed, help="seed if building (default: %(default)s)")
    p.add_argument("--model", type=existing_directory, default=SETTINGS.demo_model,
                   help="model if building (default: %(default)s)")
    p.add_argument("--show", action="store_true", help="open a browser")
    add_cluster_options(p, partitions=False)
    access = p.add_argument_group("access (README.md, section Security)")
    access.add_argument("--allow-origin", action="append", type=allowed_origin, metavar="HOST[:PORT]",
                        help="a public name browsers use to reach the app (repeatable), e.g. behind a proxy")
    access.add_argument("--basic-auth", type=password_file, metavar="FILE",
                        help='log in with a JSON file {"user": "password", ...}, readable by its owner only')
    access.add_argument("--cookie-secret", type=cookie_secret, metavar="SECRET",
                        help="signs login cookies, 32+ characters (default: $LSE_COOKIE_SECRET, else a new one per run)")
    access.add_argument("--oauth-provider", choices=OAUTH_PROVIDERS, help="log in through this OAuth provider")
    access.add_argument("--oauth-key", metavar="CLIENT_ID", help="the OAuth client id")
    access.add_argument("--oauth-secret", metavar="CLIENT_SECRET",
                        help="the OAuth client secret (default: $PANEL_OAUTH_SECRET)")
    access.add_argument("--oauth-redirect-uri", type=redirect_uri, metavar="URL",
                        help="where the provider sends users back, e.g. https://lse.example.org/login")
    access.add_argument("--oauth-encryption-key", type=oauth_encryption_key, metavar="KEY",
                        help="encrypts OAuth tokens in cookies (`panel oauth-secret`; default: a new one per run)")
    access.add_argument("--ssl-certfile", type=existing_file, metavar="FILE", help="serve HTTPS with this certificate")
    access.add_argument("--ssl-keyfile", type=existing_file, metavar="FILE", help="and this private key")
    access.add_argument("--insecure-network", action="store_true",
                        help="serve a network address without a login (synthetic data only; prints a warning)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("subgroups", help="list a bundle's saved subgroups, or export one's ids and phenotypes")
    p.add_argument("action", choices=["list", "export"], help="what to do")
    p.add_argument("bundle", type=existing_directory, help="bundle directory")
    p.add_argument("name", nargs="?", help="subgroup to export")
    p.add_argument("--out", type=export_file, help="file to write: .csv or .parquet")
    p.set_defaults(func=_cmd_subgroups)

    p = sub.add_parser("slices", help="find the subgroups where the embedding predicts a phenotype worst")
    p.add_argument("bundle", type=existing_directory, help="bundle directory (with cross-fitted predictions)")
    p.add_argument("--target", required=True, help="phenotype whose predictions are judged, e.g. lvef")
    p.add_argument("--latent", default="fused", help="latent kind to search, or 'all' (default: %(default)s)")
    p.add_argument("--max-conditions", dest="max_conditions", type=int, choices=[1, 2, 3],
                   default=SETTINGS.slice_max_conditions, help="conditions per phenotype rule (default: %(default)s)")
    p.add_argument("--fdr", type=fraction, default=SETTINGS.slice_fdr, help="false discovery rate (default: %(default)s)")
    p.add_argument("--top", type=integer(1, 10_000, example=SETTINGS.slice_top), default=SETTINGS.slice_top,
                   help="slices per latent kind (default: %(default)s)")
    p.add_argument("--out", type=export_file, help="write the table to this .csv or .parquet file")
    p.add_argument("--loss", choices=["absolute", "squared", "brier", "log"],
                   help="per-subject loss (default: absolute for regression, brier for classification)")
    p.add_argument("--bins", action="append", default=[], metavar="NAME=C1,C2[:UNITS]",
                   help="extra clinical cut points for a phenotype (repeatable)")
    p.add_argument("--include-target", dest="include_target", action="store_true", help="also slice on the target itself")
    p.add_argument("--given-target", dest="given_target", action="store_true",
                   help="search the loss beyond what subjects with a similar target value incur")
    p.add_argument("--no-regions", dest="no_regions", action="store_true", help="skip the map-region search")
    p.add_argument("--all", action="store_true", help="show the best slices even when not significant")
    p.set_defaults(func=_cmd_slices)

    add_import_parsers(sub)

    p = sub.add_parser("bench", help="run the benchmark scripts, or the scale table (--sizes), and print their figures")
    p.add_argument("--scripts", action="store_true", help="run every tests/benchmarks/bench_*.py (the default without --sizes)")
    p.add_argument("--only", help="with --scripts: run only scripts whose name contains this")
    p.add_argument("--sizes", type=integer(1_000, SETTINGS.max_subjects, example=500_000), nargs="+", metavar="N",
                   help="the scale table (tests/benchmarks/bench_scale.py) at these cohort sizes, e.g. 500000 2000000 10000000")
    p.add_argument("--data", type=Path, default=Path("data"), help="where --sizes builds or finds its bundles (default: %(default)s)")
    p.add_argument("--json", type=output_file(".json"), default=None, help="also write the --sizes table as JSON here")
    p.add_argument("--base", type=existing_directory, help="with --sizes: a built bundle, reused at its size and "
                   "tiled for the sizes --data lacks (default: data/demo when it exists)")
    p.add_argument("--make", choices=["tile", "build"], default="tile",
                   help="with --sizes: how a missing size is made: tiled from --base, or built with `lse build` (hours at 10M)")
    p.set_defaults(func=_cmd_bench)
    return parser


def add_import_parsers(sub: argparse._SubParsersAction) -> None:
    """``lse import``, ``lse export`` and ``lse example-cohort``: bringing a researcher's cohort in and out."""
    p = sub.add_parser(
        "import", help="import your cohort: embeddings, phenotypes, raw records, TorchScript decoders (see the README)",
        description="Import a cohort from a TOML spec (--spec) or, for the simple case, flags. Embeddings: Parquet, "
        "CSV, .npy (+ id file) or AnnData .h5ad; phenotypes: CSV or Parquet. Then cross-fits the targets and maps "
        "every latent kind, resumably, like `lse build`.",
    )
    p.add_argument("--spec", type=existing_file, help="the import spec (TOML); paths in it are relative to its folder")
    p.add_argument("--latent", action="append", default=[], metavar="NAME=FILE",
                   help="an embedding table for latent kind NAME (repeat for each kind)")
    p.add_argument("--phenotypes", help="phenotype table (CSV or Parquet)")
    p.add_argument("--id-column", dest="id_column", help="the subject id column in every table")
    p.add_argument("--out", type=output_directory, required=True, help="bundle directory to write")
    p.add_argument("--allow-partial", dest="allow_partial", action="store_true",
                   help="keep the subjects every input has instead of refusing inputs with different subjects")
    p.add_argument("--overwrite", action="store_true", help="replace a bundle imported from other inputs")
    p.add_argument("--until", choices=["servable", "complete"], default="complete",
                   help="stop once the app can serve the bundle, or compute every map (default: %(default)s)")
    p.add_argument("--finish", action="store_true", help="only finish an imported bundle's remaining maps (no inputs read)")
    add_cluster_options(p, partitions=True)  # encoding raw records runs per partition there; see import_cohort
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", help="write a bundle as AnnData (.h5ad) for scanpy and friends")
    p.add_argument("bundle", type=existing_directory, help="bundle directory")
    p.add_argument("--anndata", type=output_file(".h5ad"), required=True, help="the .h5ad file to write")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("example-cohort", help="write an example cohort in user-style files (Parquet, CSV, .npy, "
                       "AnnData, WFDB, DICOM, NIfTI, TorchScript) with a commented cohort.toml")
    p.add_argument("--out", type=output_directory, required=True, help="folder to write")
    # Every subject's raw ECG and MRI are generated in memory (147 kB each): 10,000 take 1.5 GB.
    p.add_argument("--subjects", type=integer(100, 10_000, example=2_000), default=2_000,
                   help="subjects, 100-10,000 (default: %(default)s)")
    p.add_argument("--records", type=integer(0, 1_000, example=40), default=40,
                   help="subjects with raw files, 0-1,000 (default: %(default)s)")
    p.set_defaults(func=_cmd_example_cohort)


def main(argv: list[str] | None = None) -> int:
    """Run one ``lse`` command; returns the exit status (2, with one ``error:`` line, for bad input)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a refused argument (2, message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError) as exc:  # BundleError, ModelError, unknown names, unwritable paths
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished steps are kept and a rerun resumes.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
