"""``python -m sdekit.jobs``: see :mod:`sdekit.jobs.cli`."""

import sys

from .cli import main

sys.exit(main())
