"""A small torch network that learns a 2-D embedding (latents → UMAP coordinates) and applies it to millions of subjects."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

NET_FORMAT = 1
"""Bumped whenever :class:`ProjectionNet` changes so that old saved networks stop loading cleanly."""


@dataclass(frozen=True)
class ProjectionNetConfig:
    """Everything needed to rebuild a :class:`ProjectionNet` (its architecture, not its weights).

    Parameters
    ----------
    in_dim
        Values per latent vector.
    hidden
        Width of each hidden layer, first to last.
    out_dim
        Output coordinates (2 for a map).
    """

    in_dim: int
    hidden: tuple[int, ...] = (128, 128)
    out_dim: int = 2
    format: int = NET_FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


class ProjectionNet(nn.Module):
    """An MLP from latents to 2-D coordinates, with the input and output standardisation built in.

    The standardisation lives in buffers, so a saved network is applied to raw latents and
    returns coordinates in the units of the embedding it was trained on.

    Parameters
    ----------
    config
        The architecture.
    """

    def __init__(self, config: ProjectionNetConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.in_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, config.out_dim))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("in_mean", torch.zeros(config.in_dim))
        self.register_buffer("in_scale", torch.ones(config.in_dim))
        self.register_buffer("out_mean", torch.zeros(config.out_dim))
        self.register_buffer("out_scale", torch.ones(config.out_dim))

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates in standardised units (what the losses are computed in)."""
        return self.mlp((x - self.in_mean) / self.in_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_standardised(x) * self.out_scale + self.out_mean


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with at most ``threads`` intra-op threads, restoring the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(int(threads), before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def find_ab_params(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """UMAP's low-dimensional similarity ``1 / (1 + a d^(2b))`` for a given ``spread`` and ``min_dist``.

    The same least-squares fit as ``umap.umap_.find_ab_params``, repeated here so that the model
    layer does not import umap (and numba) just for two numbers.
    """
    from scipy.optimize import curve_fit

    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), x, y)
    return float(a), float(b)


def train_projection_net(
    latents: np.ndarray,
    coords: np.ndarray,
    *,
    graph: Any = None,
    hidden: tuple[int, ...] = (128, 128),
    regression_steps: int = 10_000,
    umap_steps: int = 0,
    batch_size: int = 1024,
    learning_rate: float = 1e-2,
    anchor_weight: float = 1.0,
    negative_sample_rate: int = 5,
    a: float | None = None,
    b: float | None = None,
    umap_batch_size: int = 256,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
) -> ProjectionNet:
    """Train a :class:`ProjectionNet` to reproduce an embedding of a sample, then refine it with the UMAP loss.

    Two phases, both with Adam on mini-batches of the sample:

    1. regression onto ``coords`` (mean squared error in standardised units): the network learns the
       layout, including its global arrangement, which the UMAP loss alone would have to rediscover;
    2. if ``graph`` is given, the parametric-UMAP cross-entropy (Sainburg et al. 2021) on the sample's
       fuzzy kNN graph: edges drawn in proportion to their weight attract, random pairs repel, plus
       ``anchor_weight`` times the regression loss so that the layout does not drift from ``coords``.

    Parameters
    ----------
    latents
        ``(m, d)`` latents of the sample.
    coords
        ``(m, 2)`` target coordinates of the same rows (e.g. a UMAP fit of the sample).
    graph
        Optional ``(m, m)`` scipy sparse matrix of edge weights (``umap.UMAP().graph_``).
    hidden
        Hidden-layer widths.
    regression_steps, umap_steps
        Optimisation steps of each phase (``umap_steps`` is ignored without a graph). The defaults,
        regression only, were the best measured (50k 64-d cohort, the network applied to all rows,
        k=15, neighbourhoods within a 5000 sample; a full fit scores trustworthiness 0.982, kNN
        preservation 0.524): with 10k landmarks, (128, 128) × 6000 steps at lr 1e-2 gave
        0.985 / 0.503 in ~15 s, 10000 steps at lr 5e-3 0.986 / 0.516; (256, 256) gained nothing for
        twice the time; 1500 steps underfit (0.964 / 0.283). With 40k landmarks, neighbourhoods among
        all 50k rows: 12000 steps 0.984 / 0.144 against 6000 steps 0.980 / 0.120 (full fit 0.985 /
        0.217); 2000 UMAP-loss steps after the regression lowered both (0.965 / 0.113), so they are
        off by default.
    batch_size
        Rows per regression step.
    umap_batch_size
        Edges per UMAP step; each also draws ``negative_sample_rate`` repelling pairs, so a step
        runs ``(2 + negative_sample_rate) × umap_batch_size`` rows through the network.
    learning_rate
        Adam's step size; decayed by cosine over each phase.
    anchor_weight
        Weight of the regression term during phase 2.
    negative_sample_rate
        Repelling pairs per attracting edge in phase 2, as in UMAP.
    a, b
        UMAP's curve parameters; default: fitted for ``min_dist=0.1``, ``spread=1``.
    seed
        Seeds the initial weights and every batch: the same inputs and seed give the same network
        (on the same machine and thread count).
    threads
        At most this many torch threads. One by default: the batches are small, and two OpenMP
        threads on a 2-core machine shared with other work were measured 2–10× *slower* than one
        (200 steps: 1.2–3.8 s on one thread, 3–23 s on two, with the load average at 4.5).
    progress
        Show a tqdm bar per phase.

    Returns
    -------
    ProjectionNet
        The trained network, in eval mode.
    """
    from tqdm.auto import tqdm

    x_np = np.ascontiguousarray(latents, dtype=np.float32)
    y_np = np.ascontiguousarray(coords, dtype=np.float32)
    if x_np.ndim != 2 or y_np.ndim != 2 or len(x_np) != len(y_np):
        raise ValueError(
            f"latents must be (m, d) and coords (m, k) with the same m; got {x_np.shape} and {y_np.shape}."
        )
    if a is None or b is None:
        a, b = find_ab_params()
    with torch_threads(threads):
        gen = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))  # nn.Linear's initialisation draws from the global generator
        net = ProjectionNet(ProjectionNetConfig(in_dim=x_np.shape[1], hidden=hidden, out_dim=y_np.shape[1]))
        x = torch.from_numpy(x_np)
        y = torch.from_numpy(y_np)
        net.in_mean.copy_(x.mean(0))
        net.in_scale.copy_(x.std(0).clamp_min(1e-6))
        net.out_mean.copy_(y.mean(0))
        # One scale for both axes keeps the aspect ratio, so distances mean the same along x and y.
        net.out_scale.fill_(float(y.std(0).mean().clamp_min(1e-6)))
        y_std = (y - net.out_mean) / net.out_scale
        m = len(x)
        net.train()

        def regression_loss(idx: torch.Tensor) -> torch.Tensor:
            return ((net.forward_standardised(x[idx]) - y_std[idx]) ** 2).sum(1).mean()

        def run(steps: int, loss_fn: Any, desc: str) -> None:
            opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=0.5)
            for _ in bar:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                opt.step()
                sched.step()

        run(
            regression_steps,
            lambda: regression_loss(torch.randint(m, (min(batch_size, m),), generator=gen)),
            "projection net: regression",
        )

        if graph is not None and umap_steps > 0:
            coo = graph.tocoo()
            heads = torch.from_numpy(coo.row.astype(np.int64))
            tails = torch.from_numpy(coo.col.astype(np.int64))
            # Drawing edges by inverse CDF: torch.multinomial re-normalises all weights on every call.
            cdf = torch.from_numpy(np.cumsum(coo.data, dtype=np.float64))
            # Distances in UMAP's units: a and b were fitted for the embedding's own scale, not the
            # standardised one the network predicts.
            scale = float(net.out_scale[0])
            eps = 1e-4

            def umap_loss() -> torch.Tensor:
                u = torch.rand(umap_batch_size, generator=gen, dtype=torch.float64) * cdf[-1]
                e = torch.searchsorted(cdf, u).clamp_max(len(cdf) - 1)
                h, t = heads[e], tails[e]
                neg = torch.randint(m, (umap_batch_size * negative_sample_rate,), generator=gen)
                idx = torch.cat([h, t, neg])
                out = net.forward_standardised(x[idx]) * scale
                nb = umap_batch_size
                zh, zt, zn = out[:nb], out[nb : 2 * nb], out[2 * nb :]
                d_pos = ((zh - zt) ** 2).sum(1)
                d_neg = ((zh.repeat(negative_sample_rate, 1) - zn) ** 2).sum(1)
                q_pos = 1.0 / (1.0 + a * d_pos.clamp_min(eps) ** b)
                q_neg = 1.0 / (1.0 + a * d_neg.clamp_min(eps) ** b)
                ce = -torch.log(q_pos.clamp_min(eps)).mean() - negative_sample_rate * torch.log(
                    (1.0 - q_neg).clamp_min(eps)
                ).mean()
                return ce + anchor_weight * regression_loss(h)

            run(umap_steps, umap_loss, "projection net: umap loss")
        net.eval()
    return net


