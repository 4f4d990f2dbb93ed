"""A process-wide cache for values derived from a cohort alone, shared by every session."""

from __future__ import annotations

from typing import Any, Callable, Hashable

import panel as pn

from lse_panel.cohort.bundle import Cohort


def cohort_cached(cohort: Cohort, key: Hashable, compute: Callable[[], Any], *, namespace: str = "lse_panel") -> Any:
    """The value of ``compute()`` for ``cohort``, computed once per process (``pn.state.cache``).

    Parameters
    ----------
    cohort
        The cohort the value is derived from; stored with the value so a recycled ``id`` never hits.
    key
        What the value is, e.g. ``("covariance", "fused")``.
    compute
        Called on a miss.
    namespace
        Keeps the keys of different panes apart.
    """
    full_key = (namespace, id(cohort), key)
    hit = pn.state.cache.get(full_key)
    if hit is not None and hit[0] is cohort:
        return hit[1]
    value = compute()
    pn.state.cache[full_key] = (cohort, value)
    return value
