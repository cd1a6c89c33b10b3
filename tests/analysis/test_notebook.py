"""The example notebook runs headless from top to bottom, on any run's graph."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "analysis" / "notebooks" / "probe_areas.ipynb"
GRAPH = ROOT / "tests" / "fixtures" / "v3_sobel.py"


def _execute(monkeypatch, run: str, started_in: Path):
    """The notebook executed from its own folder, as Jupyter runs it, started from ``started_in``."""
    monkeypatch.setenv("PROBE_AREAS_RUN", run)
    monkeypatch.setenv("PWD", str(started_in))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", ""))
        out.append(o.get("data", {}).get("text/markdown", ""))
        out.append(o.get("data", {}).get("text/plain", ""))
    return "".join(out)


@pytest.mark.e2e
def test_the_notebook_works_on_a_user_graph_with_an_area_the_packages_lack(tmp_path, monkeypatch):
    """A V3 area of the user's own (tests/fixtures/v3_sobel.py) in every table and figure; the run
    named relative to the folder the notebook was started from."""
    run = tmp_path / "runs" / "v3"
    done = subprocess.run([sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu",
                           f"pathway={GRAPH}:build", f"run_dir={run}", "stages=ventral,joint"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = _execute(monkeypatch, "runs/v3", tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    texts = [_text(c) for c in code]
    assert "analysing" in texts[0] and str(run) in texts[0]
    for i, text in enumerate(texts):  # every table, every figure's list of areas and the prose name the area
        if "print(" in "".join(code[i].source) or "Markdown(" in "".join(code[i].source):
            if i:
                assert "V3" in text, (i, "".join(code[i].source)[:200], text[:500])
    neural = next(t for c, t in zip(code, texts) if "neural_report(" in "".join(c.source))
    assert "ventral.V3" in neural and "assignment" in neural and "MT (pooled readout)" in neural, neural[:2000]
    prose = texts[-1]
    assert "ventral probes" in prose and "V3" in prose and "runs/bimm_ucf101_demo" not in prose
    assert "Against 20 simulated V1 and 20 simulated MT cells" in prose
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 9  # CKA, block CKA, per stream: tuning curves, reconstructions, attention; neural


def test_a_missing_run_is_an_error_and_nothing_is_trained(tmp_path, monkeypatch):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="no run at"):
        _execute(monkeypatch, "runs/absent", tmp_path)
    assert not (tmp_path / "runs").exists() and not list(NOTEBOOK.parent.glob("runs"))


def test_the_stored_notebook_describes_the_run_its_outputs_came_from():
    """The committed outputs are one execution: the prose cell's text is its own output."""
    nb = nbformat.read(NOTEBOOK, as_version=4)  # joins the stored multi-line strings
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") for c in code), "the stored notebook was saved without its outputs"
    prose = "".join(o.get("data", {}).get("text/markdown", "") for o in code[-1]["outputs"])
    assert prose.startswith("Run `bimm_ucf101_demo`") and "dorsal probes" in prose
