"""Eq. (15) against a PPP Monte-Carlo simulation, and its monotonicity."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedopt import SystemConfig
from fedopt.channel import (
    c_alpha,
    interference_coefficient,
    monte_carlo_success,
    noise_coefficient,
    path_gain,
    success_probability,
)

CFG = SystemConfig()
# A noisier config so that both terms of (15) matter on the grid (a_k b / p up to ~2).
NOISY = SystemConfig(N0="-160 dBm/Hz")


def test_c_alpha_closed_forms():
    for alpha in (2.5, 3.0, 3.5, 4.0, 6.0):
        delta = 2 / alpha
        assert math.isclose(c_alpha(alpha), (2 * math.pi / alpha) / math.sin(2 * math.pi / alpha), rel_tol=1e-12)
        assert math.isclose(c_alpha(alpha), math.gamma(1 + delta) * math.gamma(1 - delta), rel_tol=1e-12)
    assert math.isclose(c_alpha(4.0), math.pi / 2, rel_tol=1e-12)


def test_coefficients_by_hand():
    # g(100 m) = (c / (4 pi 2.4 GHz))^2 100^-3.5
    g = (299_792_458.0 / (4 * math.pi * 2.4e9)) ** 2 * 100.0**-3.5
    assert math.isclose(path_gain(CFG, 100.0), g, rel_tol=1e-12)
    n0 = 10 ** (-17.4) * 1e-3
    assert math.isclose(noise_coefficient(CFG, 100.0), 20e6 * n0 / g, rel_tol=1e-12)
    kappa = math.pi * 1e-5 * 100.0**2 * c_alpha(3.5) * 0.1 ** (2 / 3.5)
    assert math.isclose(interference_coefficient(CFG, 100.0), kappa, rel_tol=1e-12)


def test_closed_form_matches_monte_carlo_on_grid():
    """>= 20 (d, p, b) points, |q_MC - q| <= 0.01 with standard errors < 0.003 (issue 3)."""
    d, p, b = (g.ravel() for g in np.meshgrid([20.0, 40.0, 60.0, 80.0], [0.1, 0.2], [0.05, 0.3, 1.0],
                                              indexing="ij"))
    res = monte_carlo_success(NOISY, d, p, b, n_draws=30_000, seed=1, tol=1e-4)
    assert d.size >= 20
    assert np.all(res.se < 0.003)
    assert np.max(np.abs(res.q - res.closed_form)) <= 0.01
    # and not trivially: the grid spans q from ~0.27 to ~0.98
    assert res.closed_form.min() < 0.3 and res.closed_form.max() > 0.95
    # the truncated disc is honest: its radius keeps the bound below 1e-4
    assert res.radius > 1e4


def test_monte_carlo_without_interference_is_rayleigh_noise_only():
    # lambda -> tiny: q -> exp(-a b / p), an independent closed form of the noise part alone
    cfg = SystemConfig(gnb_density=1e-9, N0="-150 dBm/Hz", d_min=1.0)
    res = monte_carlo_success(cfg, 50.0, 0.05, 0.5, n_draws=40_000, seed=3)
    exact = math.exp(-noise_coefficient(cfg, 50.0) * 0.5 / 0.05)
    assert abs(res.q[0] - exact) < 4 * res.se[0] + 1e-3


positive = st.floats(min_value=1e-3, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(d=st.floats(1.0, 500.0), p=st.floats(1e-4, 1.0), b=positive, db=positive, dp=positive)
def test_q_is_a_probability_and_monotone(d, p, b, db, dp):
    cfg = NOISY
    q = success_probability(cfg, d, p, b)
    assert 0.0 <= q <= 1.0
    assert success_probability(cfg, d, p, b + db) <= q  # decreasing in b
    assert success_probability(cfg, d, p * (1 + dp), b) >= q  # increasing in p


def test_broadcasting():
    q = success_probability(CFG, np.array([10.0, 50.0, 100.0])[:, None, None],
                            np.array([0.01, 0.2])[None, :, None], np.array([0.01, 0.1, 1.0]))
    assert q.shape == (3, 2, 3)
