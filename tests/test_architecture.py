"""Layers import downwards only: every ``lse_panel`` import, top-level or inside a function, against the layer table."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lse_panel"

LAYERS: dict[str, int] = {
    "lse_panel.config": 0,
    "lse_panel.digest": 0,
    "lse_panel.palette": 0,
    "lse_panel.analysis": 1,
    "lse_panel.cohort": 2,
    "lse_panel.synth": 3,
    "lse_panel.sources": 3,
    "lse_panel.model": 4,
    "lse_panel.plotting": 5,
    "lse_panel.components": 6,
    "lse_panel.build": 7,
    "lse_panel.cli": 7,
    "lse_panel.figures": 7,
    "lse_panel.testing": 7,
    "lse_panel": 7,
}
"""DESIGN.md's table: config ← analysis ← cohort ← synth (and the raw-source dispatch above it) ←
model ← plotting ← components ← build, CLI, figures, testing. A module may import its own layer
and those below; the longest matching prefix decides a module's layer."""

THIRD_PARTY: dict[str, int] = {"torch": 4, "panel": 5, "holoviews": 5, "bokeh": 5, "datashader": 5}
"""Heavy libraries and the lowest layer allowed to import them: torch only from ``model`` up (and
no higher layer imports it itself, see below), the plotting stack only from ``plotting`` up."""

TORCH_ONLY_IN = "lse_panel.model"


def layer_of(module: str) -> int:
    """The layer of ``module`` (a dotted ``lse_panel`` name)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:end]))
        if found is not None:
            return found
    raise KeyError(f"{module} is in no layer of LAYERS; add it to the table in tests/test_architecture.py.")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``path``, wherever it stands (functions, TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "lse_panel":  # ``from lse_panel import x``: x may be a subpackage
                found += [(node.lineno, f"lse_panel.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute lse_panel path.")
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    """Every import that points up the layer table, or pulls a heavy library into a layer that must not have it."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        rank = layer_of(source)
        for line, target in imports_of(path):
            where = f"{path.relative_to(package.parent)}:{line}"
            top = target.split(".")[0]
            if top == "lse_panel":
                if layer_of(target) > rank:
                    problems.append(f"{where}: {source} (layer {rank}) imports {target} (layer {layer_of(target)})")
            elif top in THIRD_PARTY and rank < THIRD_PARTY[top]:
                problems.append(f"{where}: {source} (layer {rank}) imports {top}")
            elif top == "torch" and not source.startswith(TORCH_ONLY_IN):
                problems.append(f"{where}: {source} imports torch; only {TORCH_ONLY_IN} may")
    return problems


def test_every_import_points_down_the_layer_table() -> None:
    assert layer_violations() == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "lse_panel"
    (package / "analysis").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "analysis" / "__init__.py").write_text("")
    (package / "analysis" / "bad.py").write_text(
        "import numpy\n\ndef f():\n    from lse_panel.cohort.bundle import Cohort\n    import torch\n"
    )
    found = layer_violations(package)
    assert len(found) == 2
    assert "lse_panel.analysis.bad (layer 1) imports lse_panel.cohort.bundle (layer 2)" in found[0]
    assert found[1].endswith("imports torch")


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
        ("import lse_panel.analysis.groups, lse_panel.cohort.derived", {"panel", "holoviews", "torch"}),
        ("import lse_panel.components.state", {"torch"}),
        ("import lse_panel.cli", {"torch", "panel", "holoviews"}),
    ],
)
def test_import_loads_no_heavy_layer(statement: str, forbidden: set[str]) -> None:
    assert not (_modules_loaded_by(statement) & forbidden)
