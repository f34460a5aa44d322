"""The canonical round instance (7): validation, exact JSON round trips, the shipped examples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedopt.costs import RoundSystem
from fedopt.errors import InstanceError
from fedopt.instances import load_instance
from fedopt.round_instance import RoundInstance

SHARED = Path(__file__).resolve().parents[1] / "experiments" / "instances"
EXAMPLES = sorted(SHARED.glob("round_example_*.json"))


def _random(seed: int, K: int = 4, M: int = 3, with_x: bool = True) -> RoundInstance:
    rng = np.random.default_rng(seed)
    b_min = rng.uniform(1e-3, 0.2, (K, M))
    b_min[0, 1] = np.inf
    x = np.zeros((K, M), np.int8)
    x[1, 0] = x[2, 2] = 1
    return RoundInstance(
        a=rng.uniform(0, 1e-3, K), kappa=rng.uniform(0, 1, K), omega=rng.dirichlet(np.ones(K)),
        S=rng.uniform(1e5, 1e7, M), b_min=b_min, E_cmp=rng.uniform(0, 1, (K, M)),
        Delta=rng.uniform(0, 1, (K, M)), Gamma=rng.uniform(0, 1, (K, M)), rho=rng.uniform(),
        B=1e6 * rng.uniform(1, 2), theta=rng.uniform(0.5, 2), alpha=3.5, P_min=1e-3,
        P_max=0.2, M_max=2, floor=1, x=x if with_x else None)


FIELDS = ("a", "kappa", "omega", "S", "b_min", "E_cmp", "Delta", "Gamma")
SCALARS = ("rho", "B", "theta", "alpha", "P_min", "P_max", "M_max", "floor")


@pytest.mark.parametrize("seed", range(5))
def test_json_round_trip_is_exact(seed):
    inst = _random(seed, with_x=seed % 2 == 0)
    back = RoundInstance.from_json(inst.to_json())
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(inst, name))
    for name in SCALARS:
        assert getattr(back, name) == getattr(inst, name)
    if inst.x is None:
        assert back.x is None
    else:
        np.testing.assert_array_equal(back.x, inst.x)
    assert back.to_dict() == inst.to_dict()
    assert json.loads(inst.to_json())["b_min"][0][1] is None  # inf: null in JSON
    assert isinstance(load_instance(inst.to_json()), RoundInstance)


def test_system_is_the_round_system():
    inst = _random(7)
    sys_ = inst.system()
    assert isinstance(sys_, RoundSystem) and (sys_.K, sys_.M) == (4, 3)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(sys_, name), getattr(inst, name))
    again = RoundInstance.from_system(sys_, inst.M_max, inst.floor, inst.x)
    assert again.to_dict() == inst.to_dict()


GOOD = _random(11).to_dict()


def _bad(**changes) -> dict:
    d = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if v is KeyError:
            d.pop(k)
        elif callable(v):
            v(d)
        else:
            d[k] = v
    return d


def _set(key, k, m, v):
    def f(d):
        d[key][k][m] = v
    return f


MALFORMED = {
    "missing_a": (_bad(a=KeyError), "missing key 'a'"),
    "missing_Gamma": (_bad(Gamma=KeyError), "missing key 'Gamma'"),
    "missing_M_max": (_bad(M_max=KeyError), "missing key 'M_max'"),
    "a_string": (_bad(a="abc"), "'a' must be a list"),
    "a_negative": (_bad(a=[1e-4, -1.0, 1e-4, 1e-4]), "'a[1]' = -1 is negative"),
    "kappa_length": (_bad(kappa=[0.1]), "'kappa' has length 1, expected 4"),
    "omega_bool": (_bad(omega=[0.25, True, 0.25, 0.25]), "'omega[1]' is True"),
    "S_huge": (json.dumps(_bad(S=["HUGE", 1.0, 1.0])).replace('"HUGE"', "1e400"),
               "'S[0]' is inf"),
    "S_empty": (_bad(S=[]), "'S' is empty"),
    "a_empty": (_bad(a=[]), "'a' is empty"),
    "b_min_rows": (_bad(b_min=[[0.1, 0.1, 0.1]]), "'b_min' has 1 rows, expected K = 4"),
    "b_min_row_len": (_bad(b_min=lambda d: d["b_min"][1].pop()),
                      "'b_min[1]' has length 2, expected M = 3"),
    "b_min_zero": (_bad(b_min=_set("b_min", 2, 1, 0.0)), "'b_min[2][1]' = 0"),
    "b_min_string": (_bad(b_min=_set("b_min", 3, 2, "0.1")), "'b_min[3][2]' is '0.1'"),
    "E_cmp_null": (_bad(E_cmp=_set("E_cmp", 1, 1, None)), "'E_cmp[1][1]' is None"),
    "Delta_negative": (_bad(Delta=_set("Delta", 0, 2, -0.5)), "'Delta[0][2]' = -0.5 is negative"),
    "Gamma_nested": (_bad(Gamma=_set("Gamma", 3, 0, [1.0])), "'Gamma[3][0]' is [1.0]"),
    "Gamma_row_not_list": (_bad(Gamma=lambda d: d["Gamma"].__setitem__(1, 0.5)),
                           "'Gamma[1]' must be a list"),
    "rho_negative": (_bad(rho=-1.0), "'rho' = -1 is negative"),
    "B_zero": (_bad(B=0), "'B' = 0; it must be > 0"),
    "theta_string": (_bad(theta="1"), "'theta' must be a number"),
    "alpha_two": (_bad(alpha=2.0), "'alpha' = 2"),
    "P_min_above_P_max": (_bad(P_min=0.5), "'P_min' = 0.5 exceeds 'P_max' = 0.2"),
    "M_max_zero": (_bad(M_max=0), "'M_max' = 0"),
    "M_max_float": (_bad(M_max=2.0), "'M_max' must be an integer"),
    "floor_negative": (_bad(floor=-1), "'floor' = -1"),
    "x_two": (_bad(x=_set("x", 1, 0, 2)), "'x[1][0]' = 2"),
    "x_on_missed_deadline": (_bad(x=_set("x", 0, 1, 1)), "'x[0][1]' = 1 on a pair"),
    "x_shape": (_bad(x=[[0, 0, 0]]), "'x' has 1 rows"),
    "wrong_problem": (_bad(problem="power"), "missing key 'W'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_key_is_one_line_naming_it(case, tmp_path):
    data, needle = MALFORMED[case]
    path = tmp_path / "round.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(InstanceError) as exc:
        load_instance(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert needle in msg, msg


def test_round_problem_checked_and_duplicates_refused(tmp_path):
    with pytest.raises(InstanceError, match="'problem' is 'round', expected 'power'"):
        load_instance(json.dumps(GOOD), problem="power")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(GOOD)[:-1] + ', "M_max": 1}')
    with pytest.raises(InstanceError, match="dup.json: duplicate key 'M_max'"):
        load_instance(dup)
    nan = json.dumps(GOOD).replace('"rho": ', '"rho": NaN, "x_": ', 1)
    with pytest.raises(InstanceError, match="'NaN' is not allowed"):
        load_instance(nan)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_load_and_match_the_defaults(path):
    inst = load_instance(path)
    assert isinstance(inst, RoundInstance)
    assert (inst.K, inst.M, inst.M_max) == ({"round_example_0": 3, "round_example_1": 8}[path.stem],
                                            3, 2)
    assert inst.x is not None and inst.floor == math.ceil(0.3 * inst.K)
    ref = json.loads(path.read_text())["reference"]
    assert ref["scip_bound"] <= ref["scip_objective"] * (1 + 1e-6)
    assert ref["scip_bound"] <= ref["bcd_objective"] * (1 + 1e-6)


def _assert_same_instance(got, want, where="instance"):
    """Equal keys, shapes, integers and strings; floats to 4 ulp (np.exp and np.log may round
    differently on another CPU's SIMD path or numpy release: 1 ulp was seen in Gamma)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _assert_same_instance(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_instance(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float), where
        np.testing.assert_array_max_ulp(got, want, maxulp=4)
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


def test_examples_are_what_validate_round_draws():
    """The files hold the rounds that fedopt validate round's code draws (independent rebuild)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mk", SHARED / "make_round_examples.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    for path, K in zip(EXAMPLES, (3, 8)):
        data = json.loads(path.read_text())
        data.pop("reference")
        _assert_same_instance(mk.draw(K).to_dict(), data, path.stem)
    with pytest.raises(AssertionError):  # a changed draw is still caught
        data["Gamma"][0][0] *= 1 + 1e-12
        _assert_same_instance(mk.draw(8).to_dict(), data)
