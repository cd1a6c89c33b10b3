"""Table x1 (beyond the paper): each graph feature is a row that trains through the recipe
command line, is probed by ``python -m analysis``, and builds what it says."""

import json
from pathlib import Path

import attrs
import pytest

from analysis.features import load_run
from areas import V3DynamicForm
from areas.beyond import with_cross_layer, with_feedback, with_signed_mt, with_v3
from areas.bimm import ModelConfig
from recipes import ablations, bimm_ucf101
from visualpath import Feedback
from tests.conftest import accuracy_over


def test_the_builders_edit_only_the_dorsal_stream():
    m = ModelConfig()  # ViT-B: V1 2, V2 2, MT 8 blocks
    v3 = with_v3(m)
    dorsal = v3.stream("dorsal")
    assert [(a.name, a.blocks) for a in dorsal.areas] == [("V1", 2), ("V2", 2), ("V3", 2), ("MT", 6)]
    assert isinstance(dorsal.area("V3"), V3DynamicForm) and dorsal.area("V3").decoder.depth == 2
    assert v3.stream("ventral") == with_signed_mt(m).stream("ventral")
    assert with_cross_layer(m).stream("dorsal").area("MT").decoder.reads == ("V1",)
    assert with_feedback(m).stream("dorsal").feedback == (Feedback("MT", "V1"),)
    assert with_signed_mt(m).stream("dorsal").area("MT").signed
    demo = bimm_ucf101.VARIANTS["demo"].model
    assert [a.blocks for a in with_v3(demo).stream("dorsal").areas] == [1, 1, 1, 1]


@pytest.mark.slow  # five tiny runs and their probes: about 3 minutes on 2 cores (CI runs it)
def test_table_x1_rows_train_and_are_probed_per_area(tmp_path, capsys):
    from analysis.report import main as analyse

    assert ablations.main(["--table", "x1", "--variant", "tiny", f"run_dir={tmp_path}", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "Table x1" in out and "+cross-layer" in out and "dorsal.V3" in out  # the probe table's row
    runs = {p.name: p for p in (tmp_path / "table7").iterdir()}
    assert set(runs) == {"default", "x1-v3-dynamic-form", "x1-cross-layer-mt-reads-v1", "x1-feedback-mt-to-v1",
                         "x1-signed-mt"}
    for name, run in runs.items():
        assert accuracy_over(json.loads((run / "results.json").read_text())), name
    dorsal = {name: load_run(run).pathway.stream("dorsal") for name, run in runs.items()}
    assert [a.name for a in dorsal["x1-v3-dynamic-form"].areas] == ["V1", "V2", "V3", "MT"]
    assert dorsal["x1-cross-layer-mt-reads-v1"].area("MT").decoder.reads == ("V1",)
    assert dorsal["x1-feedback-mt-to-v1"].feedback == (Feedback("MT", "V1"),)
    assert dorsal["x1-signed-mt"].area("MT").signed and not dorsal["default"].area("MT").signed
    model = load_run(runs["x1-feedback-mt-to-v1"])
    assert "MT_to_V1" in model.streams["dorsal"].feedback
    assert analyse([str(runs["x1-v3-dynamic-form"]), "--no-figures"]) == 0
    rows = json.loads((runs["x1-v3-dynamic-form"] / "analysis" / "results.json").read_text())["rows"]
    assert ("dorsal", "V3") in {(r["stream"], r["area"]) for r in rows}


def test_x1_rows_at_paper_scale_are_checked_configs(tmp_path):
    base = attrs.evolve(bimm_ucf101.VARIANTS["paper"], data=attrs.evolve(
        bimm_ucf101.VARIANTS["paper"].data, root=str(_ucf(tmp_path)), image_root="frames"))
    rows = ablations.rows("x1", base)
    assert all(cfg is not None for _, cfg, _ in rows)
    assert [cfg.joint.optim.epochs for _, cfg, _ in rows] == [800] * 5
    assert rows[2][1].pathway_overrides == ("pathway.dorsal.MT.decoder.reads=V1",)


def _ucf(tmp_path: Path) -> Path:
    root = tmp_path / "ucf"
    (root / "UCF-101").mkdir(parents=True)
    (root / "ucfTrainTestlist").mkdir()
    return root
