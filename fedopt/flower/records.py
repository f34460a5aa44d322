"""Flower records <-> fedopt data: module parameters, per-node configs and replies.

Pure helpers shared by the strategy and the ClientApp. One :class:`~flwr.app.ArrayRecord` per
module m travels under the key ``module-<m>``; the global state the strategy hands to
``Strategy.start`` is one ArrayRecord with keys ``<m>.<name>`` (a Flower ``Result.arrays``),
and with M = 1 the module's own names, so ``ArrayRecord(model.state_dict())`` is a valid
start and ``result.arrays.to_torch_state_dict()`` loads back into the model.
ConfigRecord values must be Python scalars or homogeneous lists (numpy scalars other than
float64 raise), so every value is converted here.

**Train replies** (:func:`read_train_reply`): an ArrayRecord under ``module-<m>`` is the
*change* θ_m' − θ_m (the g of (1); fedopt's clients); an ArrayRecord under the strategy's
``arrayrecord_key`` (Flower's convention, ``"arrays"``) holds the *new weights*, turned into
the change here. The key says which, so the two can never be confused; a reply whose arrays
do not match θ_m's names and shapes is refused as malformed.
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
    "PROBE_KEY",
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
    "read_train_reply",
]

CONFIG_KEY = "config"
METRICS_KEY = "metrics"
PROBE_KEY = "probe"  # an evaluate reply's probe measurements (the next round's, folded in)
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
    """All M modules in one ArrayRecord, keys ``<m>.<name>`` (the strategy's global state);
    with M = 1 the names alone (a model's ``state_dict()`` as Flower users hold it)."""
    if len(params) == 1:
        return params_to_record(params[0])
    return ArrayRecord({f"{m}.{k}": Array(np.ascontiguousarray(v))
                        for m, p in enumerate(params) for k, v in p.items()})


def unpack_modules(record: ArrayRecord, M: int) -> list[Params]:
    """Inverse of :func:`pack_modules` (M = 1: every key is a name of module 0)."""
    if M == 1:
        return [record_to_params(record)]
    out: list[Params] = [{} for _ in range(M)]
    for key, arr in record.items():
        m, _, name = key.partition(".")
        if not m.isdigit() or int(m) >= M:
            raise ValueError(f"array '{key}': not '<m>.<name>' with m < M = {M} (pack_modules)")
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


def _check_like(update: Params, theta: Params, what: str) -> Params:
    if set(update) != set(theta):
        raise ValueError(f"{what}: arrays {sorted(update)} != the module's {sorted(theta)}")
    for k, v in update.items():
        if np.shape(v) != np.shape(theta[k]):
            raise ValueError(f"{what}: '{k}' has shape {np.shape(v)}, the module {np.shape(theta[k])}")
    return update


def read_train_reply(content, modules, params: list[Params], *, arrayrecord_key: str = "arrays",
                     weighted_by_key: str = "num-examples") -> dict[int, dict[str, Any]]:
    """A train reply as ``{m: {"update", "loss", "grad_sq", "n_samples"}}`` for the modules it
    carries (of those sent, ``modules``).

    fedopt's replies: ``module-<m>`` changes and a ``metrics`` record of per-module lists
    (:func:`reply_metrics`). Flower-convention replies: the new weights under
    ``arrayrecord_key`` (packed as :func:`pack_modules` packs the sent modules) and scalar
    metrics (``train_loss`` or ``loss``, ``weighted_by_key``); their ‖∇‖² is not measured
    (NaN). Raises ValueError / KeyError on anything else (the strategy counts it as an error).
    """
    modules = [int(m) for m in modules]
    metrics = content[METRICS_KEY] if METRICS_KEY in content.metric_records else MetricRecord()
    if any(module_key(m) in content.array_records for m in modules):
        r = read_reply_metrics(metrics)
        n = r["n_samples"] if r["n_samples"].size else np.full(len(r["modules"]), np.nan)
        if weighted_by_key != "num-examples" and weighted_by_key in metrics:
            n = np.asarray(metrics[weighted_by_key], dtype=float) * np.ones(len(r["modules"]))
        out = {}
        for j, m in enumerate(r["modules"]):
            m = int(m)
            if m not in modules:
                continue  # a module it was not asked to train
            upd = _check_like(record_to_params(content[module_key(m)]), params[m], module_key(m))
            out[m] = {"update": upd, "loss": float(r["loss"][j]), "grad_sq": float(r["grad_sq"][j]),
                      "n_samples": float(n[j])}
        return out
    if arrayrecord_key not in content.array_records:
        raise KeyError(f"no '{module_key(modules[0])}' (a change) or '{arrayrecord_key}' (new "
                       f"weights) ArrayRecord in the reply")
    record = content[arrayrecord_key]
    if len(params) == 1:
        new = {0: record_to_params(record)}
    else:
        new = {}
        for m, p in enumerate(unpack_modules(record, len(params))):
            if p:
                new[m] = p
    loss = metrics.get("train_loss", metrics.get("loss", float("nan")))
    n = metrics.get(weighted_by_key, float("nan"))
    out = {}
    for m in modules:
        if m not in new:
            raise KeyError(f"'{arrayrecord_key}' holds no weights of module {m}")
        w = _check_like(new[m], params[m], arrayrecord_key)
        out[m] = {"update": {k: np.asarray(w[k]) - params[m][k] for k in w},  # weights -> change
                  "loss": float(loss) if np.isscalar(loss) else float("nan"),
                  "grad_sq": float("nan"), "n_samples": float(n) if np.isscalar(n) else float("nan")}
    return out
