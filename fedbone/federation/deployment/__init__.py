"""Flower's deployment runtime: SuperLink, SuperNodes, the flwr CLI, app pinning."""
