"""Figures of latent perturbation and interpolation on a bundle: non-LVH → LVH, decoded ECG and MRI.

``python -m lse_panel.figures.depth --bundle data/demo --out DIR`` writes

* ``perturb_lvh.png``: the non-LVH group's mean latent moved along the direction non-LVH → LVH by
  −2, 0, +2, +4 SD (SD of the cohort along that direction): leads V5 and V1 overlaid, the MRI
  end-diastolic frame per amount and its difference to amount 0;
* ``interpolate_lvh.png``: 8 steps on the straight line from the non-LVH mean latent to the LVH
  mean latent: V5 per step (a colour ramp) and the MRI end-diastolic frame per step;
* ``depth_metrics.csv``: per decoded latent, the QRS voltages (R in V5, S in V1, Sokolow-Lyon
  S V1 + R V5) and MRI wall measures (mean intensity of a fixed band around the LV cavity, dark
  pixels in the LV region), and prints them.

Everything goes through the same pure functions the Perturb and Interpolate panes use
(:mod:`lse_panel.analysis.latent_paths`), with the bundle's decoder; no browser is needed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import ndimage

from lse_panel.analysis.decode import mean_latent
from lse_panel.analysis.latent_paths import (
    decode_path,
    direction_sd,
    group_direction,
    interpolate,
    perturb,
)
from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.synth.mri import FIELD_OF_VIEW_CM

AMOUNTS_SD = (-2.0, 0.0, 2.0, 4.0)
"""Perturbation amounts, in SD of the cohort's latents along the direction non-LVH → LVH."""
STEPS = 8
"""Interpolation steps, endpoints included."""
QRS_SEARCH_S = (0.1, 1.0)
"""Where to look for the QRS complex in the median beat (its steepest part); the demo's lies near 0.48 s of 1.2 s."""
BLOOD_LEVEL = 0.7
"""Decoded pixels brighter than this are blood (the synthetic cine: blood 0.85, fat 0.6, body 0.3, myocardium 0.15, lung 0.04)."""
WALL_LEVEL = 0.5
"""Half-way between myocardium and blood: darker pixels between two cavities are wall."""
LUNG_LEVEL = 0.1
"""Darker pixels are lung or air, not wall."""


@dataclass
class Groups:
    """Row indices of the two groups and what they are called."""

    low: np.ndarray
    high: np.ndarray
    low_name: str = "non-LVH"
    high_name: str = "LVH"


def lvh_groups(cohort: Cohort, phenotype: str = "lvh") -> Groups:
    """Rows without and with LVH (the binary phenotype's codes 0 and 1)."""
    values = np.asarray(cohort.phenotype(phenotype))
    return Groups(low=np.flatnonzero(values == 0), high=np.flatnonzero(values == 1))


def load_decode(cohort: Cohort, model: str | None):
    """The decoder: ``model`` if given, else the one the bundle's manifest names."""
    if model is not None:
        from lse_panel.model.decoding import CheckpointDecoder

        return CheckpointDecoder.from_checkpoint(model)
    from lse_panel.components.serving import load_decoder

    decode = load_decoder(cohort)
    if decode is None:
        raise SystemExit("no decoder in the bundle's manifest; pass --model models/NAME")
    return decode


# -- measures ---------------------------------------------------------------------------------------
def lead_index(cohort: Cohort, lead: str) -> int:
    names = list(getattr(cohort.modalities["ecg"], "channel_names", []))
    return names.index(lead)


def sampling_rate(cohort: Cohort) -> float:
    return float(getattr(cohort.modalities["ecg"], "sampling_rate_hz", 500.0))


def qrs_window(ecg: np.ndarray, rate: float) -> slice:
    """Samples of the QRS complex: ±60 ms around the steepest point (summed over leads) inside QRS_SEARCH_S."""
    lo, hi = (int(t * rate) for t in QRS_SEARCH_S)
    slope = np.abs(np.diff(ecg[:, lo:hi], axis=1)).sum(axis=0)
    centre = lo + int(np.argmax(slope))
    half = int(0.06 * rate)
    return slice(max(centre - half, 0), min(centre + half, ecg.shape[1]))


