"""What every benchmark script shares: one timing helper (wall and CPU), one way to say how loaded the machine is.

The scripts run as ``python tests/benchmarks/bench_x.py``, so this directory is on ``sys.path``
and they ``from _common import timed``. Servers, ports and bundles come from
:mod:`lse_panel.testing` (``free_port``, ``write_cohort_bundle``), as the tests use them.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated calls: the median, the best and the mean, of the wall clock and of the process's CPU.

    On the shared 2-core machine the wall time includes waiting for a core; the CPU time (every
    thread of this process) does not, so report both.
    """

    wall: float
    cpu: float
    wall_min: float
    cpu_min: float
    wall_mean: float
    cpu_mean: float

    def __str__(self) -> str:
        return f"{self.wall * 1e3:8.1f} ms (cpu {self.cpu * 1e3:7.1f} ms)"


def timed(fn: Callable[[int], object], repeat: int = 7, warm: int = 1) -> Timing:
    """Time ``fn(i)`` for ``i`` in ``warm .. warm + repeat - 1`` after ``warm`` untimed calls (``i`` from 0).

    The call index lets a benchmark vary its input between calls (a shifted lasso, say) so no
    cache answers; ignore it with ``lambda _: work()``.
    """
    for i in range(warm):
        fn(i)
    walls, cpus = [], []
    for i in range(warm, warm + repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(i)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return Timing(
        statistics.median(walls), statistics.median(cpus), min(walls), min(cpus),
        statistics.fmean(walls), statistics.fmean(cpus),
    )


def machine_load() -> str:
    """``"load 5.1 4.8 4.0 on 2 cores"``: the 1, 5 and 15-minute load averages, to print beside timings."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} cores"
