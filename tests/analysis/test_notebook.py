"""The example notebook runs headless from top to bottom."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]


def test_probe_areas_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_AREAS_RUN", str(tmp_path / "run"))  # absent: the notebook trains a tiny run
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(ROOT / "analysis/notebooks/probe_areas.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "analysing" in outputs and "probe" in outputs and "RSA ventral.V4 vs dorsal.MT" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # CKA, block CKA, tuning curves, reconstruction, attention
    assert (tmp_path / "run_tiny" / "joint" / "model.safetensors").is_file()