def ecg_measures(ecg: np.ndarray, cohort: Cohort, window: slice | None = None) -> dict[str, float]:
    """R in V5 (max in the QRS), S in V1 (−min in the QRS), Sokolow-Lyon, in mV, baseline-corrected."""
    rate = sampling_rate(cohort)
    window = window or qrs_window(ecg, rate)
    v5, v1 = ecg[lead_index(cohort, "V5")], ecg[lead_index(cohort, "V1")]
    base = slice(0, int(0.05 * rate))  # the first 50 ms, before the P wave
    r_v5 = float(v5[window].max() - np.median(v5[base]))
    s_v1 = float(np.median(v1[base]) - v1[window].min())
    return {"R_V5_mV": r_v5, "S_V1_mV": s_v1, "sokolow_lyon_mV": r_v5 + s_v1}


def chamber_centres(reference_ed: np.ndarray, level: float = BLOOD_LEVEL) -> dict[str, tuple[float, float]]:
    """(row, col) centres of the LV and RV cavities in one ED frame (the non-LVH decode).

    The demo's 4-chamber view has the LV right of the RV (apex up and to the right) and the atria
    below: of the bright (blood) components, the largest is the LV, the largest whose centre lies
    up and left of it is the RV.
    """
    labels, n = ndimage.label(reference_ed > level)
    if n < 2:
        raise ValueError("fewer than two bright cavities in the reference frame")
    ones = np.ones_like(reference_ed)
    sizes = ndimage.sum(ones, labels, range(1, n + 1))
    centres = ndimage.center_of_mass(ones, labels, range(1, n + 1))
    order = np.argsort(sizes)[::-1]
    lv = centres[order[0]]
    rv = next(centres[i] for i in order[1:] if centres[i][0] < lv[0] and centres[i][1] < lv[1])
    return {"lv": tuple(map(float, lv)), "rv": tuple(map(float, rv))}


def lv_cavity(ed: np.ndarray, lv_centre: tuple[float, float], level: float = BLOOD_LEVEL) -> np.ndarray:
    """The bright component at the LV's centre (empty if the centre is not bright)."""
    labels, _ = ndimage.label(ed > level)
    label = labels[round(lv_centre[0]), round(lv_centre[1])]
    return labels == label if label else np.zeros_like(ed, dtype=bool)


