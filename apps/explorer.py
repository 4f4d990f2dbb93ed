"""``panel serve apps/explorer.py --setup apps/setup.py --args BUNDLE`` (or ``LSE_BUNDLE``): the explorer."""

from __future__ import annotations

import panel as pn

from lse_panel.components.explorer import Explorer
from lse_panel.components.serving import bundle_from_argv, cached_backend, cached_decoder
from lse_panel.palette import HIGHLIGHT
from lse_panel.serve import privacy_from_env

pn.extension("tabulator", notifications=True, loading_indicator=True)

TITLE = "Latent Space Explorer"

sidebar = pn.Column(sizing_mode="stretch_width")
main = pn.Column(pn.pane.Markdown("Loading the cohort…"), loading=True, sizing_mode="stretch_width", min_height=600)
template = pn.template.FastListTemplate(
    title=TITLE, sidebar=[sidebar], main=[main], sidebar_width=330, accent=HIGHLIGHT,
)


def _load() -> None:
    path = bundle_from_argv()
    if path is None:
        main[:] = [
            pn.pane.Alert(
                "No bundle given. Serve with `panel serve apps/explorer.py --args BUNDLE` "
                "(or set LSE_BUNDLE); build one with `lse build --out BUNDLE`.",
                alert_type="danger",
            )
        ]
        main.loading = False
        return
    backend = cached_backend(path)  # on the Dask cluster $LSE_DASK names (`lse serve --dask`), else in process
    privacy = privacy_from_env(backend.cohort.manifest)  # `lse serve --privacy`, else the bundle's default
    explorer = Explorer(
        backend.cohort, cached_decoder(path, backend.cohort), backend=backend, title=TITLE, privacy=privacy
    )
    sidebar[:] = [pn.pane.Markdown("### Filters"), explorer.filters]
    main[:] = explorer.main_panes()
    main.loading = False


pn.state.onload(_load)
template.servable(title=TITLE)
