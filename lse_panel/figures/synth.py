"""Figures of the synthetic cohort: 12-lead ECGs and cine frames of contrasting subjects."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lse_panel.synth import SyntheticCohort, hidden_factors  # noqa: E402
from lse_panel.synth.ecg import ECG_LEADS, ECG_RATE_HZ  # noqa: E402
from lse_panel.synth.mri import END_SYSTOLE_PHASE  # noqa: E402


def pick_subjects(ph: pd.DataFrame, blocks: np.ndarray) -> dict[str, int]:
    """Row positions of contrasting subjects: normal, LVH, AF, wide QRS, low EF.

    Parameters
    ----------
    ph
        Phenotype table.
    blocks
        Conduction-block kind per row (hidden factor).

    Returns
    -------
    dict of str to int
    """
    sinus = (ph["af"] == 0) & (blocks == 0)
    normal = sinus & (ph["lvh"] == 0) & ph["lvef"].between(57, 65) & ph["lv_mass_index"].between(40, 50)
    return {
        "normal": int(np.flatnonzero(normal)[0]),
        "LVH": int(ph["lv_mass_index"].where(sinus & (ph["lvh"] == 1)).idxmax()),
        "AF": int(np.flatnonzero((ph["af"] == 1) & (blocks == 0) & (ph["lvh"] == 0))[0]),
        "wide QRS": int(ph["qrs_duration"].where(blocks == 1).idxmax()),
        "low EF": int(ph["lvef"].idxmin()),
    }


def plot_ecgs(ecg: np.ndarray, titles: list[str]) -> plt.Figure:
    """One column of 12 leads per subject, on a 1 mV grid."""
    t = np.arange(ecg.shape[-1]) / ECG_RATE_HZ
    fig, axes = plt.subplots(12, len(titles), figsize=(3.2 * len(titles), 14), sharex=True, sharey=True)
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=9)
        for lead, name in enumerate(ECG_LEADS):
            ax = axes[lead, j]
            ax.plot(t, ecg[j, lead], color="k", lw=0.8)
            ax.grid(True, color="tab:red", alpha=0.25, lw=0.5)
            ax.set_yticks([-1, 0, 1, 2])
            ax.set_ylim(-2.0, 2.5)
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def plot_mri(mri: np.ndarray, titles: list[str]) -> plt.Figure:
    """End-diastole and end-systole frames per subject, then the whole cycle as a strip."""
    n_frames = mri.shape[1]
    es = int(round(END_SYSTOLE_PHASE * n_frames))
    fig = plt.figure(figsize=(2.2 * (2 + n_frames / 2), 2.4 * len(titles)))
    grid = fig.add_gridspec(len(titles), 2 + n_frames // 2)
    for i, title in enumerate(titles):
        for j, (frame, label) in enumerate([(0, "ED"), (es, "ES")]):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(mri[i, frame], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}: {label}", fontsize=8)
            ax.axis("off")
        for k, frame in enumerate(range(0, n_frames, 2)):
            ax = fig.add_subplot(grid[i, 2 + k])
            ax.imshow(mri[i, frame], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"frame {frame}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    """Save ``synth_ecg.png`` and ``synth_mri.png`` under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cohort = SyntheticCohort(seed=args.seed)
    ids = np.arange(20_000)
    ph = cohort.phenotypes(ids)
    picks = pick_subjects(ph, hidden_factors(ids, args.seed)["conduction_block"])
    rows = np.array(list(picks.values()))
    sub = ph.iloc[rows].reset_index(drop=True)
    raw = cohort.raw(ids[rows], sub)
    labels = [
        f"{name} (id {ids[r]})\nQRS {p.qrs_duration:.0f} ms, PR {p.pr_interval:.0f} ms, LVMI {p.lv_mass_index:.0f}, "
        f"EF {p.lvef:.0f}%"
        for (name, r), p in zip(picks.items(), sub.itertuples())
    ]
    ecg_cols = [0, 1, 2, 3]  # normal, LVH, AF, wide QRS
    plot_ecgs(raw["ecg"][ecg_cols], [labels[c] for c in ecg_cols]).savefig(args.out / "synth_ecg.png", dpi=90)
    mri_rows = [0, 1, 4]  # normal, LVH, low EF
    plot_mri(raw["mri"][mri_rows], [list(picks)[r] for r in mri_rows]).savefig(args.out / "synth_mri.png", dpi=90)
    print(f"saved {args.out / 'synth_ecg.png'} and {args.out / 'synth_mri.png'}")


if __name__ == "__main__":
    main()
