"""``python -m analysis RUN_DIR``: the per-area table of a run, and its figures."""

import sys

from analysis.report import main

sys.exit(main())
