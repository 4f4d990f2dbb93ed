"""Explorer.find_failures: the slice search from a notebook, under the explorer's privacy floor."""

from __future__ import annotations

from lse_panel.components.explorer import Explorer
from lse_panel.testing import tiny_cohort, tiny_decoder


def test_find_failures_from_the_explorer_uses_its_privacy_floor() -> None:
    cohort = tiny_cohort(2_000)
    pred = cohort.predictions["fused"]["lvef"].copy()
    women = cohort.phenotype("sex") == 0
    pred[women] += 20
    cohort.predictions["fused"] = {**cohort.predictions["fused"], "lvef": pred}
    explorer = Explorer(cohort, tiny_decoder(8), min_group_size=800)
    found = explorer.find_failures(target="lvef", latent="fused", max_fraction=1.0)
    assert found.iloc[0]["rule"] == 'sex == "female"' and found.iloc[0]["latent"] == "fused"
    assert (found["n"] >= 800).all() and (found["n_rest"] >= 800).all()
    everything = explorer.find_failures(target="lvef", latent="fused", max_fraction=1.0, only_significant=False, top=100)
    assert (everything["n"] >= 800).all() and (everything["n_rest"] >= 800).all() and len(everything) > 1
