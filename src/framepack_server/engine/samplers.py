"""Flow-matching samplers: UniPC (variant bh1, order 3), the one FramePack samples with, and plain Euler.

The model predicts a velocity ``v`` along ``x_sigma = (1 - sigma) * x0 + sigma * noise``; its x0
prediction is ``x - sigma * v``. Sigma runs from 1 to 0 on the shifted schedule of :func:`flow_sigmas`.

Why UniPC is hand-written: FramePack's UniPC takes ``lambda = -log(sigma)`` (not ``log(alpha / sigma)``)
and works on x0 predictions, which diffusers' ``UniPCMultistepScheduler`` does not reproduce: on a toy
Gaussian flow it was 3e-2 away with bh2 / order 2 and gave NaN with bh1 / order 3. This module is derived
from the published UniPC update (predictor UniP, corrector UniC, ``B(h) = -h``), not copied from any
implementation. Euler steps exactly like diffusers' ``FlowMatchEulerDiscreteScheduler``, bit for bit.

Scalar coefficients are computed in Python floats (float64); tensor arithmetic stays in x's dtype (float32)
and on x's device; model outputs are cast to x's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

ModelFn = Callable[[torch.Tensor, float, int], torch.Tensor]
"""``(x, sigma, step_index) -> velocity`` (same shape as x, float32)."""
StepCallback = Callable[[int, int, torch.Tensor], None]
"""``(step_index, total_steps, x0_prediction)``, called after every model evaluation; it may raise."""

UNIPC_ORDER = 3


def flow_mu(seq_len: float) -> float:
    """Schedule shift for ``seq_len`` latent tokens: linear through (256, 0.5), (4096, 1.15); at most ln 7."""
    return min(0.5 + (seq_len - 256.0) * 0.65 / 3840.0, math.log(7.0))


def flow_sigmas(steps: int, mu: float) -> torch.Tensor:
    """``sigma_i = e^mu / (e^mu + 1/t_i - 1)`` for ``t = linspace(1, 0, steps + 1)``; float32, last is 0.

    Evaluated in float32 numpy, as diffusers' ``FlowMatchEulerDiscreteScheduler`` with dynamic shifting
    does, so the values are bit-identical to its ``sigmas`` (a float64 evaluation differs by an ulp).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = np.linspace(1.0, 0.0, steps + 1)[:-1].astype(np.float32)  # t = 0 is the appended sigma = 0
    e = np.float32(math.exp(mu))
    sigmas = e / (e + (np.float32(1.0) / t - np.float32(1.0)))
    return torch.cat([torch.from_numpy(sigmas), torch.zeros(1)])


def _weighted_sum(coefs: Sequence[float], tensors: Sequence[torch.Tensor]) -> torch.Tensor | float:
    return sum((c * t for c, t in zip(coefs, tensors, strict=True)), start=0.0)


def _unipc_rhos(r: list[float], hh: float) -> tuple[list[float], list[float]]:
    """Predictor and corrector weights for order ``p = len(r) + 1`` (bh1: ``B = hh = -h``).

    ``r`` holds ``r_k = (lambda_{i-1-k} - lambda_{i-1}) / h`` of the p - 1 earlier points.
    """
    p = len(r) + 1
    # b_j = phi'_j * j! / B with the g-functions phi'_1 = expm1(hh)/hh - 1, phi'_{j+1} = phi'_j/hh - 1/(j+1)!
    b, g = [], math.expm1(hh) / hh - 1.0
    for j in range(1, p + 1):
        b.append(g * math.factorial(j) / hh)
        g = g / hh - 1.0 / math.factorial(j + 1)
    nodes = [*r, 1.0]
    vander = np.array([[node**row for node in nodes] for row in range(p)])  # rows r^0 .. r^(p-1)
    if p == 1:
        rho_p = []
    elif p == 2:
        rho_p = [0.5]
    else:
        rho_p = np.linalg.solve(vander[:-1, :-1], b[:-1]).tolist()
    rho_c = [0.5] if p == 1 else np.linalg.solve(vander, b).tolist()
    return rho_p, rho_c


def sample_unipc(
    model: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
) -> torch.Tensor:
    """UniPC bh1 (warm-up orders 1, 2, then 3). Returns the x0 prediction at ``sigmas[-2]``.

    Makes exactly ``len(sigmas) - 1`` model evaluations; sigma = 0 is never evaluated.
    """
    s = sigmas.detach().to("cpu", torch.float64).tolist()
    steps = len(s) - 1
    if steps < 1 or min(s[:-1]) <= 0.0:
        raise ValueError("sigmas must hold at least two values, all but the last positive")

    def x0_prediction(x_at: torch.Tensor, i: int) -> torch.Tensor:
        m = x_at - s[i] * model(x_at, s[i], i).to(x_at.dtype)
        if callback is not None:
            callback(i, steps, m)
        return m

    ms, lams = [x0_prediction(x, 0)], [-math.log(s[0])]  # the last UNIPC_ORDER x0 predictions, lambdas
    for i in range(1, steps):
        p = min(i, UNIPC_ORDER)
        lam = -math.log(s[i])
        h = lam - lams[-1]
        hh = -h
        r = [(lams[-1 - k] - lams[-1]) / h for k in range(1, p)]
        rho_p, rho_c = _unipc_rhos(r, hh)
        # sum_k rho_k * D_k with D_k = (m_{i-1-k} - m_{i-1}) / r_k, the 1/r_k folded into the weights
        dms = [ms[-1 - k] - ms[-1] for k in range(1, p)]
        x_lin = (s[i] / s[i - 1]) * x - math.expm1(hh) * ms[-1]
        x_pred = x_lin - hh * _weighted_sum([rho / rk for rho, rk in zip(rho_p, r, strict=True)], dms)
        m = x0_prediction(x_pred, i)
        if i < steps - 1:  # corrector; its result is not needed after the last evaluation
            corr = _weighted_sum([rho / rk for rho, rk in zip(rho_c[:-1], r, strict=True)], dms)
            x = x_lin - hh * (corr + rho_c[-1] * (m - ms[-1]))
        ms, lams = [*ms, m][-UNIPC_ORDER:], [*lams, lam][-UNIPC_ORDER:]
    return ms[-1]


def sample_euler(
    model: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
) -> torch.Tensor:
    """``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * v(x_i, sigma_i)``, as FlowMatchEulerDiscreteScheduler."""
    sig32 = sigmas.detach().to("cpu", torch.float32)
    s, dts = sig32.tolist(), (sig32[1:] - sig32[:-1]).tolist()  # float32 differences, like diffusers
    steps = len(s) - 1
    for i in range(steps):
        v = model(x, s[i], i).to(x.dtype)
        if callback is not None:
            callback(i, steps, x - s[i] * v)
        x = x + dts[i] * v
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"unipc": sample_unipc, "euler": sample_euler}
