"""The ``fcdd`` command: train, evaluate, predict, export, info, config, init, app.

One module per command (``fcdd/cli/<command>.py``: its options and a thin ``run(args)`` over the
library), the shared options and model loading in ``common.py``, the parser and ``main`` in
``main.py``; ``fcdd app`` lives with the inspection page (fcdd/app/command.py). Tracking and
``models:/`` URIs come from plugins (fcdd.plugins).
"""

from fcdd.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
