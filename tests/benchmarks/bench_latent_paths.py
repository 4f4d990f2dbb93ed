"""Latent paths at 500k × 64: a 10-step interpolation decoded, a path placed on a 2-D map, a perturbation.

Run: ``.venv/bin/python tests/benchmarks/bench_latent_paths.py [--n 500000] [--dim 64] [--model models/demo]``.

The decoder is the trained one from ``--model`` when ``CheckpointDecoder.from_checkpoint`` loads it; else the
demo architecture with random weights (same cost per latent, decodes meaningless); else, without
torch, the tiny linear decoder. The script prints which. Baselines, measured in the same run:
decoding one mean latent (what the decode pane does per selection) for the path decode, and an
exact nearest-neighbour search over every subject for the placement.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
from _common import timed

from lse_panel.analysis.decode import latent_sum
from lse_panel.analysis.groups import BlockSums, GroupSet
from lse_panel.analysis.latent_paths import (
    NeighbourPlacer,
    decode_path,
    interpolate,
    latent_covariance,
    pca_transform,
    perturb,
    place_in_projection,
    principal_from_covariance,
)


def clustered_latents(n: int, d: int, seed: int = 0) -> np.ndarray:
    """``(n, d)`` float32 latents in a dozen Gaussian clusters of different spreads."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(12, d)).astype(np.float32)
    scales = rng.uniform(0.5, 1.5, size=12).astype(np.float32)
    which = rng.integers(0, 12, n)
    out = rng.standard_normal((n, d), dtype=np.float32)
    out *= scales[which, None]
    out += centres[which]
    return out


