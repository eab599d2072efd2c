"""``python -m app`` is the ``seedgate`` command."""

import sys

from app.cli import main

sys.exit(main())
