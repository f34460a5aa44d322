"""Training backends: the protocol, the synthetic numpy backend and the torch + peft one."""

from .base import (
    Evaluation,
    LocalResult,
    ModuleSpec,
    PairBatch,
    Params,
    SupportsFullBatch,
    SupportsSaving,
    SupportsSmoothness,
    SupportsTheoremOracle,
    TrainingBackend,
    ensemble_evaluation,
    ensemble_logits,
    weighted_mean_aggregate,
)

__all__ = [
    "Evaluation",
    "LocalResult",
    "ModuleSpec",
    "PairBatch",
    "Params",
    "SupportsFullBatch",
    "SupportsSaving",
    "SupportsSmoothness",
    "SupportsTheoremOracle",
    "TrainingBackend",
    "ensemble_evaluation",
    "ensemble_logits",
    "weighted_mean_aggregate",
]

# name -> (module, class); imported lazily so the synthetic backend never pays for torch
BACKENDS: dict[str, tuple[str, str]] = {
    "synthetic": ("fedopt.backends.synthetic", "SyntheticBackend"),
    "lora": ("fedopt.backends.lora", "LoraBackend"),
}


def backend_class(name: str):
    """The backend class registered as ``name``; ConfigError naming the known ones otherwise."""
    import importlib

    from ..errors import ConfigError

    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown backend '{name}'; known: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"backend: '{name}' is not available here ({exc})") from None


def backend_options(name: str) -> dict:
    """The option keys (and defaults) a backend accepts from the run config: its ``OPTIONS``."""
    return dict(getattr(backend_class(name), "OPTIONS", {}))


def make_backend(name: str, cfg, population, seed, **options) -> TrainingBackend:
    """Build backend ``name`` as ``Class(cfg, population, seed, **options)``."""
    return backend_class(name)(cfg, population, seed, **options)


__all__ += ["BACKENDS", "backend_class", "backend_options", "make_backend"]
