"""Balancer policies, one module each, chosen by name from a table."""
