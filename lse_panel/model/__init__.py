"""The cross-modal model (torch): networks, training, checkpoints, embedding a cohort, decoding latents."""

import os

# Before torch (and its OpenMP runtime) loads: idle OpenMP workers sleep instead of spinning.
# On the shared 2-core machine, spinning workers starved a descheduled partner and a 2-thread
# training step ran at 25 subjects/s; with PASSIVE it ran at 240 (1 thread: 180). Only takes
# effect when this package is what first imports torch; an explicit setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
