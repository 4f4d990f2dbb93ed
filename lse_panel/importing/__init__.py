"""Bring your own cohort: ``lse import`` turns a researcher's embeddings, phenotypes, raw records and decoders into a bundle."""

from __future__ import annotations

from lse_panel.importing.importer import finish_import, import_cohort
from lse_panel.importing.spec import ImportSpec, SpecError, read_spec, spec_from_flags

__all__ = ["ImportSpec", "SpecError", "finish_import", "import_cohort", "read_spec", "spec_from_flags"]
