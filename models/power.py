"""Declarative Pyomo model of one UE's power problem (21) in canonical form.

    min_p  Σ_m W_m (1 - exp(-A_m / p - kappa p^(-2/alpha))) + C p      (21)
    s.t.   p_min <= p <= p_max                                          (7e)
"""

from __future__ import annotations

import pyomo.environ as pyo

__all__ = ["power_model"]


def power_model(instance) -> pyo.ConcreteModel:
    """Pyomo ConcreteModel of (21) for a :class:`fedopt.instances.PowerInstance`.

    Variable ``p`` in [p_min, p_max]; objective ``obj``. p^(-2/alpha) is written
    exp(-(2/alpha) ln p), which SCIP handles as a composition of exp and log.
    """
    W, A = instance.W.tolist(), instance.A.tolist()
    g = 2.0 / instance.alpha
    m = pyo.ConcreteModel(name="power (21)")
    m.p = pyo.Var(bounds=(instance.p_min, instance.p_max), initialize=instance.p_max)
    interf = instance.kappa * pyo.exp(-g * pyo.log(m.p)) if instance.kappa > 0 else 0.0
    m.obj = pyo.Objective(
        expr=sum(W[i] * (1 - pyo.exp(-A[i] / m.p - interf)) for i in range(len(W)))
        + instance.C * m.p,
        sense=pyo.minimize,
    )
    return m
