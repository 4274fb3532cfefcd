"""``python -m lab.report SOURCE``: see ``lab.report.cli``."""

import sys

from lab.report.cli import main

sys.exit(main())
