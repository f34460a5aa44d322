"""Declarative Pyomo model of the bandwidth problem (16) in canonical form.

    min_b  Σ_n ( -w_n exp(-a_n b_n) + c_n / b_n )            (16)
    s.t.   Σ_n b_n <= budget,   b_min_n <= b_n <= b_max_n    (7d)

The model only states the problem; ``fedopt.solvers`` solves whatever this returns.
"""

from __future__ import annotations

import pyomo.environ as pyo

__all__ = ["bandwidth_model"]


def bandwidth_model(instance) -> pyo.ConcreteModel:
    """Pyomo ConcreteModel of (16) for a :class:`fedopt.instances.BandwidthInstance`.

    Variables ``b[n]`` (n = 0..N-1) with bounds [b_min_n, b_max_n]; objective ``obj``;
    constraint ``budget``.
    """
    w, a, c = instance.w.tolist(), instance.a.tolist(), instance.c.tolist()
    lo, hi = instance.b_min.tolist(), instance.b_max.tolist()
    m = pyo.ConcreteModel(name="bandwidth (16)")
    m.N = pyo.RangeSet(0, instance.n - 1)
    m.b = pyo.Var(m.N, bounds=lambda _m, n: (lo[n], hi[n]), initialize=lambda _m, n: lo[n])
    m.obj = pyo.Objective(
        expr=sum(-w[n] * pyo.exp(-a[n] * m.b[n]) + c[n] / m.b[n] for n in m.N),
        sense=pyo.minimize,
    )
    m.budget = pyo.Constraint(expr=sum(m.b[n] for n in m.N) <= instance.budget)
    return m
