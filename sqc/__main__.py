"""``python -m sqc``: the command line, as the ``sqc`` console script runs it."""

import sys

from sqc.app.cli import main

sys.exit(main())
