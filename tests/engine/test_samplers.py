"""Tests of the flow-matching samplers (UniPC bh1 and Euler)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from framepack_server.engine.samplers import SAMPLERS, flow_mu, flow_sigmas, sample_euler, sample_unipc

LN7 = math.log(7.0)

# A Gaussian flow with an exact model: x0 ~ N(MU0, S0^2) elementwise, x_sigma = (1 - sigma) x0 + sigma eps.
MU0, S0 = 0.7, 0.5


def _var(sigma: float) -> float:
    return (1.0 - sigma) ** 2 * S0**2 + sigma**2


def gaussian_model(x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
    """Exact velocity (x - E[x0 | x_sigma]) / sigma, evaluated in float64."""
    xd = x.double()
    x0_mean = MU0 + (1.0 - sigma) * S0**2 / _var(sigma) * (xd - (1.0 - sigma) * MU0)
    return ((xd - x0_mean) / sigma).float()


def exact_trajectory(eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """The probability-flow ODE solution started at x_1 = eps (a monotone affine map between Gaussians)."""
    return (1.0 - sigma) * MU0 + math.sqrt(_var(sigma)) * eps


def exact_x0_prediction(eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x_sigma] on the exact trajectory: what a sampler that stops at ``sigma`` approximates."""
    return MU0 + (1.0 - sigma) * S0**2 / math.sqrt(_var(sigma)) * eps


@pytest.fixture(scope="module")
def eps() -> torch.Tensor:
    return torch.randn(1, 4, 3, 5, 5, generator=torch.Generator().manual_seed(0))


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def test_gaussian_flow_map_is_affine(eps: torch.Tensor) -> None:
    # The exact answer x0 = MU0 + S0 * eps, checked against a fine Euler solve.
    fine = sample_euler(gaussian_model, eps, torch.linspace(1.0, 0.0, 4001))
    assert _max_err(fine, exact_trajectory(eps, 0.0)) < 2e-3
    assert torch.allclose(exact_trajectory(eps, 0.0), MU0 + S0 * eps)


def test_unipc_25_steps_is_accurate_and_beats_euler(eps: torch.Tensor) -> None:
    sigmas = flow_sigmas(25, LN7)
    seen: list[tuple[float, torch.Tensor]] = []

    def model(x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        seen.append((sigma, x.clone()))
        return gaussian_model(x, sigma, step)

    unipc = sample_unipc(model, eps, sigmas)
    euler = sample_euler(gaussian_model, eps, sigmas)
    # Every point UniPC evaluates the model at (but the last, a predictor-only step) is on the exact path.
    for sigma, x in seen[:-1]:
        assert _max_err(x, exact_trajectory(eps, sigma)) < 5e-3
    # Both return the x0 prediction at the last nonzero sigma (0.226 here).
    target = exact_x0_prediction(eps, float(sigmas[-2]))
    err_unipc, err_euler = _max_err(unipc, target), _max_err(euler, target)
    assert err_unipc < 3e-2
    assert err_unipc < err_euler / 5
    # Against the exact ODE end point, the stop at sigma = 0.226 dominates, yet UniPC is still closer.
    exact = exact_trajectory(eps, 0.0)
    assert _max_err(unipc, exact) < 0.7 * _max_err(euler, exact)


@pytest.mark.parametrize("name", ["unipc", "euler"])
def test_error_decreases_with_steps(eps: torch.Tensor, name: str) -> None:
    exact = exact_trajectory(eps, 0.0)
    errors = [_max_err(SAMPLERS[name](gaussian_model, eps, flow_sigmas(n, LN7)), exact) for n in (8, 16, 32)]
    assert errors[0] > errors[1] > errors[2]


def _reference_unipc(model, x: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """UniPC bh1 from the formulas, float64 numpy, whole history kept, closed-form g-functions."""
    lam = -np.log(sigmas[:-1])
    steps = len(sigmas) - 1
    preds = [x - sigmas[0] * model(x, sigmas[0])]
    for i in range(1, steps):
        p = min(i, 3)
        h = lam[i] - lam[i - 1]
        hh = -h
        r = (lam[i - 1 - np.arange(1, p)] - lam[i - 1]) / h
        D = [(preds[i - 1 - k] - preds[i - 1]) / r[k - 1] for k in range(1, p)]
        # phi'_j = (e^hh - sum_{k<=j} hh^k / k!) / hh^j,  b_j = phi'_j * j! / hh
        b = np.array(
            [
                (math.expm1(hh) - sum(hh**k / math.factorial(k) for k in range(1, j + 1)))
                / hh**j
                * math.factorial(j)
                / hh
                for j in range(1, p + 1)
            ]
        )
        R = np.vander(np.append(r, 1.0), p, increasing=True).T
        rho_p = [] if p == 1 else [0.5] if p == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        rho_c = [0.5] if p == 1 else np.linalg.solve(R, b)
        x_lin = sigmas[i] / sigmas[i - 1] * x - math.expm1(hh) * preds[i - 1]
        x_pred = x_lin - hh * sum((rho_p[k] * D[k] for k in range(p - 1)), np.zeros_like(x))
        preds.append(x_pred - sigmas[i] * model(x_pred, sigmas[i]))
        corr = sum((rho_c[k] * D[k] for k in range(p - 1)), np.zeros_like(x))
        x = x_lin - hh * (corr + rho_c[-1] * (preds[i] - preds[i - 1]))
    return preds[-1]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 25])
