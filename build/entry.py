"""PyInstaller entry script: the frozen binary is exactly the ``vk-trio`` console script.

PyInstaller needs a file to freeze, not a ``module:function`` entry point, so this
is the whole of it; every subcommand module is collected by ``build/vk-trio.spec``.
"""

from vk_trio.cli import main

if __name__ == "__main__":
    main()
