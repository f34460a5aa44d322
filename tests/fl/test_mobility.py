"""UE mobility: the random walk keeps every UE in the cell annulus and moves it by the step."""

from __future__ import annotations

import numpy as np

from fedopt.fl.mobility import random_walk
from fedopt.population import uniform_disc


def test_random_walk_stays_in_the_annulus_and_moves_by_the_step():
    rng = np.random.default_rng(0)
    pos = uniform_disc(rng, 2000, 10.0, 178.0)
    for _ in range(50):
        new = random_walk(pos, 7.0, 10.0, 178.0, rng)
        r = np.hypot(new[:, 0], new[:, 1])
        assert r.min() >= 10.0 - 1e-9 and r.max() <= 178.0 + 1e-9
        moved = np.hypot(*(new - pos).T)
        # away from the borders (no reflection) a UE moves exactly one step
        inner = (np.hypot(pos[:, 0], pos[:, 1]) > 10.0 + 7.0) & (np.hypot(pos[:, 0], pos[:, 1]) < 178.0 - 7.0)
        np.testing.assert_allclose(moved[inner], 7.0, rtol=1e-9)
        # a reflection moves the overshoot point radially by 2 x overshoot <= 2 steps
        assert np.all(moved <= 3 * 7.0 + 1e-9)
        pos = new
    np.testing.assert_array_equal(random_walk(pos, 0.0, 10.0, 178.0, rng), pos)
