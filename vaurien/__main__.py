"""``python -m vaurien``."""

import sys

from vaurien.cli import main

sys.exit(main())
