"""The switching-policy interface: an optax-like pure (init, update) pair with explicit state.

A policy decides x^t ∈ {0,1}^{K×M} each round from the per-pair costs u^t of (8), the
feasibility mask (pairs that can meet the deadline) and the round index. Its state is a flat
``dict[str, np.ndarray | float | int]`` of plain data, so a run checkpoints it with
``np.savez`` or JSON and resumes exactly (see :func:`state_to_json`).

Deferred feedback: the state holds ``played`` (K, M), the decision that was actually run, and
``played_energy`` (K,), its realised energy E_k^t of (4). ``update`` writes its own x there;
a driver that changes x afterwards (the allocator's bandwidth repair) or measures the real
energy writes them back with :func:`record_outcome` before the next ``update``. Queue and
dual updates that depend on the played round are applied at the start of the next update.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import bool_mask, choice, integer, numeric_array, real
from ..costs import best_vertex  # noqa: F401  (re-exported: the policies' argmin)
from ..errors import InstanceError

__all__ = [
    "PolicyState",
    "SwitchingPolicy",
    "check_round_inputs",
    "record_outcome",
    "state_to_json",
    "state_from_json",
    "best_vertex",
]

PolicyState = dict[str, Any]


@dataclass(frozen=True)
class SwitchingPolicy:
    """A switching policy as a pure pair of functions (optax's ``GradientTransformation``).

    ``init(K, M) -> state`` and
    ``update(costs, feasible, t, state, *, energy=None, active=None) -> (x, state)``:

    - ``costs`` (K, M): u^t of (8), finite.
    - ``feasible`` (K, M) bool: pairs that can meet the deadline (b_min finite).
    - ``t``: the round index.
    - ``energy`` (K, M) or None: the pairs' estimated energy E_{k,m}^t (energy-budget variants).
    - ``active`` (K,) bool or None: UEs present this round (None: all).

    ``x`` is an int8 (K, M) array in {0,1} with x ≤ feasible and 1ᵀx_k ≤ M_max.
    """

    name: str
    init: Callable[[int, int], PolicyState]
    update: Callable[..., tuple[np.ndarray, PolicyState]]
    params: dict = field(default_factory=dict)


def check_round_inputs(costs, feasible, state: PolicyState, beta: float, M_max: int,
                       active=None, energy=None, on_infeasible: str = "raise", *, t=None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate one round's inputs; return (costs, feasible, active, stranded).

    One-line :class:`InstanceError` for a K×M mismatch, NaN/inf costs, and a present UE with no
    feasible pair while β > 0 (unless ``on_infeasible == 'flag'``: then ``stranded`` (K,) bool
    marks those UEs and the caller reports them). A wrong type (a string cost, a NaN or
    ``"no"`` in a mask, a float round index ``t``) is a ``TypeError``.
    """
    if not isinstance(state, dict) or "K" not in state or "M" not in state:
        raise TypeError(f"state: expected the policy state from init(K, M), got {type(state).__name__}")
    if t is not None:
        integer("t", t)
    K, M = int(state["K"]), int(state["M"])
    costs = numeric_array("costs", costs)
    if costs.shape != (K, M):
        raise InstanceError(f"costs: shape {costs.shape} does not match the policy's K×M = ({K}, {M})")
    bad = np.argwhere(~np.isfinite(costs))
    if bad.size:
        k, m = bad[0]
        raise InstanceError(f"costs[{k}, {m}] is {costs[k, m]}; every cost u_(k,m) must be finite")
    feasible = bool_mask("feasible", feasible)
    if feasible.shape != (K, M):
        raise InstanceError(f"feasible: shape {feasible.shape} does not match K×M = ({K}, {M})")
    active = np.ones(K, dtype=bool) if active is None else bool_mask("active", active, (K,))
    if energy is not None:
        energy = numeric_array("energy", energy)
        if energy.shape != (K, M) or not np.all(np.isfinite(energy)):
            raise InstanceError(f"energy: expected a finite ({K}, {M}) array, got shape {energy.shape}")
    if beta > M_max:
        raise InstanceError(f"beta: {beta:g} exceeds M_max = {M_max}; the participation floor (7f) cannot be met")
    stranded = active & ~feasible.any(axis=1)
    if beta > 0 and stranded.any() and on_infeasible == "raise":
        k = int(np.flatnonzero(stranded)[0])
        raise InstanceError(
            f"UE {k} has no feasible module (every pair misses the deadline T_max) while "
            f"beta = {beta:g} > 0; {int(stranded.sum())} UE(s) affected"
        )
    return costs, feasible & active[:, None], active, stranded


def record_outcome(state: PolicyState, x: np.ndarray, energy: np.ndarray | None = None) -> PolicyState:
    """Write back the decision that was actually played (and its per-UE energy E_k^t, (K,) or
    (K, M) per pair) so the next ``update`` charges queues and duals with the real round."""
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a policy state dict, got {type(state).__name__}")
    new = dict(state)
    x = bool_mask("x", x).astype(np.int8)
    new["played"] = x.copy()
    if energy is not None:
        e = numeric_array("energy", energy)
        new["played_energy"] = (e * x).sum(axis=1) if e.ndim == 2 else e.copy()
    return new


def state_to_json(state: PolicyState) -> str:
    """Serialise a policy state (plain arrays and scalars) to JSON."""
    out = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            out[k] = {"__array__": v.tolist(), "dtype": str(v.dtype)}
        elif isinstance(v, (np.integer, np.floating)):
            out[k] = v.item()
        else:
            out[k] = v
    return json.dumps(out)


def state_from_json(text: str) -> PolicyState:
    data = json.loads(text)
    out: PolicyState = {}
    for k, v in data.items():
        if isinstance(v, dict) and "__array__" in v:
            out[k] = np.asarray(v["__array__"], dtype=v["dtype"])
        else:
            out[k] = v
    return out


def _finite(name: str, v: float, lo: float = 0.0) -> float:
    return real(name, v, lo)


def _check_common(beta, M_max, seed, on_infeasible: str = "raise") -> tuple[float, int]:
    """The arguments every policy factory shares; returns (beta, M_max)."""
    beta = real("beta", beta, 0.0)
    M_max = integer("M_max", M_max, 1)
    integer("seed", seed, 0)
    choice("on_infeasible", on_infeasible, ("raise", "flag"))
    return beta, M_max
