"""``lse export BUNDLE --anndata FILE.h5ad``: a bundle as AnnData, so the same cohort opens in scanpy and friends.

Layout (scanpy's conventions, so ``sc.pl.embedding(adata, basis="fused_umap")`` draws the map):

- ``obs_names``: subject ids (as text); ``obs``: every phenotype (categories as ``pd.Categorical``,
  missing as NaN) and one boolean column ``subgroup:<name>`` per saved subgroup;
- ``obsm["X_<kind>"]``: each latent block; ``obsm["X_<kind>_<method>"]``: each 2-D map;
  ``obsm["predicted_<kind>"]``: the cross-fitted predictions from that latent (a DataFrame);
- ``uns["lse_panel"]``: schema version, phenotype units and descriptions, targets, modalities,
  subgroup colours and rules, provenance; ``X`` is empty (a bundle has no feature matrix).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.schema import BundleError


def bundle_obs(cohort: Any, members: dict[str, np.ndarray]) -> pd.DataFrame:
    """Phenotypes (labelled categories) plus one boolean column per subgroup (name → member rows), indexed by id as text."""
    obs = pd.DataFrame(index=pd.Index(np.asarray(cohort.ids).astype(str), name="subject_id"))
    for name, spec in cohort.phenotype_specs.items():
        values = np.asarray(cohort.phenotype(name))
        if spec.type == "continuous":
            obs[name] = values.astype(np.float32)
        else:
            obs[name] = pd.Categorical.from_codes(values.astype(np.int64), categories=list(spec.categories))
    for name, rows in members.items():
        member = np.zeros(cohort.n_subjects, dtype=bool)
        member[rows] = True
        obs[f"subgroup:{name}"] = member
    return obs


def export_anndata(bundle: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the bundle at ``bundle`` as an ``.h5ad`` file at ``out`` (atomically: a temporary name, then a rename).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    BundleError
        ``out`` does not end in ``.h5ad``, or the bundle does not load.
    """
    import anndata

    out = Path(out)
    if out.suffix != ".h5ad":
        raise BundleError(f"{out}: an AnnData file ends in .h5ad; choose a name like cohort.h5ad.")
    cohort = open_bundle(bundle)
    from lse_panel.cohort.subgroups import SubgroupStore

    store = SubgroupStore(cohort)
    groups = [store.get(name) for name in store.names()]
    # Members looked up by id: rows saved before a rebuild may have moved.
    obs = bundle_obs(cohort, {group.name: store.members(group.name) for group in groups})
    obsm: dict[str, Any] = {f"X_{kind}": np.asarray(block) for kind, block in cohort.latents.items()}
    for key, coords in cohort.projections.items():
        kind, _, method = key.partition("/")
        obsm[f"X_{kind}_{method}"] = np.asarray(coords)
    for kind, per in cohort.predictions.items():
        obsm[f"predicted_{kind}"] = pd.DataFrame({name: np.asarray(v) for name, v in per.items()}, index=obs.index)
    manifest = cohort.manifest
    uns = {"lse_panel": {
        "schema_version": manifest.get("schema_version"),
        "phenotypes": {name: {"type": s.type, "units": s.units, "description": s.description}
                       for name, s in cohort.phenotype_specs.items()},
        "targets": dict(cohort.targets),
        "modalities": json.dumps(manifest.get("modalities", {})),
        "subgroups": {g.name: {"colour": g.colour, "n": g.n, "created": g.created,
                               "rule": json.dumps([step.to_json() for step in g.rule])} for g in groups},
        "provenance": json.dumps(manifest.get("provenance", {}), default=str),
        "bundle": str(Path(bundle).resolve()),
    }}
    adata = anndata.AnnData(obs=obs, obsm=obsm, uns=uns)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
