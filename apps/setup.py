"""``panel serve --setup`` warm-up: memory-map the bundle once per process and compile the hot kernels."""

from __future__ import annotations

import logging
import os
import sys
import time

from lse_panel.components.serving import bundle_from_argv, cached_backend, cached_decoder, warm_up

log = logging.getLogger("lse_panel.serve")

# During --setup, sys.argv is the whole `panel serve ... --args BUNDLE` command line.
path = bundle_from_argv(sys.argv[1:])
if path is None:
    log.warning("no bundle given (`--args BUNDLE` or LSE_BUNDLE): nothing to warm up")
else:
    start = time.perf_counter()
    backend = cached_backend(path)  # on a Dask cluster when LSE_DASK names one
    cohort = backend.cohort
    cached_decoder(path, cohort)
    timings = warm_up(cohort) if not os.environ.get("LSE_DASK") else {}
    log.warning(
        "lse-panel: %s (%s subjects) ready in %.1f s (%s)",
        path, f"{cohort.n_subjects:,}", time.perf_counter() - start,
        ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()),
    )
