"""The paper's baselines as real implementations: FedLoRA [4], full-parameter fine-tuning,
HetLoRA [6], FlexLoRA [7], the greedy / one-shot switching baselines, energy-constrained
switching and maximum power. See :mod:`.schemes` for the table and MODEL-NOTES.md, "Baselines"."""

from .aggregation import (
    delta_w,
    fedavg,
    flexlora_aggregate,
    hetlora_aggregate,
    lora_pairs,
    pad_rank,
    rank_of,
    shrink_tail,
    tail_norm,
    truncate_rank,
)
from .ranks import assign_rank_levels
from .schemes import SCHEMES, Scheme, configure, full_parameter, get_scheme

__all__ = [
    "SCHEMES",
    "Scheme",
    "assign_rank_levels",
    "configure",
    "delta_w",
    "fedavg",
    "flexlora_aggregate",
    "full_parameter",
    "get_scheme",
    "hetlora_aggregate",
    "lora_pairs",
    "pad_rank",
    "rank_of",
    "run_scheme",
    "shrink_tail",
    "tail_norm",
    "truncate_rank",
]


def run_scheme(*args, **kwargs):
    """Run a scheme through the runtime (imports the runtime lazily); see :mod:`.runner`."""
    from .runner import run_scheme as _run

    return _run(*args, **kwargs)
