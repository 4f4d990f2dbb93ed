"""Figures of a trained model: held-out reconstructions (self and cross-modal) and decoded group means."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lse_panel.model.checkpoint import load_model, read_config  # noqa: E402
from lse_panel.model.decoding import CheckpointDecoder  # noqa: E402
from lse_panel.model.embedding import encode_arrays  # noqa: E402
from lse_panel.synth import SyntheticCohort  # noqa: E402

SHOWN_LEADS = ("I", "II", "V1", "V3", "V5", "aVR")
"""Leads drawn for single subjects: limb, precordial from right (V1) to left (V5), and aVR."""


def held_out_source(model_dir: Path) -> tuple[SyntheticCohort, np.ndarray]:
    """The synthetic generator a model was trained on and the ids of its held-out evaluation subjects."""
    _, training = read_config(model_dir)
    provenance = training.get("data_provenance") or {}
    if provenance.get("source") != "synthetic":
        raise SystemExit(f"{model_dir}: not trained on the synthetic generator; these figures need held-out synthetic subjects.")
    lo, hi = training["eval_ids"]
    return SyntheticCohort.from_json(provenance["generator"]), np.arange(lo, hi + 1, dtype=np.int64)


def _end_systole_frame(n_frames: int) -> int:
    try:
        from lse_panel.synth.mri import END_SYSTOLE_PHASE
    except ImportError:  # pragma: no cover - older generator
        END_SYSTOLE_PHASE = 0.35
    return int(round(END_SYSTOLE_PHASE * n_frames)) % n_frames


def _lead_rows(channel_names: tuple[str, ...]) -> list[int]:
    rows = [channel_names.index(n) for n in SHOWN_LEADS if n in channel_names]
    return rows or list(range(min(6, len(channel_names))))


def plot_ecg_reconstructions(
    original: np.ndarray, self_rec: np.ndarray, cross_rec: np.ndarray, titles: list[str], channel_names: tuple[str, ...], rate_hz: float
) -> plt.Figure:
    """Original (black), reconstructed from the ECG latent (blue) and decoded from the MRI latent (orange)."""
    rows = _lead_rows(channel_names)
    t = np.arange(original.shape[-1]) / rate_hz
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(3.6 * len(titles), 1.7 * len(rows)), sharex=True, sharey="row", squeeze=False)
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=8)
        for i, lead in enumerate(rows):
            ax = axes[i, j]
            ax.plot(t, original[j, lead], color="k", lw=1.2, label="original")
            ax.plot(t, self_rec[j, lead], color="tab:blue", lw=1.0, label="ECG → ECG")
            ax.plot(t, cross_rec[j, lead], color="tab:orange", lw=1.0, ls="--", label="MRI → ECG")
            ax.grid(True, color="tab:red", alpha=0.2, lw=0.5)
            if j == 0:
                ax.set_ylabel(f"{channel_names[lead]} (mV)", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.suptitle("ECG: original vs reconstructed (from its own latent) vs cross-modally decoded (from the MRI latent)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_mri_reconstructions(original: np.ndarray, self_rec: np.ndarray, cross_rec: np.ndarray, titles: list[str]) -> plt.Figure:
    """Rows per subject (original, MRI → MRI, ECG → MRI); columns: end-diastole and end-systole frames."""
    es = _end_systole_frame(original.shape[1])
    k = len(titles)
    fig, axes = plt.subplots(k, 6, figsize=(12, 2.2 * k), squeeze=False)
    for j, title in enumerate(titles):
        for c, (label, movie) in enumerate((("original", original), ("MRI → MRI", self_rec), ("ECG → MRI", cross_rec))):
            for f, (phase, frame) in enumerate((("ED", 0), ("ES", es))):
                ax = axes[j, 2 * c + f]
                ax.imshow(movie[j, frame], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_title(f"{label}, {phase}", fontsize=8)
        axes[j, 0].set_ylabel(title.replace(": ", "\n").replace(", QRS", "\nQRS"), fontsize=6)
    fig.suptitle("MRI: end-diastole / end-systole frames, original vs reconstructed vs decoded from the ECG latent", fontsize=10)
    fig.tight_layout()
    return fig


def plot_group_means(
    decoded: dict[str, dict[str, np.ndarray]],
    observed: dict[str, dict[str, np.ndarray]],
    names: tuple[str, str],
    channel_names: tuple[str, ...],
    rate_hz: float,
    ecg_key: str,
    mri_key: str,
    title: str,
) -> plt.Figure:
    """Decoded mean latents of two groups: 12-lead overlay, ED/ES frames of each, and their difference.

    ``observed`` (the groups' mean raw records) is drawn faintly for reference: the decoded
    means should show the same contrast.
    """
    a, b = names
    t = np.arange(decoded[a][ecg_key].shape[-1]) / rate_hz
    n_leads = len(channel_names)
    cols = 4
    lead_rows = int(np.ceil(n_leads / cols))
    fig = plt.figure(figsize=(14, 3.0 * lead_rows + 6))
    grid = fig.add_gridspec(lead_rows + 2, cols, height_ratios=[1] * lead_rows + [1.6, 1.6])
    for lead in range(n_leads):
        ax = fig.add_subplot(grid[lead // cols, lead % cols])
        ax.plot(t, observed[b][ecg_key][lead], color="tab:blue", lw=3, alpha=0.2)
        ax.plot(t, observed[a][ecg_key][lead], color="tab:red", lw=3, alpha=0.2)
        ax.plot(t, decoded[b][ecg_key][lead], color="tab:blue", lw=1.1, label=f"{b} (decoded mean)")
        ax.plot(t, decoded[a][ecg_key][lead], color="tab:red", lw=1.1, label=f"{a} (decoded mean)")
        ax.set_title(channel_names[lead], fontsize=8)
        ax.grid(True, alpha=0.3)
        if lead == 0:
            ax.legend(fontsize=7)
    es = _end_systole_frame(decoded[a][mri_key].shape[0])
    diffs = {phase: decoded[a][mri_key][f] - decoded[b][mri_key][f] for phase, f in (("ED", 0), ("ES", es))}
    lim = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0
    for r, (phase, frame) in enumerate((("ED", 0), ("ES", es))):
        panels = [
            (f"{b}, {phase}", decoded[b][mri_key][frame], "gray", 0, 1),
            (f"{a}, {phase}", decoded[a][mri_key][frame], "gray", 0, 1),
            (f"{a} − {b}, {phase}", diffs[phase], "RdBu_r", -lim, lim),
            (f"observed {a} − {b}, {phase}", observed[a][mri_key][frame] - observed[b][mri_key][frame], "RdBu_r", -lim, lim),
        ]
        for c, (label, img, cmap, lo, hi) in enumerate(panels):
            ax = fig.add_subplot(grid[lead_rows + r, c])
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if cmap != "gray":
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title + "  (thin: decoded mean latents; wide, faint: observed group-mean records)", fontsize=10)
    fig.tight_layout()
    return fig


def make_figures(model_dir: str | Path, out: str | Path, *, n_subjects: int = 3, n_group: int = 8000, latent: str = "fused") -> list[Path]:
    """Draw and save every model figure; returns the PNG paths.

    Parameters
    ----------
    model_dir
        A checkpoint directory trained on the synthetic generator.
    out
        Output directory.
    n_subjects
        Held-out subjects shown individually.
    n_group
        Held-out subjects encoded for the LVH vs non-LVH group means.
    latent
        Latent kind whose group means are decoded (``ecg``, ``mri`` or ``fused``).
    """
    model_dir, out = Path(model_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_model(model_dir)
    decoder = CheckpointDecoder(model)
    synth, eval_ids = held_out_source(model_dir)
    ecg_mod = synth.modalities[config.ecg_name]
    ek, mk = config.ecg_name, config.mri_name
    ids = eval_ids[:n_group]
    ph = synth.phenotypes(ids)
    raw = synth.raw(ids, ph)
    latents = encode_arrays(model, raw)
    paths = []

    # Individual subjects: one typical, one with LVH, one with a wide QRS or low EF.
    picks = [int(np.flatnonzero((ph["lvh"] == 0) & (ph["af"] == 0))[0])]
    if (ph["lvh"] == 1).any():
        picks.append(int(ph["lv_mass_index"].where(ph["lvh"] == 1).idxmax()))
    picks.append(int(ph["lvef"].idxmin()))
    picks += [i for i in range(len(ids)) if i not in picks]
    picks = picks[:n_subjects]
    titles = [_describe(ph.iloc[i], ids[i]) for i in picks]
    self_dec = decoder.decode(latents["ecg"][picks])
    cross_dec = decoder.decode(latents["mri"][picks])
    fig = plot_ecg_reconstructions(raw[ek][picks], self_dec[ek], cross_dec[ek], titles, ecg_mod.channel_names, ecg_mod.sampling_rate_hz)
    paths.append(_save(fig, out / "model_ecg_reconstructions.png"))
    self_mri = decoder.decode(latents["mri"][picks])[mk]
    cross_mri = decoder.decode(latents["ecg"][picks])[mk]
    fig = plot_mri_reconstructions(raw[mk][picks], self_mri, cross_mri, titles)
    paths.append(_save(fig, out / "model_mri_reconstructions.png"))

    # Group means: LVH vs not.
    groups = {"LVH": np.flatnonzero(ph["lvh"] == 1), "no LVH": np.flatnonzero(ph["lvh"] == 0)}
    decoded = {g: decoder.decode_mean(latents[latent], idx) for g, idx in groups.items()}
    observed = {g: {ek: raw[ek][idx].mean(axis=0), mk: raw[mk][idx].mean(axis=0)} for g, idx in groups.items()}
    title = (
        f"Decoded mean {latent} latents: LVH (n={len(groups['LVH'])}) vs no LVH (n={len(groups['no LVH'])}), "
        f"held-out subjects"
    )
    fig = plot_group_means(decoded, observed, ("LVH", "no LVH"), ecg_mod.channel_names, ecg_mod.sampling_rate_hz, ek, mk, title)
    paths.append(_save(fig, out / "model_group_means_lvh.png"))
    summary = {
        "subjects": [int(ids[i]) for i in picks],
        "groups": {g: int(len(idx)) for g, idx in groups.items()},
        "latent": latent,
    }
    (out / "model_figures.json").write_text(json.dumps(summary, indent=2))
    return paths


def _describe(row: pd.Series, subject_id: int) -> str:
    return (
        f"id {subject_id}: {'M' if row['sex'] == 1 else 'F'} {row['age']:.0f} y, QRS {row['qrs_duration']:.0f} ms, "
        f"EF {row['lvef']:.0f} %, LVMI {row['lv_mass_index']:.0f}{' LVH' if row['lvh'] == 1 else ''}{' AF' if row['af'] == 1 else ''}"
    )


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m lse_panel.figures.model --model models/demo --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/demo", help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--out", default="figures/model", help="output directory (default: %(default)s)")
    parser.add_argument("--subjects", type=int, default=3, help="held-out subjects shown (default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=8000, help="held-out subjects for group means (default: %(default)s)")
    parser.add_argument("--latent", default="fused", choices=("ecg", "mri", "fused"), help="latent kind for group means")
    args = parser.parse_args(argv)
    for path in make_figures(args.model, args.out, n_subjects=args.subjects, n_group=args.group_size, latent=args.latent):
        print(path)


if __name__ == "__main__":
    main()
