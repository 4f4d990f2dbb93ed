"""Serving helpers: the bundle from the command line, one cohort per process, the warm-up."""

from __future__ import annotations

import pytest

from lse_panel.components.serving import bundle_from_argv, cached_cohort, warm_up
from lse_panel.testing import tiny_cohort, write_cohort_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_cohort_bundle(tiny_cohort(1_500), tmp_path_factory.mktemp("bundle") / "tiny")


def test_serving_helpers(bundle) -> None:
    assert bundle_from_argv(["--args", str(bundle)], env={}) == str(bundle)
    assert bundle_from_argv([str(bundle)], env={}) == str(bundle)
    assert bundle_from_argv([], env={"LSE_BUNDLE": "x"}) == "x"
    assert bundle_from_argv([], env={}) is None
    first = cached_cohort(bundle)
    assert cached_cohort(str(bundle)) is first
    timings = warm_up(first)
    assert {"rasterize:density", "selection"} <= set(timings)
