"""Flower records <-> fedopt data: module parameters, per-node configs and replies.

Pure helpers shared by the strategy and the ClientApp. One :class:`~flwr.app.ArrayRecord` per
module m travels under the key ``module-<m>``; the global state the strategy hands to
``Strategy.start`` is one ArrayRecord with keys ``<m>.<name>`` (a Flower ``Result.arrays``).
ConfigRecord values must be Python scalars or homogeneous lists (numpy scalars other than
float64 raise), so every value is converted here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

from ..backends.base import Params

__all__ = [
    "ACTION",
    "ACTION_PROBE",
    "ACTION_PROPERTIES",
    "CONFIG_KEY",
    "METRICS_KEY",
    "PROPERTY_KEYS",
    "module_key",
    "params_to_record",
    "record_to_params",
    "pack_modules",
    "unpack_modules",
    "train_config",
    "read_train_config",
    "reply_metrics",
    "read_reply_metrics",
]

CONFIG_KEY = "config"
METRICS_KEY = "metrics"
ACTION = "fedopt-action"  # QUERY messages: which question the server asks
ACTION_PROPERTIES = "properties"
ACTION_PROBE = "probe"
# what a node reports about itself (RoundState fields; distance may come from a channel model)
PROPERTY_KEYS = ("partition-id", "distance", "data-size", "cpu-freq", "cycles-per-bit", "samples")


def module_key(m: int) -> str:
    return f"module-{int(m)}"


def params_to_record(params: Params) -> ArrayRecord:
    """One module's ``{name: ndarray}`` as an ArrayRecord (dtype and shape preserved)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in params.items()})


def record_to_params(record: ArrayRecord) -> Params:
    return {k: v.numpy() for k, v in record.items()}


def pack_modules(params: list[Params]) -> ArrayRecord:
    """All M modules in one ArrayRecord, keys ``<m>.<name>`` (the strategy's global state)."""
    return ArrayRecord({f"{m}.{k}": Array(np.ascontiguousarray(v))
                        for m, p in enumerate(params) for k, v in p.items()})


def unpack_modules(record: ArrayRecord, M: int) -> list[Params]:
    out: list[Params] = [{} for _ in range(M)]
    for key, arr in record.items():
        m, _, name = key.partition(".")
        out[int(m)][name] = arr.numpy()
    return out


def _scalar(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return float(v)


def train_config(server_round: int, modules, power: float, bandwidth, success, steps: int,
                 lr: float, energy=None) -> ConfigRecord:
    """A fresh ConfigRecord for one node: its modules, p_k, b_{k,m}, q_{k,m} (lists in the
    order of ``modules``), the local steps I and the step size."""
    rec = {
        "server-round": int(server_round),
        "modules": [int(m) for m in modules],
        "power": float(power),
        "bandwidth": [float(b) for b in bandwidth],
        "success-prob": [float(q) for q in success],
        "local-steps": int(steps),
        "lr": float(lr),
    }
    if energy is not None:
        rec["energy"] = [float(e) for e in energy]
    return ConfigRecord(rec)


def read_train_config(config: ConfigRecord) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in config.items()}


def reply_metrics(modules, loss, grad_sq, n_samples) -> MetricRecord:
    """The ClientApp's measurements, one entry per module it trained (or probed)."""
    return MetricRecord({
        "modules": [int(m) for m in modules],
        "loss": [float(v) for v in loss],
        "grad-sq": [float(v) for v in grad_sq],
        "num-examples": [float(v) for v in n_samples],
    })


def read_reply_metrics(metrics: MetricRecord) -> dict[str, np.ndarray]:
    return {
        "modules": np.asarray(metrics["modules"], dtype=int),
        "loss": np.asarray(metrics["loss"], dtype=float),
        "grad_sq": np.asarray(metrics["grad-sq"], dtype=float),
        "n_samples": np.asarray(metrics.get("num-examples", []), dtype=float),
    }


def properties_record(props: dict[str, Any]) -> ConfigRecord:
    return ConfigRecord({k: _scalar(v) for k, v in props.items()})
