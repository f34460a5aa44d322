"""Flower's floor: one QUERY per node per exchange, answered at once."""
