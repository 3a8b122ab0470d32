"""``python -m fcdd.cli``: the ``fcdd`` command."""

import sys

from fcdd.cli.main import main

if (
    __name__ == "__main__"
):  # importing the module (as the package walk of tests/unit/test_errors.py does) runs nothing
    sys.exit(main())
