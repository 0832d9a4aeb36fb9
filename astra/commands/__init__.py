"""One module per ``astra`` subcommand.

Each module has ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import only the standard library at import time:
``astra --help`` and ``astra evaluate`` must not pay for torch or Ray.
"""
