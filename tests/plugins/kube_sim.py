"""Fixtures for the kube_sim simulator (filled in by its owner)."""
