"""Online switching policies for (8)-(12): which UE trains which LoRA module each round.

Every policy is a :class:`SwitchingPolicy`, a pure ``(init, update)`` pair with plain-data
state (optax style)::

    policy = make_policy("primal_dual", beta=0.3, M_max=2)
    state = policy.init(K, M)
    for t in range(T):
        x, state = policy.update(costs_t, feasible_t, t, state)

Names as in MODEL.md: ``primal_dual`` (10)-(12), ``lyapunov``, ``greedy``, ``one_shot`` and the
offline ``hindsight`` LP (needs every round's costs: ``make_policy("hindsight", ..., costs=u)``).
"""

from __future__ import annotations

from .base import (
    PolicyState,
    SwitchingPolicy,
    _check_common,
    best_vertex,
    check_round_inputs,
    record_outcome,
    state_from_json,
    state_to_json,
)
from .baselines import greedy, one_shot
from .hindsight import HindsightResult, hindsight, solve_hindsight
from .lyapunov import lyapunov
from .primal_dual import primal_dual
from .projection import project_capped_simplex, systematic_round

__all__ = [
    "POLICIES",
    "PolicyState",
    "SwitchingPolicy",
    "HindsightResult",
    "best_vertex",
    "check_round_inputs",
    "greedy",
    "hindsight",
    "lyapunov",
    "make_policy",
    "one_shot",
    "primal_dual",
    "project_capped_simplex",
    "record_outcome",
    "solve_hindsight",
    "state_from_json",
    "state_to_json",
    "systematic_round",
]

POLICIES = {
    "primal_dual": primal_dual,
    "lyapunov": lyapunov,
    "greedy": greedy,
    "one_shot": one_shot,
    "hindsight": hindsight,
}


def make_policy(name: str, beta: float, M_max: int, **params) -> SwitchingPolicy:
    """Build a policy by name (scipy-style dispatch). Unknown names list the known ones."""
    if isinstance(name, SwitchingPolicy):
        return name
    if not isinstance(name, str):
        raise TypeError(f"policy: expected a policy name, got {type(name).__name__}")
    beta, M_max = _check_common(beta, M_max, params.get("seed", 0),
                                params.get("on_infeasible", "raise"))
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    if beta > M_max:
        from ..errors import InstanceError

        raise InstanceError(f"beta: {beta:g} exceeds M_max = {M_max}; the participation "
                            f"floor (7f) cannot be met")
    return factory(beta, M_max, **params)
