"""Subject id → row index: int and string ids, unknown ids reported."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.ids import ids_to_indices, rows_of_ids


def test_ids_to_indices_matches_int_and_string_ids(source: Cohort) -> None:
    ids = source.ids[[10, 5, 7]]
    rows, missing = ids_to_indices(source, np.append(ids, -1))
    np.testing.assert_array_equal(rows, [5, 7, 10])
    np.testing.assert_array_equal(missing, [-1])
    as_text = Cohort.from_arrays(source.ids.astype(str), source.phenotypes, source.phenotype_specs)
    np.testing.assert_array_equal(ids_to_indices(as_text, ids)[0], [5, 7, 10])


def test_rows_of_ids_names_unknown_ids(source: Cohort) -> None:
    np.testing.assert_array_equal(rows_of_ids(source, source.ids[[9, 2]]), [2, 9])
    with pytest.raises(KeyError, match=r"1 id\(s\) not in this cohort, e.g. \[-5\]"):
        rows_of_ids(source, [source.ids[0], -5])
