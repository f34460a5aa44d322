"""fedopt as a Flower App: ``server_app:app`` and ``client_app:app``."""
