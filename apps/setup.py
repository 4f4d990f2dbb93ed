"""``panel serve --setup`` warm-up: memory-map the bundle once per process and compile the hot kernels."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from lse_panel.components.serving import bundle_from_argv, cached_backend, cached_decoder, warm_up
from lse_panel.serve import TIE_ENV, die_with_parent

log = logging.getLogger("lse_panel.serve")

# Under `lse serve`, every server process ends with its parent: with --num-procs N this runs in each
# forked worker, whose parent is the `panel serve` process that `lse serve` already tied to itself.
# SIGKILL, not SIGTERM: Bokeh's SIGTERM handler waits for the server loop, which starts only after this
# warm-up (a killed test saw workers alive 30 s on, under load 12); a worker holds nothing to flush.
if os.environ.get(TIE_ENV) and die_with_parent(os.getppid(), signal.SIGKILL):
    log.warning("lse-panel: server process %d ends with its parent %d", os.getpid(), os.getppid())

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