def apply_projection_net(
    net: ProjectionNet,
    latents: np.ndarray,
    *,
    chunk_size: int = 65_536,
    threads: int = 2,
    progress: bool = False,
) -> np.ndarray:
    """Apply a trained network to any number of latents, a chunk at a time.

    Parameters
    ----------
    net
        A trained :class:`ProjectionNet`.
    latents
        ``(n, d)`` latents; a memory-mapped array is read one chunk at a time.
    chunk_size
        Rows per forward pass: bounds the working memory (about ``chunk_size × 1 KB``).
    threads
        At most this many torch threads.
    progress
        Show a tqdm bar over the chunks.

    Returns
    -------
    numpy.ndarray
        ``(n, out_dim)`` float32 coordinates.
    """
    from tqdm.auto import tqdm

    n = len(latents)
    out = np.empty((n, net.config.out_dim), dtype=np.float32)
    starts = range(0, n, chunk_size)
    with torch_threads(threads), torch.inference_mode():
        for start in tqdm(starts, desc="projection net: apply", disable=not progress, leave=False):
            chunk = np.ascontiguousarray(latents[start : start + chunk_size], dtype=np.float32)
            out[start : start + len(chunk)] = net(torch.from_numpy(chunk)).numpy()
    return out


def save_projection_net(net: ProjectionNet, path: str | Path) -> None:
    """Write the network's architecture and weights to one file (``torch.save``, weights only)."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"config": asdict(net.config), "state": state}, Path(path))


def load_projection_net(path: str | Path) -> ProjectionNet:
    """Read a network written by :func:`save_projection_net`."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    config = ProjectionNetConfig(**blob["config"])
    if config.format != NET_FORMAT:
        raise ValueError(
            f"{path} holds a projection network of format {config.format}, this version reads {NET_FORMAT}; "
            "rebuild the projection (lse build) to refresh it."
        )
    net = ProjectionNet(config)
    net.load_state_dict(blob["state"])
    return net.eval()
