"""Every colour of lse-panel in one place: the selection, groups, categories, latent kinds, subgroups.

Plain strings, no plotting import, so every layer can read them: the plot factories, the Panel
template's accent, and the subgroup store, which hands a default colour to each new subgroup and
saves it with the subgroup (the store sits below the plotting layer, hence this module at the bottom).
"""

from __future__ import annotations

from typing import Sequence

CATEGORY10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
"""D3's Category10, in its own order: the base of the palettes below."""

HIGHLIGHT = "#e6007e"
"""The selection, everywhere (latent views, histograms, comparisons) and the app's accent: a magenta
that appears in neither the density, viridis nor category palettes."""

REFERENCE_COLOUR = "#7f7f7f"
"""The comparison group (rest, whole cohort) is grey unless it is a saved subgroup with a colour."""

COHORT_COLOUR = "#b8c4d0"
"""The whole cohort's histogram under the selection's in the filter sidebar."""

NEUTRAL_COLOUR = "#bbbbbb"
"""A reference curve drawn behind the one that matters (an interpolation's first step)."""

OUTLINE_COLOUR = "#111111"
"""A found failing region's outline on its map: near-black, to stand out from the selection's highlight inside it."""

CATEGORY_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#8c564b", "#17becf",
    "#9467bd", "#bcbd22", "#7f7f7f", "#d62728", "#393b79",
)  # fmt: skip
"""Categories on a latent map: Category10 without its pink (too close to :data:`HIGHLIGHT`), red moved late for the same reason."""

FALLBACK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#8c564b", "#17becf", "#9467bd", "#bcbd22", "#393b79")
"""Compared groups that have no colour of their own, in order (no red, pink or grey: those mean selection or reference)."""

GROUP_COLORS: tuple[str, ...] = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
"""Overlaid decoded groups, by position: the selection first (red), then what it is compared with (blue)."""

LATENT_COLORS = {"ecg": "#1f77b4", "mri": "#ff7f0e", "fused": "#2ca02c"}
"""Latent kinds in the accuracy plots; other kinds get :data:`OTHER_LATENT_COLOUR`."""

OTHER_LATENT_COLOUR = "#555555"

SUBGROUP_COLOURS = CATEGORY10
"""Default colours of saved subgroups, handed out in order, skipping those already in use."""


def next_free_colour(used: Sequence[str], palette: tuple[str, ...] = SUBGROUP_COLOURS) -> str:
    """The first colour of ``palette`` not in ``used``; when all are taken, cycle by how many were given.

    Parameters
    ----------
    used
        The colours of the existing subgroups (``#rrggbb``), one per subgroup.
    palette
        Candidate colours, in order.

    Returns
    -------
    str
        A ``#rrggbb`` colour.
    """
    taken = set(used)
    return next((c for c in palette if c not in taken), palette[len(used) % len(palette)])
