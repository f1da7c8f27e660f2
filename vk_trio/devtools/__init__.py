"""Not the product: the simulators (``sim/``), ``vk-trio bench`` and ``vk-trio demo``.

Nothing in the product imports this package (an import-linter contract in pyproject.toml);
``cli.py`` reaches the commands here by module name only.
"""
