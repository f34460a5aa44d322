"""Capped-simplex projection (12) against a CVXPY QP; systematic rounding's marginals."""

import cvxpy as cp
import numpy as np
import pytest

from fedopt.online import project_capped_simplex, systematic_round


def _qp(y, cap, mask):
    x = cp.Variable(y.size)
    cons = [x >= 0, x <= mask.astype(float), cp.sum(x) <= cap]
    cp.Problem(cp.Minimize(cp.sum_squares(x - y)), cons).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-14, tol_gap_rel=1e-14, tol_feas=1e-14)
    return x.value


@pytest.mark.parametrize("M,cap", [(3, 2), (5, 1), (6, 4), (4, 4)])
def test_projection_matches_qp(M, cap):
    rng = np.random.default_rng(M * 10 + cap)
    y = rng.normal(0.4, 1.2, (60, M))
    y[::7] = rng.uniform(0, 1, (len(y[::7]), M))  # interior points too
    mask = rng.random((60, M)) > 0.25
    x = project_capped_simplex(y, cap, mask)
    ref = np.array([_qp(y[i], cap, mask[i]) for i in range(len(y))])
    assert np.max(np.abs(x - ref)) < 1e-8
    assert np.all(x.sum(axis=1) <= cap + 1e-12) and np.all(x >= 0) and np.all(x <= 1)


def test_projection_is_identity_inside():
    rng = np.random.default_rng(1)
    x = rng.dirichlet(np.ones(4), 20) * 1.5
    x = np.minimum(x, 1.0)
    assert np.allclose(project_capped_simplex(x, 2), x, atol=0, rtol=0)


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_systematic_rounding_marginals_and_cap(cap):
    """Acceptance: the mean of 1e4 draws is within 0.01 of x̃ (4 modules; std error <= 0.005)
    and 1ᵀx <= M_max on every draw."""
    rng = np.random.default_rng(cap)
    x_frac = project_capped_simplex(rng.normal(0.5, 0.6, (1, 4)), cap)
    draws = np.stack([systematic_round(x_frac, cap, rng) for _ in range(10_000)])
    assert np.all(draws.sum(axis=2) <= cap)
    assert set(np.unique(draws)) <= {0, 1}
    assert np.max(np.abs(draws.mean(axis=0) - x_frac)) < 0.01


def test_systematic_rounding_is_unbiased_z_test():
    """Many rows at once, 1e5 draws: every entry's z-score against E[x] = x̃ is below 5."""
    rng = np.random.default_rng(11)
    x_frac = project_capped_simplex(rng.normal(0.5, 0.6, (8, 4)), 2)
    x_frac[0] = 0.0
    x_frac[1] = [1.0, 0.0, 0.75, 0.25]
    n = 100_000
    draws = systematic_round(np.tile(x_frac, (n, 1)), 2, rng).reshape(n, *x_frac.shape)
    assert draws.sum(axis=2).max() <= 2
    mean = draws.mean(axis=0)
    se = np.sqrt(np.maximum(x_frac * (1 - x_frac), 1e-12) / n)
    assert np.max(np.abs(mean - x_frac) / se) < 5
    # a row summing to an integer always selects exactly that many
    assert np.array_equal(systematic_round(np.repeat(x_frac[1:2], 50, 0), 2, rng).sum(1), np.full(50, 2))


def test_rounding_never_exceeds_cap_under_float_excess():
    x = np.array([[0.7, 0.7, 0.6 + 1e-12]])  # sums to 2 + 1e-12
    rng = np.random.default_rng(0)
    assert max(systematic_round(x, 2, rng).sum() for _ in range(2000)) <= 2
