"""Benchmark `lse import` at scale: 500,000 subjects, three 256-value latent kinds and 50 phenotypes, from Parquet.

Run: ``python tests/benchmarks/bench_import.py [--subjects 500000] [--dim 256] [--keep DIR]``.

The inputs are generated under ``/tmp/lse-bench-import`` (three embedding files of an id column
plus 256 float columns, each in its own shuffled row order, and a phenotype table of 35
continuous, 10 binary and 5 categorical columns with missing values), then imported up to
"servable" (ingest, cross-fit of every suitable phenotype from every latent kind, three PCAs and
the fused UMAP) in a child process, so its wall time and peak RSS are its own. Baseline in the
same run: reading the same Parquet files whole with pyarrow (the least any import must pay),
and the per-step figures let the cross-fit and projections be compared with `lse build`'s.
Targets: servable ≤ 5 min, peak RSS ≤ 3 GB on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path("/tmp/lse-bench-import")
KINDS = ("ecg", "mri", "fused")
N_CONTINUOUS, N_BINARY, N_CATEGORICAL = 35, 10, 5


def generate(folder: Path, n: int, dim: int, *, seed: int = 0, chunk: int = 50_000) -> Path:
    """Write the inputs (streamed in chunks, so the generator's memory stays small) and a spec; returns the spec."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = 1_000_000 + np.arange(n, dtype=np.int64)
    n_factors = 12
    centres = rng.normal(scale=2.0, size=(8, n_factors))
    cluster = rng.integers(0, 8, n)
    factors = (centres[cluster] + rng.normal(size=(n, n_factors))).astype(np.float32)  # the subjects' hidden state
    for k, kind in enumerate(KINDS):
        mixing = rng.normal(size=(n_factors, dim)).astype(np.float32) / np.sqrt(n_factors)
        order = np.random.default_rng(seed + k + 1).permutation(n)  # each file in its own row order
        schema = pa.schema([("eid", pa.int64())] + [(f"{kind}_{j:03d}", pa.float32()) for j in range(dim)])
        with pq.ParquetWriter(folder / f"{kind}.parquet", schema) as writer:
            for start in range(0, n, chunk):
                rows = order[start : start + chunk]
                values = factors[rows] @ mixing + 0.5 * rng.standard_normal((len(rows), dim), dtype=np.float32)
                arrays = [pa.array(ids[rows])] + [pa.array(values[:, j]) for j in range(dim)]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    columns: dict[str, object] = {"eid": ids}
    imaging = rng.random(n) < 0.15  # imaging-derived phenotypes are missing together, for the unscanned
    for j in range(N_CONTINUOUS):
        values = factors @ rng.normal(size=n_factors) + rng.normal(scale=2.0, size=n)
        values[imaging if j % 3 == 0 else rng.random(n) < 0.02] = np.nan
        columns[f"cont_{j:02d}"] = values.astype(np.float32)
    for j in range(N_BINARY):
        logit = factors @ rng.normal(size=n_factors) / 2 + rng.logistic(size=n) - 1.0
        columns[f"bin_{j:02d}"] = (logit > 0).astype(np.int8)
    for j in range(N_CATEGORICAL):
        score = factors @ rng.normal(size=n_factors) + rng.normal(size=n)
        columns[f"cat_{j:02d}"] = np.asarray(["A", "B", "C", "D"])[np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75]))]
    table = pa.table(columns)
    pq.write_table(table.take(pa.array(np.random.default_rng(seed + 9).permutation(n))), folder / "phenotypes.parquet")
    spec = folder / "cohort.toml"
    spec.write_text('[cohort]\nid_column = "eid"\n'
                    + "".join(f'[latents.{kind}]\nfile = "{kind}.parquet"\n' for kind in KINDS)
                    + '[phenotypes]\nfile = "phenotypes.parquet"\n')
    return spec


