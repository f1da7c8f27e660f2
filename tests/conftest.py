"""Fixtures shared by the whole suite live in ``tests/plugins/`` (one module per simulator)."""

pytest_plugins = [
    "tests.plugins.vast_sim",
    "tests.plugins.kube_sim",
    "tests.plugins.registry_sim",
]