@pytest.mark.parametrize("mu", [0.0, 1.2, LN7])
def test_unipc_matches_independent_reference(steps: int, mu: float) -> None:
    x0 = np.array([-1.5, -0.2, 0.3, 1.1, 2.4])
    sigmas = flow_sigmas(steps, mu)
    ref = _reference_unipc(lambda x, s: np.tanh(x) * s + x, x0, sigmas.double().numpy())

    def model(x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        return torch.tanh(x) * sigma + x

    out32 = sample_unipc(model, torch.tensor(x0, dtype=torch.float32), sigmas)
    out64 = sample_unipc(model, torch.tensor(x0, dtype=torch.float64), sigmas)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out64.numpy(), ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", ["unipc", "euler"])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 12])
def test_model_evaluations_and_callbacks(name: str, steps: int) -> None:
    sigmas = flow_sigmas(steps, 1.0)
    evaluated: list[tuple[int, float]] = []
    calls: list[tuple[int, int, torch.Tensor]] = []

    def model(x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        evaluated.append((step, sigma))
        return 0.3 * x - 1.0

    out = SAMPLERS[name](model, torch.ones(2, 3), sigmas, lambda i, n, x0: calls.append((i, n, x0)))
    assert [step for step, _ in evaluated] == list(range(steps))
    assert [sigma for _, sigma in evaluated] == sigmas[:-1].tolist()
    assert [(i, n) for i, n, _ in calls] == [(i, steps) for i in range(steps)]
    assert out.shape == (2, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # The result is the last x0 prediction (for Euler the final step lands on it).
    assert torch.equal(out, calls[-1][2])
    if steps == 1:  # sigma_0 = 1: x0 = x - v
        assert torch.allclose(out, torch.ones(2, 3) - (0.3 - 1.0))


@pytest.mark.parametrize("name", ["unipc", "euler"])
def test_callback_exception_stops_sampling(name: str) -> None:
    evaluated: list[int] = []

    def model(x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        evaluated.append(step)
        return x

    def cancel(i: int, n: int, x0: torch.Tensor) -> None:
        if i == 2:
            raise KeyboardInterrupt  # stands for GenerationCancelled

    with pytest.raises(KeyboardInterrupt):
        SAMPLERS[name](model, torch.zeros(3), flow_sigmas(10, LN7), cancel)
    assert evaluated == [0, 1, 2]


def test_sigmas_shape_and_ends() -> None:
    for steps in (1, 2, 25):
        sigmas = flow_sigmas(steps, LN7)
        assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
        assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
        assert (sigmas[1:] < sigmas[:-1]).all()
    assert math.isclose(float(flow_sigmas(25, LN7)[-2]), 7 / 31, rel_tol=1e-6)
    with pytest.raises(ValueError):
        flow_sigmas(0, 1.0)


def _diffusers_scheduler(steps: int, mu: float) -> FlowMatchEulerDiscreteScheduler:
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0, use_dynamic_shifting=True)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], mu=mu)
    return scheduler


@pytest.mark.parametrize("steps", [1, 2, 9, 25, 50])
@pytest.mark.parametrize("mu", [0.3, 1.0, flow_mu(4000.0), LN7])
def test_sigmas_equal_diffusers(steps: int, mu: float) -> None:
    assert torch.equal(flow_sigmas(steps, mu), _diffusers_scheduler(steps, mu).sigmas)


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_euler_equals_diffusers_scheduler(steps: int) -> None:
    def model(x: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        return torch.tanh(1.7 * x) * (1.0 + sigma) - 0.4 * x + 0.1 * step

    noise = torch.randn(1, 4, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    scheduler = _diffusers_scheduler(steps, LN7)
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(model(x, float(scheduler.sigmas[i]), i), t, x).prev_sample
    assert torch.equal(sample_euler(model, noise, flow_sigmas(steps, LN7)), x)


def test_flow_mu() -> None:
    assert flow_mu(16.0) < LN7  # one 8x8-latent frame
    assert math.isclose(flow_mu(256.0), 0.5)
    assert math.isclose(flow_mu(4096.0), 1.15)
    assert flow_mu(9 * 60 * 104 / 4) == LN7  # a 480p window: 9 latent frames of 60x104
