"""The model, each client's data and the training loop: plain torch, no fedopt."""

import torch
from torch import nn


def Net() -> nn.Module:  # noqa: N802 (a model class, as Flower's templates name it)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def load_data(context):
    """Client k's 64 training and 32 test points, labelled by a fixed random teacher."""
    k = int(context.node_config["partition-id"])
    g = torch.Generator().manual_seed(k)
    x = torch.randn(96, 10, generator=g) + 0.5 * k
    y = (x @ torch.randn(10, 3, generator=torch.Generator().manual_seed(99))).argmax(1)
    return torch.utils.data.TensorDataset(x[:64], y[:64]), torch.utils.data.TensorDataset(x[64:], y[64:])


def train(model, data) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # 5 full-batch steps
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(data.tensors[0]), data.tensors[1])
        loss.backward()
        opt.step()
    return loss.item()


def test(model, data) -> tuple[float, float]:
    with torch.no_grad():
        out = model(data.tensors[0])
    return nn.functional.cross_entropy(out, data.tensors[1]).item(), (out.argmax(1) == data.tensors[1]).float().mean().item()
