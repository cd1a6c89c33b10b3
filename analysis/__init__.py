"""Probing what each cortical area of a pathway learned.

- :mod:`analysis.features` -- per-area (or per-block) features, saved as safetensors + JSON;
  :func:`load_run` rebuilds a recipe's run.
- :mod:`analysis.readouts` -- linear probes (scikit-learn; MAE's BatchNorm head) and DINO kNN.
- :mod:`analysis.similarity` -- CKA (linear/RBF, biased/unbiased), RDMs, RSA.
- :mod:`analysis.tuning` -- orientation, spatial-frequency and direction tuning of units.
- :mod:`analysis.fit` -- how much of each target a decoder explains at masked tokens, and
  two references that need no training (neighbours, visible tokens).
- :mod:`analysis.figures` -- predictions vs targets, CKA heatmaps, tuning curves, attention.
- :mod:`analysis.report` -- everything for one run: ``python -m analysis RUN_DIR``.

Submodules are imported on use, so ``import analysis`` stays light.
"""