def read_baseline(folder: Path) -> float:
    """Seconds to read every input Parquet file whole with pyarrow, in a child process (the least an import pays)."""
    code = ("import pyarrow.parquet as pq, sys\n"
            "for name in sys.argv[1:]: pq.read_table(name)\n")
    files = [str(folder / f"{kind}.parquet") for kind in KINDS] + [str(folder / "phenotypes.parquet")]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *files], check=True)
    return time.perf_counter() - start


def run_import(spec: Path, out: Path) -> tuple[float, float, dict[str, float]]:
    """`lse import --until servable` in a child process: wall seconds, peak RSS GB, and peak RSS GB per step.

    The child's RSS is sampled every 0.2 s; each sample is put against the step running then (the
    step after the last one the log reports done). Memory-mapped latent pages a step touches count.
    """
    import re

    import psutil

    shutil.rmtree(out, ignore_errors=True)
    log = out.parent / "import.log"
    order = ["ingest", "crossfit"]
    peaks: dict[str, float] = {}
    start = time.perf_counter()
    with open(log, "w") as fh:
        child = subprocess.Popen([sys.executable, "-m", "lse_panel.cli", "import", "--spec", str(spec), "--out", str(out),
                                  "--until", "servable"], stdout=fh, stderr=subprocess.STDOUT)
        process = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                rss = process.memory_info().rss / 1024**3
            except psutil.NoSuchProcess:
                break
            done = re.findall(r"\[([^\]]+)\] (?:done in|up to date)", log.read_text(errors="replace"))
            step = "after " + done[-1] if done else "ingest"
            if done and done[-1] in order[:-1]:
                step = order[order.index(done[-1]) + 1]
            peaks[step] = max(peaks.get(step, 0.0), rss)
            time.sleep(0.2)
    wall = time.perf_counter() - start
    if child.returncode:
        print(log.read_text()[-3000:])
        raise SystemExit(f"lse import failed ({child.returncode}); log: {log}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs and bundle under /tmp/lse-bench-import")
    args = parser.parse_args()
    folder = ROOT / f"{args.subjects}x{args.dim}"
    spec = folder / "cohort.toml"
    if not spec.exists():
        start = time.perf_counter()
        generate(folder, args.subjects, args.dim)
        print(f"generated inputs in {time.perf_counter() - start:.0f} s: "
              f"{sum(f.stat().st_size for f in folder.glob('*.parquet')) / 1e9:.2f} GB of Parquet")
    load = os.getloadavg()
    baseline = read_baseline(folder)
    wall, peak, peaks = run_import(spec, folder / "bundle")
    manifest = json.loads((folder / "bundle" / "manifest.json").read_text())
    steps = {name: info.get("elapsed_s", 0.0) for name, info in manifest["build"]["steps"].items()}
    print(f"\n{args.subjects:,} subjects × {len(KINDS)} latent kinds × {args.dim} values, "
          f"{N_CONTINUOUS + N_BINARY + N_CATEGORICAL} phenotypes ({len(manifest['targets'])} targets); "
          f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    for name, seconds in steps.items():
        print(f"  {name:24s} {seconds:7.1f} s")
    print(f"  {'import to servable':24s} {wall:7.1f} s (target ≤ 300 s)   status {manifest['build']['status']}, "
          f"still to come: {', '.join(manifest['build'].get('pending', [])) or 'nothing'}")
    print(f"  {'peak RSS':24s} {peak:7.2f} GB (target ≤ 3 GB); sampled per step: "
          + ", ".join(f"{step} {gb:.2f}" for step, gb in peaks.items()))
    print(f"  baseline: reading the Parquet inputs whole with pyarrow {baseline:.1f} s; "
          f"ingest / baseline {steps.get('ingest', 0) / baseline:.2f}×, whole import / baseline {wall / baseline:.1f}×")
    if not args.keep:
        shutil.rmtree(folder / "bundle", ignore_errors=True)


if __name__ == "__main__":
    main()