def load_decoder(path: str, d: int) -> tuple[Callable, str]:
    """The best decoder available and a line saying which it is."""
    try:
        from lse_panel.model.decoding import CheckpointDecoder
    except ImportError as exc:  # no torch
        from lse_panel.testing import tiny_decoder

        return tiny_decoder(d), f"tiny_decoder (linear stand-in; torch unavailable: {exc})"
    try:
        decoder = CheckpointDecoder.from_checkpoint(path, threads=2)
        if decoder.latent_dim != d:
            raise ValueError(f"its latent_dim is {decoder.latent_dim}, not {d}")
        return decoder, f"trained decoder from {path}"
    except Exception as exc:  # the checkpoint is being (re)trained; time the same architecture
        from lse_panel.model.networks import CrossModalAutoencoder, ModelConfig

        reason = str(exc).splitlines()[0][:160]
        model = CrossModalAutoencoder(ModelConfig(ecg_shape=(12, 600), mri_shape=(16, 48, 48), latent_dim=d)).eval()
        return CheckpointDecoder(model, threads=2), (
            f"demo architecture with RANDOM weights (ECG 12×600, MRI 16×48×48; same cost as trained) — "
            f"{path} did not load: {reason}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="models/demo")
    args = parser.parse_args()
    n, d, steps = args.n, args.dim, args.steps

    t0 = time.perf_counter()
    block = clustered_latents(n, d)
    # A stand-in for a UMAP: a smooth non-linear 2-D map of the latents (placement cost does not depend on it).
    axes = np.random.default_rng(1).normal(size=(d, 2)).astype(np.float32) / np.sqrt(d)
    coords = (10 * np.tanh(block @ axes / 3)).astype(np.float32)
    print(f"latents {n:,} × {d} (clustered, float32), built in {time.perf_counter() - t0:.1f} s")
    decode, which = load_decoder(args.model, d)
    print(f"decoder: {which}")

    rng = np.random.default_rng(3)
    selection = np.sort(rng.choice(n, size=50_000, replace=False))
    block_sum = latent_sum(block)  # cached per latent kind in the panes

    # -- interpolation decode ---------------------------------------------------------------
    sums = BlockSums(lambda kind: block, lambda kind: block_sum)

    def means() -> dict:
        groups = GroupSet(n, selection, "rest", sums=sums)  # what the state derives on each selection
        return {label: groups.mean_latent(label, "fused") for label in ("selection", "comparison")}

    m = means()
    path = interpolate(m["comparison"], m["selection"], steps)
    t_one = timed(lambda _: decode_path(decode, path[:1], "fused")).wall
    t_path = timed(lambda _: decode_path(decode, path, "fused")).wall
    t_means = timed(lambda _: means()).wall
    def end_to_end() -> dict:
        mm = means()
        return decode_path(decode, interpolate(mm["comparison"], mm["selection"], steps), "fused")

    t_full = timed(lambda _: end_to_end()).wall
    print("\n-- interpolation (selection of 50k vs the rest) --")
    print(f"decode one mean latent (baseline)      {t_one * 1e3:8.1f} ms")
    print(f"decode a {steps}-step path                {t_path * 1e3:8.1f} ms  ({t_path / t_one:.1f}× one latent)")
    print(f"group means (cached column sums)       {t_means * 1e3:8.1f} ms")
    print(f"means → path → decode, end to end       {t_full * 1e3:8.1f} ms")

    # -- placing the path on a map ------------------------------------------------------------
    q = path.astype(np.float64)
    placer = NeighbourPlacer.build(block, coords)
    t_build = timed(lambda _: NeighbourPlacer.build(block, coords), repeat=3).wall
    t_place = timed(lambda _: placer.place(q, k=10)).wall
    t_cold = timed(lambda _: place_in_projection(q, block, coords, k=10), repeat=3).wall

    def exact_knn() -> np.ndarray:
        # Baseline: the same 10 nearest neighbours searched among every subject, in chunks.
        best = []
        for start in range(0, n, 65_536):
            chunk = block[start : start + 65_536]
            dist = (chunk * chunk).sum(1)[None, :] - 2 * (path.astype(np.float32) @ chunk.T)
            best.append(np.partition(dist, 9, axis=1)[:, :10])
        return np.concatenate(best, axis=1)

    t_exact = timed(lambda _: exact_knn(), repeat=3).wall
    params = {"mean": block_sum / n, "components": principal_from_covariance(latent_covariance(block)[1], 2)[0]}
    t_pca = timed(lambda _: pca_transform(q, params)).wall
    # Accuracy: the stand-in map is a known function, so the true position of every step is known.
    def truth(z: np.ndarray) -> np.ndarray:
        return 10 * np.tanh(np.asarray(z, np.float64) @ axes / 3)

    spread = float(np.linalg.norm(coords.std(0)))
    everyone = NeighbourPlacer.build(block, coords, sample=None)
    subject_path = interpolate(block[0], block[5], steps)
    errors = {
        (name, label): float(np.median(np.linalg.norm(p.place(z, k=10) - truth(z), axis=1))) / spread
        for name, z in (("group means", q), ("two subjects", subject_path))
        for label, p in (("50k sample", placer), ("all subjects", everyone))
    }
    print(f"\n-- placing a {steps}-step path on a 2-D map (k=10 neighbours, 50k-subject sample) --")
    print(f"exact 10-NN over all {n:,} (baseline)   {t_exact * 1e3:8.1f} ms")
    print(f"place_in_projection, cold (gathers)    {t_cold * 1e3:8.1f} ms  ({t_exact / t_cold:.1f}× faster than baseline)")
    print(f"  of which sample gather (cached once) {t_build * 1e3:8.1f} ms")
    print(f"NeighbourPlacer.place, warm            {t_place * 1e3:8.1f} ms  ({t_exact / t_place:.0f}× faster than baseline)")
    print(f"pca_transform (exact, PCA maps)        {t_pca * 1e3:8.3f} ms")
    print("median placement error / map spread (k=10; isotropic 64-d clusters are a hard case):")
    for (name, label), err in errors.items():
        print(f"  path between {name:<13} neighbours from {label:<13} {err:6.3f}")

    # -- perturbation -----------------------------------------------------------------------------
    t_cov = timed(lambda _: latent_covariance(block), repeat=3).wall
    cov = latent_covariance(block)[1]
    directions, variance = principal_from_covariance(cov, 5)
    t_slider = timed(lambda _: decode_path(decode, perturb(m["selection"], directions[0], [1.5 * np.sqrt(variance[0])]), "fused")).wall
    print("\n-- perturbation --")
    print(f"covariance on a 50k sample (cached)    {t_cov * 1e3:8.1f} ms")
    print(f"one slider step (perturb + decode)     {t_slider * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
