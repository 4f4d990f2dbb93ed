"""Benchmark the model: encode throughput (subjects/s, encode only and raw + encode), mean-latent decode time.

Run: ``.venv/bin/python tests/benchmarks/bench_model.py [--model models/demo] [--n 8192] [--threads 1 2]``.
The 500k embed estimate is ``500,000 / (raw + encode subjects/s)``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _common import timed

from lse_panel.model.checkpoint import load_model
from lse_panel.model.decoding import CheckpointDecoder
from lse_panel.model.embedding import encode_arrays, torch_threads
from lse_panel.model.networks import CrossModalAutoencoder, ModelConfig, inference_copy


def _model(path: str | None) -> CrossModalAutoencoder:
    if path and os.path.exists(path):
        return load_model(path)[0]
    # No checkpoint: the demo architecture with random weights costs the same to run.
    return CrossModalAutoencoder(ModelConfig(ecg_shape=(12, 600), mri_shape=(16, 48, 48))).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/demo")
    parser.add_argument("--n", type=int, default=8192, help="subjects per measurement")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    model = _model(args.model)
    net = inference_copy(model)
    config = net.config
    from lse_panel.synth import SyntheticCohort

    synth = SyntheticCohort(seed=0, mri_shape=config.mri_shape)
    ids = np.arange(args.n)
    t = time.perf_counter()
    ph = synth.phenotypes(ids)
    raw = synth.raw(ids, ph)
    raw_s = time.perf_counter() - t
    raw = {config.ecg_name: raw["ecg"], config.mri_name: raw["mri"]}
    print(f"raw generation: {args.n / raw_s:,.0f} subjects/s ({args.n} subjects, {raw_s:.2f} s)")
    encode_arrays(net, {k: v[:256] for k, v in raw.items()})  # warm up oneDNN primitives
    for threads in args.threads:
        with torch_threads(threads):
            best = {"ecg": 1e9, "mri": 1e9, "both": 1e9}
            with torch.inference_mode():
                for _ in range(3):
                    for name, enc, x in (("ecg", net.encode_ecg, raw[config.ecg_name]), ("mri", net.encode_mri, raw[config.mri_name])):
                        t = time.perf_counter()
                        for s in range(0, args.n, args.batch_size):
                            enc(torch.from_numpy(x[s : s + args.batch_size]))
                        best[name] = min(best[name], time.perf_counter() - t)
                    t = time.perf_counter()
                    encode_arrays(net, raw, batch_size=args.batch_size)
                    best["both"] = min(best["both"], time.perf_counter() - t)
        both = args.n / best["both"]
        end_to_end = args.n / (best["both"] + raw_s)
        print(
            f"threads={threads}: encode ECG {args.n / best['ecg']:,.0f}/s, MRI {args.n / best['mri']:,.0f}/s, "
            f"both (encode_arrays, fused included) {both:,.0f} subjects/s; raw + encode {end_to_end:,.0f} subjects/s "
            f"-> 500k embed ≈ {500_000 / both / 60:.1f} min encoding, {500_000 / end_to_end / 60:.1f} min with raw generation"
        )

    decoder = CheckpointDecoder(model)
    block = np.random.default_rng(0).normal(size=(500_000, config.latent_dim)).astype(np.float32)
    idx = np.sort(np.random.default_rng(1).choice(len(block), 50_000, replace=False))
    decoder.decode_mean(block, idx)
    for label, fn in (
        ("decode one latent", lambda: decoder.decode(block[0])),
        ("decode_mean of 50k of 500k", lambda: decoder.decode_mean(block, idx)),
        ("decode 2 group means", lambda: decoder.decode(block[:2])),
    ):
        t = timed(lambda _: fn(), repeat=30, warm=0)
        print(f"{label}: median {1000 * t.wall:.2f} ms, best {1000 * t.wall_min:.2f} ms (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
