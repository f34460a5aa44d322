"""Algorithm 2 for one round: the plug-in API of fedopt.

An FL system builds a :class:`RoundState` from its own bookkeeping each round and calls
``RoundAllocator.allocate(state)``; it gets back an :class:`Allocation` (x, p, b, q, E). The
state is plain data with no dependency on fedopt's runtime.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._checks import bool_mask, choice, integer, numeric_array, real
from .costs import (
    RoundSystem,
    nominal_allocation,
    switching_init,
    switching_terms,
    switching_update,
)
from .energy import computation_energy, compute_time, min_bandwidth
from .errors import InstanceError

__all__ = ["RoundState", "Allocation", "RoundAllocator"]


@dataclass
class RoundState:
    """What the allocator observes at the start of round t (Algorithm 2, step 1).

    Shapes: K UEs, M modules.

    - ``distance`` (K,): UE-gNB distances [m].
    - ``data_size`` (K,): local dataset sizes |D_k| (they give omega_k).
    - ``loss``, ``grad_sq`` (K, M): the backend's latest measured loss l_{k,m} and
      ||grad F_k(theta_0 + theta_m)||^2; NaN where a pair was not measured this round (the
      allocator's estimator keeps the last value).
    - ``cpu_freq`` f_k [Hz], ``cycles_per_bit`` c_k, ``samples`` D_k^t (K,).
    - ``fading`` (K,) or None: a known fade h_k; None means only its distribution is known,
      so q is the closed form (15).
    - ``available`` (K,) bool or None: UEs that can be scheduled this round (None: all).
    """

    t: int
    distance: np.ndarray
    data_size: np.ndarray
    loss: np.ndarray
    grad_sq: np.ndarray
    cpu_freq: np.ndarray
    cycles_per_bit: np.ndarray
    samples: np.ndarray
    fading: np.ndarray | None = None
    available: np.ndarray | None = None

    @property
    def K(self) -> int:
        return int(np.shape(self.distance)[0])

    @property
    def M(self) -> int:
        return int(np.shape(self.loss)[1])


@dataclass
class Allocation:
    """One round's decision and what it costs (Algorithm 2, step 2).

    x (K, M) in {0, 1}; p (K,) [W] (0 for a UE with no scheduled pair); b (K, M) bandwidth
    fractions (0 where x = 0);
    q (K, M) success probabilities (15); energy_computation / energy_communication (K, M) [J],
    the two terms of (4), 0 where x = 0; costs u (K, M) of (8); objective = Phi + rho Σ E of the
    round; bound / gap of the continuous (p, b) step where a certificate exists.
    """

    x: np.ndarray
    p: np.ndarray
    b: np.ndarray
    q: np.ndarray
    energy_computation: np.ndarray
    energy_communication: np.ndarray
    costs: np.ndarray
    objective: float
    bound: float = float("nan")
    gap: float = float("nan")
    iterations: int = 0
    status: str = "feasible"
    extras: dict = field(default_factory=dict)

    @property
    def energy(self) -> np.ndarray:
        """E_{k,m} of eq. (4), (K, M)."""
        return self.energy_computation + self.energy_communication


# --- Algorithm 2 ------------------------------------------------------------------------------


def _vec(name: str, v, K: int, positive: bool = False, allow_zero: bool = True) -> np.ndarray:
    arr = numeric_array(f"state.{name}", v)
    if arr.shape != (K,):
        raise InstanceError(f"state.{name}: shape {arr.shape}, expected ({K},) (one per UE)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InstanceError(f"state.{name}[{bad[0]}] is {arr[bad[0]]}; it must be finite")
    if positive:
        bad = np.flatnonzero(arr <= 0) if not allow_zero else np.flatnonzero(arr < 0)
        if bad.size:
            raise InstanceError(f"state.{name}[{bad[0]}] = {arr[bad[0]]:g}; it must be "
                                f"{'>= 0' if allow_zero else '> 0'}")
    return arr


def check_state(state: RoundState, M: int | None = None) -> None:
    """One-line :class:`InstanceError` for a malformed :class:`RoundState` (``TypeError`` for a
    wrong type: a string where a number or a boolean belongs)."""
    if not isinstance(state, RoundState):
        raise TypeError(f"state: expected a RoundState, got {type(state).__name__}")
    integer("state.t", state.t)
    K = int(np.shape(state.distance)[0]) if np.ndim(state.distance) == 1 else -1
    if K <= 0:
        raise InstanceError(f"state.distance: expected shape (K,), got {np.shape(state.distance)}")
    _vec("distance", state.distance, K, positive=True, allow_zero=False)
    d = _vec("data_size", state.data_size, K, positive=True)
    if d.sum() <= 0:
        raise InstanceError("state.data_size: the total data size must be > 0")
    _vec("cpu_freq", state.cpu_freq, K, positive=True, allow_zero=False)
    _vec("cycles_per_bit", state.cycles_per_bit, K, positive=True, allow_zero=False)
    _vec("samples", state.samples, K, positive=True)
    for name in ("loss", "grad_sq"):
        arr = numeric_array(f"state.{name}", getattr(state, name))
        if arr.ndim != 2 or arr.shape[0] != K:
            raise InstanceError(f"state.{name}: shape {arr.shape}, expected (K, M) with K = {K} UEs")
        if M is not None and arr.shape[1] != M:
            raise InstanceError(f"state.{name}: has {arr.shape[1]} modules, expected M = {M}")
        if np.isinf(arr).any():
            raise InstanceError(f"state.{name}: contains inf (use NaN for 'not measured')")
    if np.shape(state.loss) != np.shape(state.grad_sq):
        raise InstanceError(f"state.loss {np.shape(state.loss)} and state.grad_sq "
                            f"{np.shape(state.grad_sq)} differ in shape")
    if np.nanmin(np.asarray(state.grad_sq, float), initial=0.0) < 0:
        raise InstanceError("state.grad_sq: a squared gradient norm is negative")
    if state.fading is not None:
        _vec("fading", state.fading, K, positive=True, allow_zero=False)
    if state.available is not None:
        bool_mask("state.available", state.available, (K,))


class RoundAllocator:
    """Algorithm 2 for one round: switching x^t by an online policy, then BCD over (p, b).

    ``RoundAllocator(config, policy="primal_dual", power_method=None, bandwidth_method=None)``;
    each round ``allocate(state) -> Allocation``:

    1. update the Δ/Γ estimator with the state's measured ℓ and ‖∇‖² (NaN: keep last);
    2. price every pair, u^t of (8), at the nominal allocation (MODEL.md (8)) built from the
       previous round's powers and mean bandwidth (P_max and 1/⌈βK⌉ in the first round);
    3. x^t from the policy on the feasible pairs (b^min finite, UE available);
    4. repair x if its Σ b^min exceeds the band (see :meth:`repair`);
    5. block coordinate descent: power control (21) for all UEs in one batched call, then
       bandwidth (16), until the round objective Φ + ρΣE changes by < ``tol`` (relative);
    6. record the round's outcome (played x, energy) in the policy state for its next update.

    ``policy`` is a name of :data:`fedopt.online.POLICIES`, a :class:`SwitchingPolicy`, or
    ``"joint"``: x minimises this round's objective alone (local search over x, BCD inside)
    under the per-round floor Σ_{k,m} x ≥ ⌈β K_avail⌉, the mode compared with SCIP's MINLP.
    ``module_bits`` S_m and ``phi`` φ_m (M,) default to the config's nominal sizes; pass a
    backend's real sizes to override. ``on_infeasible``: ``"raise"`` (an available UE with no
    feasible pair while β > 0 is an :class:`InstanceError`) or ``"flag"`` (reported in
    ``Allocation.extras['stranded']`` and ``status``).
    """

    def __init__(self, config, policy="primal_dual", power_method: str | None = None,
                 bandwidth_method: str | None = None, *, module_bits=None, phi=None,
                 tol: float = 1e-6, max_iter: int = 30, policy_params: dict | None = None,
                 on_infeasible: str = "raise", seed: int = 0, joint_max_evals: int = 3000,
                 escapes: int = 10, warm_start: bool = True, grid_start: bool = True):
        from .config import SystemConfig
        from .online import SwitchingPolicy, make_policy

        if not isinstance(config, SystemConfig):
            raise TypeError(f"config: expected a SystemConfig, got {type(config).__name__}")
        if not isinstance(policy, (str, SwitchingPolicy)):
            raise TypeError(f"policy: expected a policy name or a SwitchingPolicy, got "
                            f"{type(policy).__name__}")
        for name, method in (("power_method", power_method), ("bandwidth_method", bandwidth_method)):
            if method is not None and not isinstance(method, str):
                raise TypeError(f"{name}: expected a method name, got {type(method).__name__}")
        if policy_params is not None and not isinstance(policy_params, dict):
            raise TypeError(f"policy_params: expected a dict, got {type(policy_params).__name__}")
        choice("on_infeasible", on_infeasible, ("raise", "flag"))
        tol = real("tol", tol, 0.0, strict=True)
        max_iter = integer("max_iter", max_iter, 1)
        seed = integer("seed", seed, 0)
        joint_max_evals = integer("joint_max_evals", joint_max_evals, 1)
        escapes = integer("escapes", escapes, 0)
        self.config = config
        M = int(config.M)
        self.S = numeric_array("module_bits", config.nominal_module_bits() if module_bits is None
                               else module_bits)
        self.phi = numeric_array("phi", config.phi() if phi is None else phi)
        for name, v in (("module_bits", self.S), ("phi", self.phi)):
            if v.shape != (M,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
                raise InstanceError(f"{name}: expected {M} positive finite values, got {v.tolist()}")
        if config.beta > config.M_max:
            raise InstanceError(f"beta: {config.beta:g} exceeds M_max = {config.M_max}")
        from fedopt.solvers import BANDWIDTH_METHODS, POWER_METHODS

        if power_method is not None and power_method not in POWER_METHODS:
            raise ValueError(f"unknown power method {power_method!r}; known: {', '.join(POWER_METHODS)}")
        if bandwidth_method is not None and bandwidth_method not in BANDWIDTH_METHODS:
            raise ValueError(f"unknown bandwidth method {bandwidth_method!r}; known: "
                             f"{', '.join(BANDWIDTH_METHODS)}")
        self.power_method = power_method
        self.bandwidth_method = bandwidth_method
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.on_infeasible = on_infeasible
        self.joint_max_evals = int(joint_max_evals)
        self.escapes = int(escapes)
        self.warm_start = bool(warm_start)
        self.grid_start = bool(grid_start)
        if power_method == "max":  # the max-power baseline: p = P_max, never moved by BCD extras
            self.grid_start, self.escapes = False, 0
        self.joint = isinstance(policy, str) and policy == "joint"
        if self.joint:
            self.policy = None
        elif isinstance(policy, SwitchingPolicy):
            self.policy = policy
        elif policy == "hindsight":
            raise ValueError("policy 'hindsight' needs every round's costs in advance; build it "
                             "with fedopt.online.make_policy('hindsight', ..., costs=u) and pass it")
        else:
            params = dict(policy_params or {})
            if policy in ("primal_dual", "lyapunov"):
                params.setdefault("energy_budget", config.energy_budget)
            params.setdefault("seed", seed)
            params.setdefault("on_infeasible", on_infeasible)
            self.policy = make_policy(policy, config.beta, config.M_max, **params)
        self.reset()

    # --- checkpointable state ----------------------------------------------------------------

    def reset(self) -> None:
        self.policy_state: dict | None = None
        self.estimator: dict | None = None
        self.prev_p: np.ndarray | None = None
        self.prev_mean_b: float | None = None

    def state_dict(self) -> dict:
        """Plain data: the policy state, the Δ/Γ estimator and the last round's (p, mean b)."""
        return copy.deepcopy({"policy": self.policy_state, "estimator": self.estimator,
                              "prev_p": self.prev_p, "prev_mean_b": self.prev_mean_b})

    def load_state_dict(self, d: dict) -> None:
        if not isinstance(d, dict):
            raise TypeError(f"state_dict: expected a dict, got {type(d).__name__}")
        missing = [k for k in ("policy", "estimator", "prev_p", "prev_mean_b") if k not in d]
        if missing:
            raise InstanceError(f"state_dict: missing key '{missing[0]}' (not from state_dict())")
        d = copy.deepcopy(d)
        self.policy_state = d["policy"]
        self.estimator = d["estimator"]
        self.prev_p = d["prev_p"]
        self.prev_mean_b = d["prev_mean_b"]

    # --- one round -----------------------------------------------------------------------------

    def system(self, state: RoundState) -> RoundSystem:
        """The round's coefficients from a :class:`RoundState` (does not touch the estimator)."""
        cfg = self.config
        d = np.asarray(state.distance, float)
        from .channel import interference_coefficient, noise_coefficient

        a = noise_coefficient(cfg, d)
        kappa = interference_coefficient(cfg, d)
        if state.fading is not None:  # a known gain h_k on g(d_k); the Rayleigh term of (15) stays
            h = np.asarray(state.fading, float)
            a = a / h
            kappa = kappa * h ** (-2.0 / cfg.alpha)
        n = np.asarray(state.data_size, float)
        f = np.asarray(state.cpu_freq, float)[:, None]
        c = np.asarray(state.cycles_per_bit, float)[:, None]
        D = np.asarray(state.samples, float)[:, None]
        t_cmp = compute_time(cfg, self.phi[None, :], c, D, f)
        est = self.estimator if self.estimator is not None else switching_init(*np.shape(state.loss))
        Delta, Gamma = switching_terms(est, cfg.lr)
        return RoundSystem(
            a=a, kappa=kappa, omega=n / n.sum(), S=self.S,
            b_min=min_bandwidth(cfg, self.S[None, :], t_cmp),
            E_cmp=computation_energy(cfg, self.phi[None, :], c, D, f),
            Delta=Delta, Gamma=Gamma, rho=cfg.rho, B=cfg.B, theta=cfg.theta, alpha=cfg.alpha,
            P_min=cfg.P_min, P_max=cfg.P_max,
        )

    def allocate(self, state: RoundState) -> Allocation:
        """Algorithm 2, steps 1, 2 and 4, for one round. See the class docstring."""
        t0 = time.perf_counter()
        cfg = self.config
        check_state(state, cfg.M)
        K, M = state.K, state.M
        if self.estimator is None:
            self.estimator = switching_init(K, M)
        elif self.estimator["loss"].shape != (K, M):
            raise InstanceError(f"state: K×M = ({K}, {M}) differs from earlier rounds "
                                f"{self.estimator['loss'].shape}")
        self.estimator = switching_update(self.estimator, state.loss, state.grad_sq, state.t)
        sys_ = self.system(state)
        available = (np.ones(K, bool) if state.available is None
                     else bool_mask("state.available", state.available, (K,)))
        feasible = np.isfinite(sys_.b_min) & available[:, None]
        stranded = available & ~np.isfinite(sys_.b_min).any(axis=1)
        if cfg.beta > 0 and stranded.any() and self.on_infeasible == "raise":
            k = int(np.flatnonzero(stranded)[0])
            raise InstanceError(
                f"UE {k} has no feasible module (every pair misses the deadline T_max = "
                f"{cfg.T_max:g} s) while beta = {cfg.beta:g} > 0; {int(stranded.sum())} UE(s) affected")

        # step 2: price every pair at the nominal allocation of the previous round
        n_floor = max(1, math.ceil(cfg.beta * int(available.sum())))
        b_default = 1.0 / n_floor
        p_prev = self.prev_p if self.prev_p is not None and self.prev_p.shape == (K,) \
            else np.full(K, cfg.P_max)
        mean_b = self.prev_mean_b if self.prev_mean_b is not None else b_default
        none = np.zeros((K, M), bool)
        p_nom, b_nom = nominal_allocation(none, p_prev, np.zeros((K, M)), sys_.b_min, cfg.P_max, mean_b)
        u_est, _, E_est = sys_.costs(p_nom, b_nom)
        u_est = np.where(np.isfinite(u_est), u_est, 0.0)  # infeasible pairs are masked anyway
        E_est = np.where(np.isfinite(E_est), E_est, 0.0)
        u_est = self._cold_start(u_est, E_est, sys_)

        # step 3: switching
        if self.joint:
            x, p, b, obj, iters, bw = self._joint(sys_, feasible, n_floor, u_est)
            dropped: list = []
        else:
            if self.policy_state is None:
                self.policy_state = self.policy.init(K, M)
            x, self.policy_state = self.policy.update(u_est, feasible, state.t, self.policy_state,
                                                      energy=E_est, active=available)
            x = (np.asarray(x) > 0) & feasible
            x, dropped = self.repair(x, sys_.b_min, u_est)
            # warm start from the previous round's powers: consecutive rounds are alike
            p, b, obj, iters, bw = self.bcd(sys_, x, p0=p_prev if self.warm_start else None)
        # the round's outcome: realised costs (unscheduled pairs at the nominal allocation)
        p_nom, b_nom = nominal_allocation(x, p, b, sys_.b_min, cfg.P_max,
                                          float(np.mean(b[x])) if x.any() else mean_b)
        u, q, _ = sys_.costs(p_nom, b_nom)
        bx = np.where(x, b, 1.0)
        e_cmp = np.where(x, sys_.E_cmp, 0.0)
        e_com = np.where(x, sys_.E_com(p, bx), 0.0)
        if self.policy is not None:
            from .online import record_outcome

            self.policy_state = record_outcome(self.policy_state, x, e_cmp + e_com)
        self.prev_p = np.where(x.any(axis=1), p, cfg.P_max)
        if x.any():
            self.prev_mean_b = float(np.mean(b[x]))
        status = "feasible"
        if stranded.any() and cfg.beta > 0:
            status = "stranded_ues"
        if dropped:
            status = "repaired" if status == "feasible" else status
        why_empty = None if x.any() else self._why_empty(available, feasible, dropped)
        if why_empty is not None:
            status = "empty_schedule"
        extras = {
            "message": why_empty,
            "stranded": np.flatnonzero(stranded).tolist(),
            "dropped": dropped,
            "bandwidth_status": None if bw is None else bw.status,
            "bandwidth_gap": None if bw is None else bw.gap,
            "seconds": time.perf_counter() - t0,
            "estimated_costs": u_est,
        }
        return Allocation(
            x=x.astype(np.int8), p=np.where(x.any(axis=1), p, 0.0), b=np.where(x, b, 0.0),
            q=np.where(x, q, 0.0), energy_computation=e_cmp, energy_communication=e_com,
            costs=np.where(np.isfinite(u), u, np.nan), objective=obj, iterations=iters,
            status=status, extras=extras,
        )

    # --- pieces --------------------------------------------------------------------------------

    def _cold_start(self, u_est: np.ndarray, E_est: np.ndarray, sys_: RoundSystem) -> np.ndarray:
        """Price every never-measured pair optimistically (MODEL-NOTES, "cold start"):
        u = −ρE − ω_k Γ_max, i.e. Δ = 0, q = 1, Γ the largest Γ measured so far (0 if none),
        and its energy counted as a gain, so a round with no measurements still schedules
        up to the participation floor. A measurement replaces it."""
        unseen = np.asarray(self.estimator["measured_at"]) < 0
        if not unseen.any():
            return u_est
        gamma_max = float(np.max(sys_.Gamma[~unseen], initial=0.0))
        optimistic = -sys_.rho * E_est - np.asarray(sys_.omega)[:, None] * gamma_max
        return np.where(unseen, optimistic, u_est)

    def _why_empty(self, available: np.ndarray, feasible: np.ndarray, dropped: list) -> str:
        """One line saying why this round schedules nobody (``status`` 'empty_schedule')."""
        if not available.any():
            return "no UE is available"
        if not feasible.any():
            return (f"no available UE can meet the deadline T_max = {self.config.T_max:g} s "
                    f"with any module")
        if dropped:
            return "every scheduled pair was dropped to fit the band (Σ b^min > 1)"
        return ("the policy scheduled no pair: every estimated cost u (8) is positive (energy "
                "outweighs the measured risk reduction) and the floor (7f) is long-term")

    @staticmethod
    def repair(x: np.ndarray, b_min: np.ndarray, costs: np.ndarray, budget: float = 1.0
               ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Drop scheduled pairs until Σ b^min ≤ budget (7d) (ours):
        :func:`fedopt.solvers.round.repair_switching`."""
        from fedopt.solvers.round import repair_switching

        return repair_switching(x, b_min, costs, budget)

    def _round_options(self) -> dict:
        return dict(power_method=self.power_method, bandwidth_method=self.bandwidth_method,
                    tol=self.tol, max_iter=self.max_iter, escapes=self.escapes,
                    grid_start=self.grid_start, max_evals=self.joint_max_evals)

    def bcd(self, sys_: RoundSystem, x: np.ndarray, p0: np.ndarray | None = None):
        """Block coordinate descent over (p, b) for a fixed x (Algorithm 2, step 2), with basin
        escapes: ``solve_round(sys_, M_max, method="bcd", x=x, p0=p0)`` with this allocator's
        options (:mod:`fedopt.solvers.round`). Returns (p (K,), b (K, M), objective,
        iterations, the last bandwidth Solution or None).
        """
        from fedopt.solvers.round import solve_round

        sol = solve_round(sys_, self.config.M_max, method="bcd", x=x, p0=p0,
                          **self._round_options())
        return sol.x.p, sol.x.b, sol.objective, sol.iterations, sol.extras["bandwidth"]

    def _joint(self, sys_: RoundSystem, feasible: np.ndarray, n_floor: int, u_est: np.ndarray):
        """The per-round mode: ``solve_round(..., method="joint")`` (:mod:`fedopt.solvers.round`)
        on the feasible pairs under the floor Σ x ≥ n_floor, started from the costs u_est."""
        from fedopt.solvers.round import solve_round

        available = feasible.any(axis=1)
        sol = solve_round(sys_, self.config.M_max, floor=n_floor, method="joint",
                          available=available, costs=u_est, **self._round_options())
        return (sol.x.x.astype(bool), sol.x.p, sol.x.b, sol.objective, sol.iterations,
                sol.extras["bandwidth"])
