"""Numba kernel that rasterises the cine's analytic anatomy, one fused pass per pixel."""

from __future__ import annotations

import math

import numba
import numpy as np

# Parameter columns of the (n, frames, K) geometry array.
LV_L, LV_R, LV_W, RV_L, RV_R, LA_A, LA_B, LA_V, RA_A, RA_B, RA_V = range(11)
N_FRAME_PARAMS = 11
# Per-subject columns of the (n, K) pose array.
COS, SIN, SCALE, X0, Y0, CONTRAST, SIGMA, BODY_X = range(8)
N_POSE_PARAMS = 8


@numba.njit(inline="always", fastmath=True)
def _soft_ellipse(u, v, a, b, edge):  # pragma: no cover - compiled
    # Signed distance to the ellipse to first order, (q - 1) / |grad q|, then a linear
    # partial-volume ramp `edge` cm wide: accurate at the apex as well as across the walls.
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    q = u * u * ia + v * v * ib - 1.0
    g = 2.0 * math.sqrt(u * u * ia * ia + v * v * ib * ib) + 1e-6
    m = 0.5 - q / (g * edge)
    return min(max(m, 0.0), 1.0)


@numba.njit(inline="always", fastmath=True)
def _lerp(img, value, m):  # pragma: no cover - compiled
    return img + (value - img) * m


@numba.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def render(xs, ys, pose, geo, noise0, noise1, noise_idx, levels, consts, out):  # pragma: no cover - compiled
    """Fill ``out`` (n, frames, H, W) from pose (n, 8) and per-frame geometry (n, frames, 11)."""
    blood, atrial_blood, myo, body_level, lung, fat = levels[0], levels[1], levels[2], levels[3], levels[4], levels[5]
    edge, av_gap, rv_wall, fat_cm = consts[0], consts[1], consts[2], consts[3]
    n, n_frames, height, width = out.shape
    for i in numba.prange(n):
        c, s, scale = pose[i, COS], pose[i, SIN], pose[i, SCALE]
        x0, y0, contrast, sigma, body_x = pose[i, X0], pose[i, Y0], pose[i, CONTRAST], pose[i, SIGMA], pose[i, BODY_X]
        for t in range(n_frames):
            g = geo[i, t]
            lv_l, lv_r, lv_w = g[LV_L], g[LV_R], g[LV_W]
            rv_l, rv_r = g[RV_L], g[RV_R]
            rv_c = -lv_w - rv_r  # RV cavity centre: the septum lies between v = -w and v = 0
            k = noise_idx[i, t]
            for y in range(height):
                for x in range(width):
                    # Chest, fixed to the image: grey body, dark lungs either side.
                    bx, by = xs[x] - body_x, ys[y]
                    body = min(max(0.5 - ((bx / 15.0) ** 2 + (by / 11.0) ** 2 - 1.0) * 4.0, 0.0), 1.0)
                    lungs = min(max(0.5 - (((abs(bx) - 8.0) / 4.8) ** 2 + ((by + 1.0) / 7.5) ** 2 - 1.0) * 3.0,
                                    0.0), 1.0)
                    img = body * (body_level + (lung - body_level) * lungs)
                    # Heart frame: u from the AV plane towards the apex, v lateral (LV side positive).
                    dx, dy = (xs[x] - x0) / scale, (ys[y] - y0) / scale
                    u = dx * s - dy * c
                    v = dx * c + dy * s
                    vent = min(max(0.5 + u / edge, 0.0), 1.0)
                    atr = min(max(0.5 - (u + av_gap) / edge, 0.0), 1.0)
                    if vent > 0.0:
                        dl, dr = v - lv_r, v - rv_c
                        m_fat = max(
                            _soft_ellipse(u, dl, lv_l + lv_w + fat_cm, lv_r + lv_w + fat_cm, edge),
                            _soft_ellipse(u, dr, rv_l + rv_wall + fat_cm, rv_r + rv_wall + fat_cm, edge),
                        )
                        if m_fat > 0.0:
                            img = _lerp(img, fat, m_fat * vent)
                            m_myo = max(
                                _soft_ellipse(u, dl, lv_l + lv_w, lv_r + lv_w, edge),
                                _soft_ellipse(u, dr, rv_l + rv_wall, rv_r + rv_wall, edge),
                            )
                            img = _lerp(img, myo, m_myo * vent)
                            img = _lerp(img, blood, _soft_ellipse(u, dr, rv_l, rv_r, edge) * vent)
                            img = _lerp(img, blood, _soft_ellipse(u, dl, lv_l, lv_r, edge) * vent)
                    if atr > 0.0:
                        for a, b, cv in ((g[LA_A], g[LA_B], g[LA_V]), (g[RA_A], g[RA_B], g[RA_V])):
                            ua = u + av_gap + a
                            img = _lerp(img, atrial_blood, _soft_ellipse(ua, v - cv, a, b, edge) * atr)
                    # Rician magnitude noise: |signal + complex Gaussian|.
                    re = img * contrast + sigma * noise0[k, y, x]
                    im = sigma * noise1[k, y, x]
                    out[i, t, y, x] = math.sqrt(re * re + im * im)


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the kernel on a one-pixel problem."""
    f32 = np.float32
    out = np.zeros((1, 1, 1, 1), f32)
    render(
        np.zeros(1, f32), np.zeros(1, f32), np.ones((1, N_POSE_PARAMS), f32),
        np.ones((1, 1, N_FRAME_PARAMS), f32), np.zeros((1, 1, 1), f32), np.zeros((1, 1, 1), f32),
        np.zeros((1, 1), np.intp), np.zeros(6, f32), np.ones(4, f32), out,
    )
