"""The ``lse`` command: synthesise, train, embed, build and serve cohorts."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def serve_command(args: argparse.Namespace) -> list[str]:
    """The ``panel serve`` command line that ``lse serve`` runs (kept separate so tests can read it)."""
    app = REPO_ROOT / "apps" / "explorer.py"
    setup = REPO_ROOT / "apps" / "setup.py"
    command = [
        sys.executable, "-m", "panel", "serve", str(app),
        "--setup", str(setup),
        "--address", args.address,
        "--port", str(args.port),
        "--num-procs", str(args.num_procs),
        "--allow-websocket-origin", f"{'localhost' if args.address == '127.0.0.1' else args.address}:{args.port}",
        "--allow-websocket-origin", f"{args.address}:{args.port}",
        "--args", str(Path(args.bundle).resolve()),
    ]
    if args.show:
        command.insert(5, "--show")
    return command


def _build_status(bundle: Path) -> str | None:
    """The bundle's ``build.status``, or None when there is no bundle."""
    from lse_panel.cohort.bundle import read_manifest

    if not (bundle / "manifest.json").exists():
        return None
    return str(read_manifest(bundle).get("build", {}).get("status", "complete"))


def finish_build_command(bundle: Path) -> list[str]:
    """The ``lse build`` that finishes a servable bundle's projections, with the settings it was built with."""
    from lse_panel.build import recorded_build_settings

    settings = recorded_build_settings(bundle)
    command = [sys.executable, "-m", "lse_panel.cli", "build", "--out", str(bundle)]
    for option, key in (("--subjects", "n_subjects"), ("--seed", "seed"), ("--model", "model")):
        if key in settings:
            command += [option, str(settings[key])]
    if settings.get("projections"):
        command += ["--projections", *map(str, settings["projections"])]
    return command


def _start_finisher(bundle: Path) -> subprocess.Popen | None:
    """Run the rest of a servable bundle's build in the background, its output in ``bundle/build.log``."""
    log = bundle / "build.log"
    try:
        with open(log, "ab") as fh:
            finisher = subprocess.Popen(finish_build_command(bundle), stdout=fh, stderr=subprocess.STDOUT)
    except OSError as exc:
        print(f"warning: could not start the background build ({exc}); run `lse build --out {bundle}` to finish it.",
              file=sys.stderr)
        return None
    print(f"finishing the remaining projections in the background (progress: {log})")
    return finisher


