"""The ServerApp: FedOptStrategy (Algorithm 2 each round) over the nodes of the federation."""

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedopt.flower.records import pack_modules
from fedopt.flower.sim import build_run, make_strategy, run_config_from_context

HERE = Path(__file__).resolve().parents[1]  # the app folder: relative config paths start here

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = run_config_from_context(context, root=HERE)
    setup = build_run(run)  # population (the server's channel model), θ^0, seed streams
    strategy = make_strategy(setup)
    result = strategy.start(grid, pack_modules(setup.params), num_rounds=run.rounds)
    for row in strategy.history:
        print(f"round {row['round']}: energy {row['energy']:.4g} J, participation "
              f"{row['participation']:.2f}, success {row['received']}/{row['subscriptions']}")
    print("federated evaluation (3):", result.evaluate_metrics_clientapp)
