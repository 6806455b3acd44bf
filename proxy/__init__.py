"""Presage proxy: the HTTP/gRPC data plane, balancer policies, health and the `presage` CLI."""

__version__ = "0.1.0"
