"""The run both apps build from Flower's run config: the fedopt config (``config``, relative to
the app folder), its ``set`` overrides and, with ``scheme``, that baseline's version of it."""

from pathlib import Path

from flwr.app import Context

from fedopt.fl.config import RunConfig
from fedopt.flower.sim import run_config_from_context

HERE = Path(__file__).resolve().parents[1]  # the app folder: relative config paths start here


def run_of(context: Context) -> tuple[RunConfig, str]:
    """(the run, its aggregation rule name: fedavg, or the baseline's)."""
    run = run_config_from_context(context, root=HERE)
    if scheme := str(context.run_config.get("scheme", "")):
        from fedopt.baselines.runner import scheme_run

        run, rule, _ = scheme_run(scheme, run)
        return run, rule
    return run, "fedavg"
