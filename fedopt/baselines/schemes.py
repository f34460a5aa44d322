"""The paper's baselines as schemes: a module set, a subscription rule and an aggregation rule.

Every scheme runs through the same runtime (:class:`fedopt.fl.Simulation`), round allocator,
channel (15) and energy model (4) as the proposed method; a scheme only changes

- the module set (M, ranks, and for full-parameter fine-tuning the upload size),
- the subscription rule (the switching policy, or a fixed rank per UE), and
- the aggregation rule (eq. (1), or HetLoRA's / FlexLoRA's, :mod:`.aggregation`).

=================  ========================================================================
name               what it is
=================  ========================================================================
proposed           Algorithm 2: M = 3 modules (ranks 4, 8, 16), primal-dual switching
fedlora            FedLoRA [4]: one rank-8 LoRA module (M = 1), averaged by (1)
full               full-parameter fine-tuning: the whole model trains and uploads (see
                   :func:`full_parameter`)
hetlora            HetLoRA [6]: one global adapter at the largest rank; UE k trains the
                   truncation to its rank r_k; zero-pad + weighted mean; optional
                   self-pruning (``prune_lambda``)
flexlora           FlexLoRA [7]: per-UE ranks; ΔW = Σ p_k s_k B_k A_k, one SVD, truncated
                   factors per UE
greedy, one_shot   the switching baselines of Fig. 4 (``fedopt.online``)
energy             primal-dual switching with the long-term budget Ē_k (7)
max_power          Algorithm 2 with p = P_max (the solvers' ``method="max"``), Fig. 5
=================  ========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["Scheme", "SCHEMES", "get_scheme", "full_parameter", "FULL_PARAMS_MINILM",
           "FEDLORA_RANK"]

#: FedLoRA's single module: rank 8, the middle of the proposed method's ranks (ours).
FEDLORA_RANK = 8
#: all-MiniLM-L6-v2's parameter count (the nominal foundation model of MODEL.md): the upload of
#: full-parameter fine-tuning. Counted from the packaged model.safetensors: 22,713,728 values,
#: less the 512-entry position_ids buffer.
FULL_PARAMS_MINILM = 22_713_216
#: full-parameter compute relative to a forward-only pass (ours): φ = 2, against LoRA's
#: φ_m = 1 + r_m / 64 ≤ 1.25 at the default ranks; the weight gradients of every matrix
#: roughly double the backward pass.
FULL_PHI = 2.0


@dataclass(frozen=True)
class Scheme:
    """A baseline: config changes (flat RunConfig keys), an aggregation rule and its citation."""

    name: str
    label: str
    cite: str
    changes: dict[str, Any] = field(default_factory=dict)
    rule: str | None = None  # None: eq. (1) per module; "hetlora" | "flexlora": pooled ranks
    full: bool = False  # full-parameter: the deadline is stretched (see full_parameter)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("proposed", "Algorithm 2", "this paper", {"policy": "primal_dual"}),
    Scheme("fedlora", "FedLoRA", "[4] Chen et al., IEEE Wirel. Commun. 2024",
           {"M": 1, "ranks": [FEDLORA_RANK], "M_max": 1}),
    Scheme("full", "Full-parameter", "[3]/[4]: full-parameter FedFT", {}, full=True),
    Scheme("hetlora", "HetLoRA", "[6] Cho et al., EMNLP 2024", {"M_max": 1}, rule="hetlora"),
    Scheme("flexlora", "FlexLoRA", "[7] Bai et al., arXiv:2402.11505", {"M_max": 1},
           rule="flexlora"),
    Scheme("greedy", "Greedy", "this paper, Fig. 4", {"policy": "greedy"}),
    Scheme("one_shot", "One-shot", "this paper, Fig. 4", {"policy": "one_shot"}),
    Scheme("energy", "w/ energy constraints", "this paper, Fig. 4 (7) with Ē_k",
           {"policy": "primal_dual"}),
    Scheme("max_power", "Max power", "this paper, Fig. 5: p = P_max",
           {"power_method": "max"}),
)}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ConfigError(f"scheme: unknown scheme '{name}'; known: {', '.join(SCHEMES)}") from None


def full_parameter(run, n_params: int = FULL_PARAMS_MINILM, max_load: float = 0.8):
    """The full-parameter run config and the number of deadline slots one of its rounds takes.

    The upload is S = n_params · bits_per_param bits (363 Mbit for MiniLM-L6 in fp16): at the
    whole band B log₂(1+θ) = 20 Mbit/s it takes 18 s, beyond T_max = 5 s for even one UE.
    Scheduling (ours): a full-parameter round is stretched over n whole deadline slots,
    T_max' = n T_max, with n the smallest integer at which the expected Σ b^min of the
    participation floor's ⌈βK⌉ UEs is at most ``max_load`` of the band (headroom for the
    random population). Everything else is the proposed system's; its cost is that one round
    takes n slots, so rounds are compared in deadline slots (Fig. 2).

    The trainable part is full rank: the synthetic backend's dense adapter (the whole head,
    no L2); the LoRA backend trains LoRA modules only, so ``full`` needs ``backend=synthetic``.
    Returns (RunConfig, n).
    """
    if run.backend != "synthetic":
        raise ConfigError("scheme 'full': full-parameter training needs the synthetic backend's "
                          "dense adapter; the lora backend trains LoRA modules only")
    cfg = run.system
    changes = {"M": 1, "ranks": [1], "M_max": 1, "params_per_rank": int(n_params),
               "phi_per_rank": FULL_PHI - 1.0, "dense": True, "l2": 0.0}
    base_T = cfg.T_max
    probe = cfg.replace(M=1, ranks=(1,), M_max=1, params_per_rank=int(n_params),
                        phi_per_rank=FULL_PHI - 1.0, T_max=1e9)
    # load(n) = β K E[S / (B log2(1+θ) (n T_max − t_cmp))]: scan n upward (at most a few 100)
    for n in range(1, 100_000):
        try:
            load = probe.replace(T_max=n * base_T).expected_bandwidth_load()
        except ConfigError:
            continue
        if load <= max_load:
            changes["T_max"] = n * base_T
            return run.replace(**changes), n
    raise ConfigError("scheme 'full': no deadline stretch fits the participation floor")


def configure(scheme: Scheme, run) -> tuple[Any, int]:
    """The scheme's RunConfig from the base ``run`` and its deadline slots per round."""
    if scheme.full:
        return full_parameter(run)
    if scheme.name == "energy" and not run.system.energy_budget > 0:
        raise ConfigError("scheme 'energy': set energy_budget (E_bar_k, J per round) > 0")
    changes = dict(scheme.changes)
    if scheme.rule is not None and len(run.system.ranks) < 2:
        raise ConfigError(f"scheme '{scheme.name}': needs at least two rank levels (ranks)")
    return run.replace(**changes) if changes else run, 1


def slots_to_rounds(slots: int, per_round: int) -> int:
    return math.ceil(slots / per_round)
