"""Optional backend capabilities are declared Protocols, checked with isinstance: the dense
synthetic backend is Theorem 1's oracle, the LoRA-style one is not, and asking the runtime
for a capability the backend lacks is one ConfigError."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.backends import (
    SupportsFullBatch,
    SupportsSaving,
    SupportsSmoothness,
    SupportsTheoremOracle,
    TrainingBackend,
    make_backend,
)
from fedopt.config import SystemConfig
from fedopt.errors import ConfigError
from fedopt.fl.config import RunConfig
from fedopt.fl.runtime import Simulation
from fedopt.population import draw_population


@pytest.mark.parametrize("dense", [False, True])
def test_the_synthetic_backend_declares_what_it_has(dense):
    cfg = SystemConfig(K=4)
    be = make_backend("synthetic", cfg, draw_population(cfg, 0), 0, dense=dense)
    assert isinstance(be, TrainingBackend) and isinstance(be, SupportsFullBatch)
    assert isinstance(be, SupportsTheoremOracle) is dense
    assert isinstance(be, SupportsSmoothness) is dense
    assert not isinstance(be, SupportsSaving)


def test_missing_capabilities_are_one_config_error():
    run = RunConfig.from_dict({"K": 4, "rounds": 1, "checkpoint_every": 0})
    with pytest.raises(ConfigError, match="dense"):
        Simulation(run, None, progress=False, track_bound=True)
    with pytest.raises(ConfigError, match="inverse_L"):
        Simulation(run.replace(step_size="inverse_L"), None, progress=False)


def test_inverse_L_is_one_over_the_backends_L():
    run = RunConfig.from_dict({"K": 4, "M": 2, "ranks": [2, 4], "rounds": 1, "dense": True,
                               "checkpoint_every": 0, "step_size": "inverse_L"})
    sim = Simulation(run, None, progress=False)
    mu, L = sim.backend.smoothness()
    assert sim.system.lr == 1.0 / L and sim.engine.lr == 1.0 / L and mu > 0
    assert np.isfinite(sim.step()["energy"])
