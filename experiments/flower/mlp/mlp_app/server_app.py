"""The ServerApp: fedopt's allocator picks who trains and at which power and bandwidth."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedopt.config import SystemConfig
from fedopt.flower import FedOptStrategy

from .task import Net

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    system = SystemConfig.from_dict({"K": 3, "M": 1, "ranks": [1], "M_max": 1, "local_steps": 5, "lr": 0.1})
    strategy = FedOptStrategy.from_settings(system, min_train_nodes=3)  # waits for the 3 clients
    result = strategy.start(grid, ArrayRecord(Net().state_dict()), context.run_config["num-server-rounds"])
    for row in strategy.history:
        print(f"round {row['round']}: {row['subscriptions']} clients, energy {row['energy']:.3g} J")
    print("final model:", {k: tuple(v.shape) for k, v in result.arrays.to_torch_state_dict().items()})
