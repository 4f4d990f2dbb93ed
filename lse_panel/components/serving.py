"""Serving the explorer: one memory-mapped cohort and one decoder per process, shared by every session.

``apps/explorer.py`` and its ``--setup`` script (``apps/setup.py``) call these; nothing here is
per session.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import holoviews as hv
import numpy as np
import panel as pn

from lse_panel.analysis.decode import Decoder
from lse_panel.analysis.selection import box_mask, lasso_mask
from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.backend import DataBackend, in_process
from lse_panel.components.latent_view import projection_options
from lse_panel.digest import checkpoint_digest
from lse_panel.plotting.latent import create_latent_plot

__all__ = ["bundle_from_argv", "cached_cohort", "cached_decoder", "load_decoder", "warm_up"]

log = logging.getLogger(__name__)


def load_decoder(cohort: Cohort) -> Decoder | None:
    """The decoder named by the bundle's manifest, or ``None``.

    An imported bundle's TorchScript decoders (``manifest["decoders"]``, one module per latent
    kind and modality, :class:`lse_panel.model.torchscript.ScriptedDecoder`); else the checkpoint
    that encoded the latents (``latents.<kind>.model``, the fused latent's first). Any failure (no
    model package, no checkpoint, torch missing, a decoder or checkpoint that changed since the
    latents were made) is logged and yields ``None``: the explorer then runs without decode panes.
    """
    if cohort.manifest.get("decoders") and cohort.path is not None:
        try:
            from lse_panel.model.torchscript import ScriptedDecoder

            return ScriptedDecoder.from_manifest(cohort.path, cohort.manifest["decoders"])
        except Exception as exc:  # the model layer is optional for exploring
            log.warning("could not load the bundle's TorchScript decoders (%s); decode panes are off", exc)
            return None
    latents = cohort.manifest.get("latents", {})
    kinds = sorted(latents, key=lambda k: k != "fused")
    for kind in kinds:
        model = latents[kind].get("model")
        if not model:
            continue
        path = Path(model)
        if not path.is_absolute() and cohort.path is not None:
            path = cohort.path / path
        try:
            recorded, current = latents[kind].get("model_sha256"), checkpoint_digest(path)
            if recorded != current:
                # Another model's decoder would draw its own reading of these latents, not theirs.
                log.warning(
                    "%s: the %s latents were encoded by %s, whose model.pt has changed since (digest %s, now %s); "
                    "decode panes are off. Rebuild the bundle (`lse build --out %s`) to decode it.",
                    cohort.path, kind, path, recorded or "not recorded", current, cohort.path,
                )
                return None
            from lse_panel.model.decoding import CheckpointDecoder

            return CheckpointDecoder.from_checkpoint(path)
        except Exception as exc:  # the model layer is optional for exploring
            log.warning("could not load the decoder %s (%s); decode panes are off", path, exc)
            return None
    return None


def bundle_from_argv(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The bundle path from ``--args BUNDLE`` (or a bare first argument), else ``$LSE_BUNDLE``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if "--args" in argv:
        rest = argv[argv.index("--args") + 1 :]
        argv = rest
    candidates = [a for a in argv if not a.startswith("-") and not a.endswith(".py")]
    return candidates[0] if candidates else env.get("LSE_BUNDLE") or None


def cached_cohort(path: str | os.PathLike[str]) -> Cohort:
    """The memory-mapped cohort at ``path``, opened once per process (``pn.state.cache``)."""
    resolved = str(Path(path).resolve())
    return pn.state.as_cached(f"lse_panel:cohort:{resolved}", open_bundle, path=resolved)


def cached_decoder(path: str | os.PathLike[str], cohort: Cohort | None = None) -> Decoder | None:
    """The bundle's decoder, loaded once per process (``None`` if it has none or it fails to load).

    ``cohort`` (e.g. a cluster backend's description of it) saves opening the bundle here.
    """
    resolved = str(Path(path).resolve())
    key = f"lse_panel:decoder:{resolved}"
    if key not in pn.state.cache:
        pn.state.cache[key] = load_decoder(cohort if cohort is not None else cached_cohort(resolved))
    return pn.state.cache[key]


def cached_backend(path: str | os.PathLike[str], dask: str | None = None) -> DataBackend:
    """The data backend for ``path``, once per process: on the cluster ``dask`` (or ``$LSE_DASK``) names, else in process.

    On a cluster the cohort is persisted there once for every session of the process, and the
    process holds only its description.
    """
    dask = dask if dask is not None else os.environ.get("LSE_DASK") or None
    resolved = str(Path(path).resolve())
    if dask is None:
        return in_process(cached_cohort(resolved))

    def connect_backend() -> DataBackend:
        from lse_panel.cohort.dask_backend import DaskBackend, connect

        return DaskBackend(resolved, connect(dask))

    return pn.state.as_cached(f"lse_panel:backend:{resolved}:{dask}", connect_backend)


def warm_up(cohort: Cohort) -> dict[str, float]:
    """Compile the numba kernels a session will hit (rasterise, highlight, box, lasso); seconds per step.

    Numba caches compiled code per process and per argument type, and the cohort's memory-mapped
    columns have their own types, so this runs on the loaded cohort itself (``panel serve --setup``).
    """
    timings: dict[str, float] = {}
    backend = in_process(cohort)
    options = projection_options(cohort)
    if not options:
        return timings
    kind = next(iter(options))
    key = f"{kind}/{'umap' if 'umap' in options[kind] else options[kind][0]}"
    specs = cohort.phenotype_specs
    colourings = [None]
    colourings += [next((n for n, s in specs.items() if s.type == "continuous"), None)]
    colourings += [next((n for n, s in specs.items() if s.type != "continuous"), None)]
    for color_by in dict.fromkeys(colourings):
        start = time.perf_counter()
        pipe = hv.streams.Pipe(data=backend.highlight(key, np.arange(min(100, cohort.n_subjects))))
        plot = create_latent_plot(
            backend.points(key, color_by), color_by=color_by, spec=specs.get(color_by) if color_by else None,
            selection=pipe, extent=backend.extent(key),
        )
        plot[()]
        timings[f"rasterize:{color_by or 'density'}"] = time.perf_counter() - start
    coords = cohort.projection(key)
    (x0, x1), (y0, y1) = backend.extent(key)
    start = time.perf_counter()
    box_mask(coords[:, 0], coords[:, 1], (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2), on_nan="exclude")
    theta = np.linspace(0, 2 * np.pi, 50)
    lasso_mask(coords[:, 0], coords[:, 1], (x0 + x1) / 2 + np.cos(theta), (y0 + y1) / 2 + np.sin(theta),
               on_nan="exclude")
    timings["selection"] = time.perf_counter() - start
    return timings
