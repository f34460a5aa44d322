"""Write round_example_0.json (K = 3) and round_example_1.json (K = 8): rounds of (7) drawn as
``fedopt validate round`` draws them (MODEL.md's defaults, seed [0, K, 0], its random x and
floor ⌈βK⌉), with a "reference" block: SCIP's MINLP (x free, 60 s limit) and BCD at the x.

    .venv/bin/python experiments/instances/make_round_examples.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from fedopt.solvers._scip_round import solve_round_scip
from fedopt.solvers.round import solve_round

from fedopt.allocator import RoundAllocator
from fedopt.cli.validate_round import random_x
from fedopt.config import SystemConfig
from fedopt.costs import switching_init, switching_update
from fedopt.online.scenarios import random_round_state
from fedopt.round_instance import RoundInstance

HERE = Path(__file__).resolve().parent


def draw(K: int, seed: int = 0) -> RoundInstance:
    """Instance 0 of ``fedopt validate round --K K --seed seed`` (its code, its rng order)."""
    cfg = SystemConfig(K=K)
    rng = np.random.default_rng([seed, K, 0])
    state, _ = random_round_state(cfg, rng)
    al = RoundAllocator(cfg)
    al.estimator = switching_update(switching_init(K, cfg.M), state.loss, state.grad_sq, 0)
    system = al.system(state)
    x = random_x(rng, np.isfinite(system.b_min), cfg.M_max)
    return RoundInstance.from_system(system, cfg.M_max, floor=max(1, math.ceil(cfg.beta * K)),
                                     x=x.astype(np.int8))


def main() -> None:
    import pyscipopt

    for i, K in enumerate((3, 8)):
        inst = draw(K)
        system = inst.system()
        # SCIP's log off: at K = 8 its 60 s log fills the pipe Pyomo captures it through
        scip = solve_round_scip(system, inst.M_max, floor=inst.floor, time_limit=60.0,
                                options={"display/verblevel": 0})
        bcd = solve_round(system, inst.M_max, floor=inst.floor, method="bcd", x=inst.x)
        data = inst.to_dict()
        data["reference"] = {
            "solver": f"SCIP {pyscipopt.Model().version()} via pyscipopt, MINLP (7), x free, "
                      f"time limit 60 s",
            "scip_objective": scip.objective,
            "scip_bound": scip.bound,
            "scip_status": scip.status,
            "scip_seconds": round(scip.seconds, 2),
            "bcd_objective": bcd.objective,
            "bcd_status": bcd.status,
            "note": f"drawn as `fedopt validate round --K {K} --seed 0` draws instance 0; "
                    "scip_objective is SCIP's point made exactly feasible and re-evaluated with "
                    "RoundSystem.objective; scip_bound is SCIP's dual bound (a lower bound on (7) "
                    "to SCIP's tolerances); bcd_objective is method bcd at the file's x",
        }
        path = HERE / f"round_example_{i}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(path.name, data["reference"])


if __name__ == "__main__":
    main()
