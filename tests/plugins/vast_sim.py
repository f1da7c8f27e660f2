"""Fixtures for the vast_sim simulator (filled in by its owner)."""
