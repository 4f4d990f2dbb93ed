"""lse-panel: explore the latent space of a multimodal heart model over biobank-sized cohorts."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Explorer", "open_bundle", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import lse_panel` (and the CLI) never pays for Panel or torch.
    if name == "Explorer":
        from lse_panel.components.explorer import Explorer

        return Explorer
    if name == "open_bundle":
        from lse_panel.cohort.bundle import open_bundle

        return open_bundle
    raise AttributeError(f"module 'lse_panel' has no attribute {name!r}")
