"""``python -m ambient_jupyter`` is ``ambient-jupyter``."""

import sys

from .cli import main

sys.exit(main())
