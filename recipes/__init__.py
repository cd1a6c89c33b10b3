"""Runnable experiments reproducing the BIMM paper: ``python -m recipes.NAME``."""

import sys

if sys.argv[:1] == ["-m"]:  # python -m recipes.NAME is starting: a scheduler's signal is noted from now on
    from recipes import _signals

    _signals.install()
