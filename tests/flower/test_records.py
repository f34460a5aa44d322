"""Records: module arrays survive the trip, configs hold only Python values."""

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedopt.flower.records import (  # noqa: E402
    pack_modules,
    params_to_record,
    record_to_params,
    train_config,
    unpack_modules,
)


def test_modules_round_trip_exactly():
    rng = np.random.default_rng(0)
    params = [{"A": rng.normal(size=(r, 7)), "B": rng.normal(size=(3, r)).astype(np.float32)}
              for r in (2, 4, 8)]
    back = unpack_modules(pack_modules(params), 3)
    for p, q in zip(params, back):
        assert set(p) == set(q)
        for k in p:
            assert q[k].dtype == p[k].dtype and np.array_equal(q[k], p[k])
    one = record_to_params(params_to_record(params[1]))
    assert np.array_equal(one["A"], params[1]["A"])


def test_train_config_accepts_numpy_values():
    # numpy scalars other than float64 are rejected by ConfigRecord; train_config converts
    cfg = train_config(np.int64(3), np.array([0, 2]), np.float32(0.1), np.array([0.2, 0.3], np.float32),
                       np.array([0.9, 0.8]), np.int32(5), np.float32(0.5))
    assert cfg["modules"] == [0, 2] and isinstance(cfg["modules"][0], int)
    assert cfg["power"] == pytest.approx(0.1) and type(cfg["power"]) is float
    assert cfg["bandwidth"] == pytest.approx([0.2, 0.3])
    assert cfg["local-steps"] == 5 and cfg["server-round"] == 3
