"""The ClientApp: the user's own train / test functions behind fedopt's protocol."""

from fedopt.flower.client import train_app

from .task import Net, load_data, test, train

app = train_app(Net, load_data, train, test)
