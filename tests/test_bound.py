"""Theorem 1: the coefficients (5) by hand, the unrolled form (6) against its closed sum, and
the bound against the measured gap F(θ_m^t) − F* on the dense backend over five seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedopt.bound import coefficients, fit_envelope, unrolled_bound

ROOT = Path(__file__).resolve().parents[1]
BOUND_CHECK = ROOT / "experiments" / "configs" / "bound_check.yaml"


def test_coefficients_by_hand():
    x = np.array([[[1, 0], [1, 1], [0, 1]]], float)  # T=1, K=3, M=2
    q = np.array([[[0.5, 0], [0.9, 0.2], [0, 0.7]]])
    omega = np.array([0.2, 0.3, 0.5])
    mu, L, xi1, xi2 = 0.1, 2.0, 0.7, 0.3
    A, B = coefficients(x, q, omega, mu, L, xi1, xi2)
    S0 = 0.2 * 0.5 + 0.3 * 0.1 + 0.5 * 1.0
    S1 = 0.2 * 1.0 + 0.3 * 0.8 + 0.5 * 0.3
    for m, S in enumerate((S0, S1)):
        assert B[0, m] == pytest.approx(2 * xi1 * S / L)
        assert A[0, m] == pytest.approx(1 - mu / L + 4 * mu * xi2 * S / L)
    # 4 xi2 S > 1: the valid branch A = 4 xi2 S
    A2, _ = coefficients(x, q, omega, mu, L, xi1, 2.0)
    assert A2[0, 0] == pytest.approx(8 * S0)


def test_unrolled_equals_closed_sum():
    """(6): Π A gap0 + Σ_t B_t Π_{s>t} A_s, written out against the recursion."""
    rng = np.random.default_rng(0)
    A = rng.uniform(0.5, 1.1, (7, 3))
    B = rng.uniform(0, 0.2, (7, 3))
    gap0 = rng.uniform(0, 2, 3)
    out = unrolled_bound(gap0, A, B)
    closed = np.prod(A, 0) * gap0 + sum(B[t] * np.prod(A[t + 1:], 0) for t in range(7))
    np.testing.assert_allclose(out[-1], closed, rtol=1e-12)


def test_envelope_covers_every_point():
    rng = np.random.default_rng(1)
    g = rng.uniform(0, 3, 50)
    gk = 0.4 + 1.5 * g + rng.uniform(0, 0.3, 50)
    xi1, xi2 = fit_envelope(gk, g)
    assert np.all(gk <= xi1 + xi2 * g + 1e-12)
    assert xi1 >= 0 and xi2 >= 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_measured_gap_never_exceeds_the_bound(seed):
    """bound_check: dense l2-strongly convex backend, I = 1 full-batch step, eta = 1/L,
    normalised over received uploads. The gap is measured against the exact F*."""
    from fedopt.fl.config import RunConfig
    from fedopt.fl.runtime import Simulation

    cfg = RunConfig.load(BOUND_CHECK, [f"seed={seed}", "rounds=25"])
    sim = Simulation(cfg, None, progress=False, track_bound=True)
    summary = sim.run()
    b = summary["bound"]
    gap = np.array([[r[f"gap_{m}"] for m in range(2)] for r in sim.rows])
    bound = np.array([[r[f"bound_{m}"] for m in range(2)] for r in sim.rows])
    assert np.all(gap >= -1e-12)  # F* really is the minimum
    assert np.all(gap <= bound), (gap - bound).max()
    assert b["holds"]
    assert b["lr"] == pytest.approx(1 / b["L"])
    assert gap[-1].max() < gap[0].max()  # training reduced the gap