def septum_profile(ed: np.ndarray, centres: dict[str, tuple[float, float]], samples: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Intensity along the straight line RV centre → LV centre (through the septum), and the distance in pixels."""
    (r0, c0), (r1, c1) = centres["rv"], centres["lv"]
    t = np.linspace(0.0, 1.0, samples)
    rows, cols = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
    values = ndimage.map_coordinates(ed, [rows, cols], order=1)
    return values, t * float(np.hypot(r1 - r0, c1 - c0))


def mri_measures(ed: np.ndarray, centres: dict[str, tuple[float, float]], cm_per_px: float = 0.5) -> dict[str, float]:
    """Septal thickness and darkness on the RV → LV line, LV cavity area, dark pixels in the heart.

    ``septum_px``: length of the RV → LV line where the image is darker than :data:`WALL_LEVEL`
    (half-way between myocardium and blood): the septum's apparent thickness in pixels.
    ``septum_min``: the darkest value on that line (lower: more myocardium). ``lv_cavity_px``:
    pixels of the bright LV component. ``septum_cm``: ``septum_px`` × ``cm_per_px`` (the demo's
    field of view is 24 cm over 48 pixels, so 0.5 cm; the line is measured along its own length,
    not perpendicular to the septum, so it overestimates the true thickness a little). ``dark_heart_px``: pixels darker than :data:`WALL_LEVEL`
    but brighter than lung inside the heart's bounding box.
    """
    profile, distance = septum_profile(ed, centres)
    step = distance[1] - distance[0]
    (r0, c0), (r1, c1) = centres["rv"], centres["lv"]
    box = ed[int(min(r0, r1)) - 10 : int(max(r0, r1)) + 12, int(min(c0, c1)) - 8 : int(max(c0, c1)) + 12]
    return {
        "septum_px": float((profile < WALL_LEVEL).sum() * step),
        "septum_cm": float((profile < WALL_LEVEL).sum() * step) * cm_per_px,
        "septum_min": float(profile.min()),
        "lv_cavity_px": int(lv_cavity(ed, centres["lv"]).sum()),
        "dark_heart_px": int(((box < WALL_LEVEL) & (box > LUNG_LEVEL)).sum()),
    }


# -- figures ----------------------------------------------------------------------------------------
def _time(cohort: Cohort, n: int) -> np.ndarray:
    return np.arange(n) / sampling_rate(cohort)


def plot_perturbation(cohort: Cohort, amounts: np.ndarray, decoded: dict[str, np.ndarray], info: str) -> plt.Figure:
    ecg, mri = decoded["ecg"], decoded["mri"]
    t = _time(cohort, ecg.shape[-1])
    colours = plt.get_cmap("coolwarm")(np.linspace(0.0, 1.0, len(amounts)))
    k = len(amounts)
    fig = plt.figure(figsize=(3.0 * k, 9.5))
    grid = fig.add_gridspec(3, k, height_ratios=[1.2, 1, 1])
    for j, lead in enumerate(("V5", "V1")):
        ax = fig.add_subplot(grid[0, j * k // 2 : (j + 1) * k // 2])
        for i, a in enumerate(amounts):
            ax.plot(t, ecg[i, lead_index(cohort, lead)], color=colours[i], lw=2.2 if a == 0 else 1.3,
                    ls="--" if a == 0 else "-", label=f"{a:+g} SD")  # fmt: skip
        ax.set_title(f"lead {lead}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mV")
        ax.grid(True, color="tab:red", alpha=0.2, lw=0.5)
        ax.legend(fontsize=8)
    zero = int(np.flatnonzero(amounts == 0)[0])
    diff_max = max(float(np.abs(mri[:, 0] - mri[zero, 0]).max()), 1e-6)
    for i, a in enumerate(amounts):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(mri[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"ED frame, {a:+g} SD", fontsize=9)
        ax.axis("off")
        ax = fig.add_subplot(grid[2, i])
        im = ax.imshow(mri[i, 0] - mri[zero, 0], cmap="RdBu_r", vmin=-diff_max, vmax=diff_max)
        ax.set_title(f"{a:+g} SD − 0 SD", fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=fig.axes[-1], fraction=0.046, pad=0.04, label="Δ intensity (blue: darker)")
    fig.suptitle(info, fontsize=10)
    fig.tight_layout()
    return fig


def plot_interpolation(cohort: Cohort, decoded: dict[str, np.ndarray], groups: Groups, info: str) -> plt.Figure:
    ecg, mri = decoded["ecg"], decoded["mri"]
    steps = len(ecg)
    t = _time(cohort, ecg.shape[-1])
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, steps))
    fig = plt.figure(figsize=(2.2 * steps, 7.5))
    grid = fig.add_gridspec(2, steps, height_ratios=[1.4, 1])
    ax = fig.add_subplot(grid[0, :])
    v5 = lead_index(cohort, "V5")
    for i in range(steps):
        label = groups.low_name if i == 0 else groups.high_name if i == steps - 1 else f"step {i}"
        ax.plot(t, ecg[i, v5], color=colours[i], lw=1.4, label=label)
    ax.set_title(f"lead V5, {steps} steps from the {groups.low_name} mean latent to the {groups.high_name} mean latent")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mV")
    ax.grid(True, color="tab:red", alpha=0.2, lw=0.5)
    ax.legend(fontsize=8, ncol=2)
    for i in range(steps):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(mri[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"step {i}" + (f" ({groups.low_name})" if i == 0 else f" ({groups.high_name})" if i == steps - 1
                                      else ""), fontsize=8, color=colours[i])  # fmt: skip
        ax.axis("off")
    fig.suptitle(info, fontsize=10)
    fig.tight_layout()
    return fig


def make_figures(bundle: str, out: str, *, model: str | None = None, kind: str = "fused") -> pd.DataFrame:
    """Write the perturbation and interpolation figures and the measures under ``out``; returns the measures."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cohort = open_bundle(bundle)
    decode = load_decode(cohort, model)
    block = cohort.latent(kind)
    groups = lvh_groups(cohort)
    z_low, z_high = mean_latent(block, groups.low), mean_latent(block, groups.high)
    unit, length = group_direction(block, groups.high, groups.low)  # non-LVH → LVH
    sd = direction_sd(block, unit)

    amounts = np.asarray(AMOUNTS_SD)
    perturbed = decode_path(decode, perturb(z_low, unit, amounts * sd), kind)
    info = (f"{kind} latent; non-LVH n={groups.low.size:,}, LVH n={groups.high.size:,}; the means are "
            f"{length / sd:.2f} SD apart along non-LVH → LVH (SD = {sd:.3g} latent units)")  # fmt: skip
    fig = plot_perturbation(cohort, amounts, perturbed, "Perturbation of the non-LVH mean latent towards LVH\n" + info)
    fig.savefig(out_dir / "perturb_lvh.png", dpi=110)
    plt.close(fig)

    path = decode_path(decode, interpolate(z_low, z_high, STEPS), kind)
    fig = plot_interpolation(cohort, path, groups, "Interpolation non-LVH → LVH\n" + info)
    fig.savefig(out_dir / "interpolate_lvh.png", dpi=110)
    plt.close(fig)

    # Measures: one QRS window and one LV mask for all, from the unperturbed non-LVH decode.
    zero = int(np.flatnonzero(amounts == 0)[0])
    window = qrs_window(perturbed["ecg"][zero], sampling_rate(cohort))
    centres = chamber_centres(perturbed["mri"][zero, 0])
    cm_per_px = FIELD_OF_VIEW_CM / perturbed["mri"].shape[-1]
    rows = []
    for label, decoded, keys in (
        ("perturb", perturbed, [f"{a:+g} SD" for a in amounts]),
        ("interpolate", path, [f"step {i} (t={i / (STEPS - 1):.2f})" for i in range(STEPS)]),
    ):
        for i, key in enumerate(keys):
            rows.append({"figure": label, "point": key, **ecg_measures(decoded["ecg"][i], cohort, window),
                         **mri_measures(decoded["mri"][i, 0], centres, cm_per_px)})  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "depth_metrics.csv", index=False)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    (r0, c0), (r1, c1) = centres["rv"], centres["lv"]
    for ax, i in zip(axes[:2], (0, STEPS - 1)):
        ed = path["mri"][i, 0]
        ax.imshow(ed, cmap="gray", vmin=0, vmax=1)
        ax.contour(lv_cavity(ed, centres["lv"]), levels=[0.5], colors="tab:orange", linewidths=1)
        ax.plot([c0, c1], [r0, r1], color="tab:cyan", lw=1)
        ax.set_title(f"{groups.low_name if i == 0 else groups.high_name} mean: LV cavity, RV→LV line", fontsize=8)
        ax.axis("off")
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, STEPS))
    for i in range(STEPS):
        profile, distance = septum_profile(path["mri"][i, 0], centres)
        axes[2].plot(distance, profile, color=colours[i], lw=1.2, label=f"step {i}" if i in (0, STEPS - 1) else None)
    axes[2].axhline(WALL_LEVEL, color="grey", ls=":", lw=1)
    axes[2].set_xlabel("pixels, RV centre → LV centre")
    axes[2].set_ylabel("ED intensity")
    axes[2].set_title("through the septum, interpolation steps", fontsize=8)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "depth_masks.png", dpi=110)
    plt.close(fig)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="cohort bundle with an lvh phenotype and a decoder")
    parser.add_argument("--out", required=True, help="directory for the PNGs and depth_metrics.csv")
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the bundle's decoder)")
    parser.add_argument("--kind", default="fused", help="latent kind to move (default: fused)")
    args = parser.parse_args(argv)
    table = make_figures(args.bundle, args.out, model=args.model, kind=args.kind)
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table.to_string(index=False))
    for name in ("perturb_lvh.png", "interpolate_lvh.png", "depth_masks.png", "depth_metrics.csv"):
        print(Path(args.out) / name)


if __name__ == "__main__":
    main()
