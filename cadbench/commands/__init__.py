"""The `cadbench` subcommands, one module each. Each module's `register(commands)` adds its parser(s), with a
handler that imports what it needs only when it runs, so that parsing arguments (and `--help`) stays light.

To add a command: write a module with `register`, and list it in `MODULES`.
"""

MODULES = ("listing", "sweep", "fit", "validate", "reports", "gate", "evaluate", "merge")

__all__ = ["MODULES"]
