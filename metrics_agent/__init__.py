"""Presage metrics agent: samples a backend's host, cgroup, process, GPU and app metrics into Redis."""
