"""SystemConfig: defaults, units, YAML/--set, and one-line ConfigErrors that name the key."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedopt import ConfigError, SystemConfig, draw_population

FEDOPT = [str(Path(sys.executable).with_name("fedopt"))]


def test_defaults_are_model_md():
    cfg = SystemConfig()
    assert (cfg.K, cfg.M, cfg.M_max, cfg.ranks) == (100, 3, 2, (4, 8, 16))
    assert math.isclose(cfg.N0, 10 ** (-174 / 10) * 1e-3)
    assert math.isclose(cfg.radius, 1 / math.sqrt(math.pi * 1e-5))
    np.testing.assert_allclose(cfg.nominal_module_bits(), [9216 * r * 16 for r in (4, 8, 16)])


def test_units():
    cfg = SystemConfig.from_dict({"N0": "-170 dBm/Hz", "P_max": "23 dBm", "P_min": "1 mW",
                                  "B": "10 MHz", "theta": "3 dB", "f_c": "3.5GHz"})
    assert math.isclose(cfg.N0, 10 ** (-17.0) * 1e-3)
    assert math.isclose(cfg.P_max, 10 ** 2.3 * 1e-3)
    assert math.isclose(cfg.P_min, 1e-3)
    assert cfg.B == 10e6 and cfg.f_c == 3.5e9
    assert math.isclose(cfg.theta, 10**0.3)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("K: 20\nP_max: 100 mW\nranks: [2, 4]\n")
    cfg = SystemConfig.from_yaml(path, overrides=["beta=0.2", "N0=-160dBm/Hz"])
    assert (cfg.K, cfg.M, cfg.ranks, cfg.beta) == (20, 2, (2, 4), 0.2)
    assert math.isclose(cfg.P_max, 0.1)
    assert SystemConfig.from_yaml(path).with_overrides(["M=1"]).ranks == (8,)
    # round trip
    again = SystemConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"alpha": 2.0}, r"^alpha: must be > 2, got 2"),
        ({"alpha": 1.5}, r"^alpha:"),
        ({"B": -1.0}, r"^B: must be > 0, got -1"),
        ({"zeta": float("nan")}, r"^zeta: NaN"),
        ({"P_min": 0.3}, r"^P_min: 0\.3 W exceeds P_max"),
        ({"M_max": 4}, r"^M_max: 4 exceeds M = 3"),
        ({"K": 0}, r"^K: must be >= 1, got 0"),
        ({"Pmax": 0.1}, r"^unknown key 'Pmax'; did you mean 'P_max'\?"),
        ({"betta": 0.1}, r"did you mean 'beta'"),
        ({"K": 1000}, r"^beta: the expected sum of b_min .* > 1"),
        ({"N0": "-170 dBz"}, r"^N0: unit 'dBz' not accepted"),
    ],
)
def test_config_errors_are_one_line(changes, pattern):
    with pytest.raises(ConfigError, match=pattern) as exc:
        SystemConfig.from_dict(changes)
    assert "\n" not in str(exc.value)


def test_population_draws():
    cfg = SystemConfig()
    pop = draw_population(cfg, 7)
    assert pop.d.min() >= cfg.d_min - 1e-9 and pop.d.max() <= cfg.radius + 1e-9
    assert math.isclose(pop.omega.sum(), 1.0)
    assert np.all((pop.f >= 1e9) & (pop.f <= 2e9)) and np.all((pop.c >= 500) & (pop.c <= 1500))
    # uniform in the disc: E[d^2] = (R^2 + d_min^2) / 2 (area-uniform), within 3 s.e. at K = 20000
    big = draw_population(cfg.replace(K=20000, beta=0.0), 1)
    r2 = big.d**2
    expected = (cfg.radius**2 + cfg.d_min**2) / 2
    assert abs(r2.mean() - expected) < 3 * r2.std() / math.sqrt(r2.size)
    # same seed, same draw
    np.testing.assert_array_equal(draw_population(cfg, 7).positions, pop.positions)


def test_expected_bandwidth_load_at_defaults_is_below_budget():
    cfg = SystemConfig()
    load = cfg.expected_bandwidth_load()
    # by hand: beta K mean_m E[b_min] with E over f, c of S_m / (B (T_max - t_cmp))
    pop = draw_population(cfg.replace(K=20000, beta=0.0), 0)
    mc = cfg.beta * cfg.K * pop.b_min(cfg).mean()
    assert load < 1.0
    assert abs(load - mc) / mc < 0.01


def test_cli_config_error_exit_code_2():
    proc = subprocess.run(FEDOPT + ["channel", "check", "--set", "alpha=2", "--no-plot"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "alpha" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(FEDOPT + ["channel", "check", "--set", "Kk=3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "did you mean 'K'" in proc.stderr


def test_cli_bad_argument_exit_code_2():
    proc = subprocess.run(FEDOPT + ["channel", "check", "--draws", "many"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
