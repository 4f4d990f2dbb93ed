"""The highlight's per-partition count on a worker, and partition images added: the image datashader draws of the group."""

from __future__ import annotations

import datashader as ds
import numpy as np
import pandas as pd
import pytest

from lse_panel.cohort.dask_tasks import count_on_canvas
from lse_panel.plotting.dask_raster import combine_aggregates


@pytest.mark.parametrize("share", [0.0, 0.01, 0.3, 1.0])
def test_a_partitions_group_counts_like_datashader_on_the_picked_rows(share: float) -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    part = pd.DataFrame({"k:x": rng.normal(size=n).astype(np.float32), "k:y": rng.normal(size=n).astype(np.float32)})
    part.loc[rng.random(n) < 0.01, "k:x"] = np.nan  # a subject without coordinates is never drawn
    mask = rng.random(n) < share
    canvas = ds.Canvas(50, 40, x_range=(-2, 2), y_range=(-2, 2))
    found = count_on_canvas(part, mask, canvas, "k:x", "k:y", ds.count())
    picked = pd.DataFrame({"x": part["k:x"][mask], "y": part["k:y"][mask]})
    expected = canvas.points(picked, "x", "y", agg=ds.count())
    assert found.dtype == expected.dtype
    np.testing.assert_array_equal(found.data, expected.data)
    assert int(found.data.sum()) == int(expected.data.sum())


def test_partition_images_add_up_to_the_whole_groups_image() -> None:
    rng = np.random.default_rng(8)
    part = pd.DataFrame({"x": rng.normal(size=9_000).astype(np.float32), "y": rng.normal(size=9_000).astype(np.float32)})
    mask = rng.random(9_000) < 0.5
    canvas = ds.Canvas(30, 30, x_range=(-2, 2), y_range=(-2, 2))
    pieces = [count_on_canvas(part.iloc[i : i + 3_000].reset_index(drop=True), mask[i : i + 3_000], canvas, "x", "y", ds.count())
              for i in range(0, 9_000, 3_000)]  # fmt: skip
    whole = canvas.points(part[mask], "x", "y", agg=ds.count())
    np.testing.assert_array_equal(combine_aggregates(*pieces).data, whole.data)
