"""Layers import downwards only: the UI never pulls in torch, the analysis never pulls in Panel."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {line.split(".")[0] for line in out.splitlines()}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import lse_panel", {"torch", "panel", "holoviews"}),
        ("import lse_panel.cohort.bundle", {"torch", "panel", "holoviews", "sklearn"}),
        ("import lse_panel.analysis.selection, lse_panel.analysis.metrics", {"panel", "holoviews", "torch"}),
        ("import lse_panel.components.state", {"torch"}),
        ("import lse_panel.cli", {"torch", "panel", "holoviews"}),
    ],
)
def test_import_loads_no_heavy_layer(statement: str, forbidden: set[str]) -> None:
    assert not (_modules_loaded_by(statement) & forbidden)
