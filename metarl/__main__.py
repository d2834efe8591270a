"""``python -m metarl`` runs the ``metarl`` command (the same as the installed console script)."""

import sys

from .cli import main

sys.exit(main())
