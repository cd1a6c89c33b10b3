"""Runnable experiments reproducing the BIMM paper: ``python -m recipes.NAME``."""
