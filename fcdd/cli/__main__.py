"""``python -m fcdd.cli``: the ``fcdd`` command."""

import sys

from fcdd.cli.main import main

sys.exit(main())