def _cmd_serve(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    status = _build_status(bundle)
    if status in (None, "in_progress"):
        if not args.build_if_missing:
            what = "is not a built bundle" if status is None else "is half-built"
            print(
                f"error: {bundle} {what}. Build it with `lse build --out {bundle}`, or pass --build-if-missing.",
                file=sys.stderr,
            )
            return 2
        print(f"{bundle} is {'missing' if status is None else 'half-built'}: building the cohort "
              f"({args.subjects:,} subjects) up to what the app needs first.")
        from lse_panel.build import build_cohort

        build_cohort(bundle, n_subjects=args.subjects, seed=args.seed, model=args.model, until="servable", progress=True)
        status = _build_status(bundle)
    # The remaining projections are computed while the app runs; it shows them when they land.
    finisher = _start_finisher(bundle) if status == "servable" and args.build_if_missing else None
    command = serve_command(args)
    env = dict(os.environ, LSE_BUNDLE=str(bundle.resolve()))
    client = None
    if args.dask:
        # One cluster for every `panel serve` process: started here for 'local', joined otherwise.
        from lse_panel.cohort.dask_backend import connect

        client = connect(args.dask)
        env["LSE_DASK"] = client.scheduler.address
        print(f"data on the Dask cluster at {client.scheduler.address} ({len(client.scheduler_info()['workers'])} workers)")
    print("serving:", shlex.join(command))
    print(f"open http://{args.address}:{args.port}/explorer")
    # SIGTERM (e.g. `kill`, a container stop) unwinds like Ctrl-C, so no child is left running.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    server = subprocess.Popen(command, env=env)
    try:
        return server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in (server, finisher):
            if child is not None and child.poll() is None:
                child.terminate()  # the build resumes where it stopped on the next `lse serve --build-if-missing`
        if client is not None and args.dask == "local":
            client.cluster.close()
            client.close()


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_scale(p: argparse.ArgumentParser, *, partitions: bool) -> None:
        p.add_argument(
            "--dask", metavar="local|ADDRESS",
            help="run on a Dask cluster: 'local' starts one sized to this machine, an address "
            "(tcp://host:8786) joins a running scheduler (default: everything in this process)",
        )
        if partitions:
            p.add_argument(
                "--partitions", type=int, metavar="N",
                help="lay the bundle out as N-part Parquet tables, which a cluster reads part by part "
                "(default: one memory-mapped .npy per column)",
            )

    def add_shape(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mri-shape", type=int, nargs=3, default=list(SETTINGS.mri_shape),
            metavar=("FRAMES", "HEIGHT", "WIDTH"), help="MRI cine shape (default: %(default)s)",
        )

    p = sub.add_parser("synth", help="write a synthetic cohort bundle (phenotypes; raw data is regenerated on demand)")
    p.add_argument("--subjects", type=int, default=SETTINGS.demo_subjects, help="cohort size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SETTINGS.seed, help="generator seed (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    add_shape(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train the cross-modal autoencoder on synthetic data")
    p.add_argument("--out", type=Path, required=True, help="model directory (model.pt, config.json, MODEL_CARD.md)")
    p.add_argument("--bundle", type=Path, help="(optional) train on this bundle's subjects instead of fresh synthetic ones")
    p.add_argument("--seed", type=int, default=SETTINGS.seed, help="training seed (default: %(default)s)")
    p.add_argument("--n-train", dest="n_train", type=int, help="training subjects")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the demo model's 1,600)")
    p.add_argument("--latent-dim", dest="latent_dim", type=int, help="latent size per modality")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="batch size")
    add_shape(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="encode every subject of a bundle (ecg, mri and fused latents)")
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    p.add_argument("--model", type=Path, default=SETTINGS.demo_model, help="model directory (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=SETTINGS.embed_batch_size, help="subjects per batch (default: %(default)s)")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("build", help="from nothing to a servable bundle: synthesise, embed, cross-fit, project")
    p.add_argument("--subjects", type=int, default=SETTINGS.demo_subjects, help="cohort size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SETTINGS.seed, help="seed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=SETTINGS.demo_bundle, help="bundle directory (default: %(default)s)")
    p.add_argument("--model", type=Path, default=SETTINGS.demo_model, help="model directory (default: %(default)s)")
    p.add_argument(
        "--projections", nargs="+", default=list(SETTINGS.projection_methods),
        help="projection methods (default: %(default)s)",
    )
    p.add_argument(
        "--until", choices=["servable", "complete"], default="complete",
        help="stop once the app can serve the bundle, or compute every projection (default: %(default)s)",
    )
    add_scale(p, partitions=True)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("serve", help="serve the explorer on a bundle (wraps `panel serve`)")
    p.add_argument("bundle", type=Path, nargs="?", default=SETTINGS.demo_bundle, help="bundle directory (default: %(default)s)")
    p.add_argument("--port", type=int, default=SETTINGS.port, help="port (default: %(default)s)")
    p.add_argument("--address", default=SETTINGS.address, help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--num-procs", type=int, default=SETTINGS.num_procs, help="server processes (default: %(default)s)")
    p.add_argument("--build-if-missing", action="store_true",
                   help="build the bundle first if it does not exist (up to what the app needs; the rest in the background)")
    p.add_argument("--subjects", type=int, default=SETTINGS.demo_subjects, help="cohort size if building (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SETTINGS.seed, help="seed if building (default: %(default)s)")
    p.add_argument("--model", type=Path, default=SETTINGS.demo_model, help="model if building (default: %(default)s)")
    p.add_argument("--show", action="store_true", help="open a browser")
    add_scale(p, partitions=False)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("subgroups", help="list a bundle's saved subgroups, or export one's ids and phenotypes")
    p.add_argument("action", choices=["list", "export"], help="what to do")
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument("name", nargs="?", help="subgroup to export")
    p.add_argument("--out", type=Path, help="file to write: .csv or .parquet")
    p.set_defaults(func=_cmd_subgroups)

    p = sub.add_parser("slices", help="find the subgroups where the embedding predicts a phenotype worst")
    p.add_argument("bundle", type=Path, help="bundle directory (with cross-fitted predictions)")
    p.add_argument("--target", required=True, help="phenotype whose predictions are judged, e.g. lvef")
    p.add_argument("--latent", default="fused", help="latent kind to search, or 'all' (default: %(default)s)")
    p.add_argument("--max-conditions", dest="max_conditions", type=int, choices=[1, 2, 3],
                   default=SETTINGS.slice_max_conditions, help="conditions per phenotype rule (default: %(default)s)")
    p.add_argument("--fdr", type=float, default=SETTINGS.slice_fdr, help="false discovery rate (default: %(default)s)")
    p.add_argument("--top", type=int, default=SETTINGS.slice_top, help="slices per latent kind (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the table to this .csv or .parquet file")
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

    p = sub.add_parser("bench", help="run the benchmark scripts, or the scale table (--sizes), and print their figures")
    p.add_argument("--scripts", action="store_true", help="run every tests/benchmarks/bench_*.py (the default without --sizes)")
    p.add_argument("--only", help="with --scripts: run only scripts whose name contains this")
    p.add_argument("--sizes", type=int, nargs="+", metavar="N",
                   help="the scale table (tests/benchmarks/bench_scale.py) at these cohort sizes, e.g. 500000 2000000 10000000")
    p.add_argument("--data", type=Path, default=Path("data"), help="where --sizes builds or finds its bundles (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the --sizes table as JSON here")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as exc:  # BundleError, ModelError, unknown names
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished steps are kept and a rerun resumes.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
