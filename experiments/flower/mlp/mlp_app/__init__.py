"""A Flower user's app: a torch MLP, scheduled by fedopt's allocator."""
