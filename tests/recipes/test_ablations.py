"""Table 7 as config diffs: every row is a valid configuration, runs, and prints as the paper's."""

import attrs
import pytest

from recipes import ablations, bimm_ucf101, pipeline


def _ucf_layout(root):
    (root / "UCF-101").mkdir(parents=True)
    (root / "ucfTrainTestlist").mkdir()
    return root


@pytest.mark.parametrize("variant", ["demo", "paper"])
def test_every_row_of_table_7_is_a_checked_config_diff(variant, tmp_path):
    base = bimm_ucf101.VARIANTS[variant]
    if variant == "paper":
        base = attrs.evolve(base, data=attrs.evolve(base.data, root=str(_ucf_layout(tmp_path / "ucf"))))
    labels = {t: [r.label for r, _, _ in ablations.rows(t, base)] for t in ablations.TABLES}
    assert labels["7d"] == ["12", "4-8-12", "6-9-12", "2-4-12"] and len(labels["7f"]) == 4
    for table in ablations.TABLES:
        rows = ablations.rows(table, base)
        defaults = [cfg for row, cfg, _ in rows if cfg is not None and cfg.run_dir.endswith("/default")]
        assert len(defaults) == 1  # the paper's gray entry is the unchanged configuration
    (no_init, ucf, in1k) = ablations.rows("7a", base)
    assert no_init[1].stages == ("joint", "finetune", "test") and no_init[1].model.dorsal_init == "none"
    if variant == "paper":  # without ImageNet the IN-1K row says what it needs
        assert in1k[1] is None and "data.image_root" in in1k[2]
    else:
        assert in1k[1].data.image_root == "builtin"
    baseline = ablations.rows("7b", base)[0][1]
    assert baseline.model.streams == ("dorsal",) and baseline.model.targets == "RGB"
    splits = [cfg.model.split for _, cfg, _ in ablations.rows("7d", base)]
    depth = sum(base.model.split)
    assert all(sum(s) == depth for s in splits)
    if depth == 12:
        assert splits == [(12, 0, 0), (4, 4, 4), (6, 3, 3), (2, 2, 8)]


def test_splits_scale_to_shallower_encoders():
    assert [ablations.scaled_split(b, 4) for b in ((12,), (4, 8), (6, 9), (2, 4))] == \
        [(4, 0, 0), (1, 2, 1), (2, 1, 1), (1, 1, 2)]
    assert ablations.scaled_split((2, 4), 12) == (2, 2, 8)


def test_tiny_table_runs_and_prints_in_the_papers_format(tmp_path, capsys):
    base = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(tmp_path), device="cpu")
    results = ablations.run_table("7e", base)
    assert [r["label"] for r in results] == ["No sharing", "Partial Sharing", "All Sharing"]
    assert all(0.0 <= r["top1"] <= 1.0 for r in results)
    out = capsys.readouterr().out
    assert "Table 7e: Partial weight sharing" in out and "Sharing strategy" in out and "92.5" in out
    shared = [r["run_dir"] for r in results]
    assert len(set(shared)) == 3 and shared[1].endswith("default")


def test_cli_needs_a_known_table(capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    assert ablations.main(["--variant", "tiny"]) == 2
    assert ablations.main(["--table", "7z"]) == 2
    assert "unknown table '7z'" in capsys.readouterr().err
