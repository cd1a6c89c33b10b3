"""Table 7 as config diffs: every row is a valid configuration, runs, and prints as the paper's."""

import attrs
import pytest

from recipes import ablations, bimm_ucf101, pipeline


def _ucf_layout(root):
    (root / "UCF-101").mkdir(parents=True)
    (root / "ucfTrainTestlist").mkdir()
    return root


def _imagenet_layout(root):
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    return root


def _paper_base(tmp_path, images=True):
    base = bimm_ucf101.VARIANTS["paper"]
    data = attrs.evolve(base.data, root=str(_ucf_layout(tmp_path / "ucf")),
                        image_root=str(_imagenet_layout(tmp_path / "in1k")) if images else None)
    return attrs.evolve(base, data=data)


@pytest.mark.parametrize("variant", ["demo", "paper"])
def test_every_row_of_table_7_is_a_checked_config_diff(variant, tmp_path):
    base = _paper_base(tmp_path) if variant == "paper" else bimm_ucf101.VARIANTS[variant]
    labels = {t: [r.label for r, _, _ in ablations.rows(t, base)] for t in ablations.TABLES}
    assert labels["7d"] == ["12", "4-8-12", "6-9-12", "2-4-12"] and len(labels["7f"]) == 4
    for table in ablations.TABLES:
        rows = ablations.rows(table, base)
        assert all(cfg is not None for _, cfg, _ in rows), table
        defaults = [cfg for row, cfg, _ in rows if cfg.run_dir.endswith("/default")]
        assert len(defaults) == 1  # the paper's gray entry is the unchanged configuration
    (no_init, ucf, in1k) = ablations.rows("7a", base)
    assert no_init[1].stages == ("joint", "finetune", "test") and no_init[1].model.dorsal_init == "none"
    assert ucf[1].data.image_root == "frames"
    assert in1k[1].data.image_root == (base.data.image_root if variant == "paper" else "builtin")
    baseline = ablations.rows("7b", base)[0][1]
    assert baseline.model.streams == ("dorsal",) and baseline.model.targets == "RGB"
    splits = [_readouts(cfg) for _, cfg, _ in ablations.rows("7d", base)]
    depth = base.model.encoder_depth
    assert all(sum(s) == depth for s in splits)
    if depth == 12:
        assert splits == [(12, 0, 0), (4, 4, 4), (6, 3, 3), (2, 2, 8)]


def _readouts(cfg) -> tuple[int, int, int]:
    """Where the built graph's V1, V2 and V4 decoders read, as blocks of V1, V2 and V4/MT."""
    from recipes.graph import build_graph

    areas = build_graph(cfg).stream("ventral").areas
    taps = {a.name: sum(x.blocks for x in areas[:i + 1]) for i, a in enumerate(areas)}
    return (taps["V1"], taps["V2"] - taps["V1"], taps["V4"] - taps["V2"])


def test_at_paper_scale_every_row_pretrains_800_epochs_but_the_videomae_baseline(tmp_path):
    base = _paper_base(tmp_path)
    assert base.joint.optim.epochs == 1600  # the recipe's own schedule (appendix A.2)
    for table in ablations.TABLES:
        for row, cfg, _ in ablations.rows(table, base):
            expected = 1600 if (table, row.label) == ("7b", "Baseline") else 800
            assert cfg.joint.optim.epochs == expected, (table, row.label)
            assert cfg.ventral.optim.epochs == 800  # the ventral stage stays Table 8's IN-1K column


def test_table_7c_changes_the_joint_stages_targets_only(tmp_path):
    from recipes.graph import build_graph, ventral_graph
    from visualpath.rundir import stage_pathway

    base = _paper_base(tmp_path)
    default = build_graph(ablations.ablation_base(base))
    for row, cfg, _ in ablations.rows("7c", base):
        joint = build_graph(cfg)
        weights = {(s.name, a.name): a.weight for s in joint.streams for a in s.areas}
        reading = {"V1": {"V1"}, "V1-V2": {"V1", "V2"}, "V1-V2-V4&MT": {"V1", "V2", "V4", "MT"}}[row.label]
        assert {a for (_, a), w in weights.items() if w > 0} == reading
        assert ventral_graph(cfg, joint) == stage_pathway(default, "ventral")  # V1, V2 and V4 all trained


def test_table_7d_12_row_differs_from_the_default_only_in_where_the_decoders_read(tmp_path):
    from recipes.graph import build_graph

    base = _paper_base(tmp_path)
    rows = {row.label: build_graph(cfg) for row, cfg, _ in ablations.rows("7d", base)}
    twelve, default = rows["12"].build(), rows["2-4-12"].build()
    shared = [i for i, (a, b) in enumerate(zip(twelve.blocks("ventral"), twelve.blocks("dorsal"))) if a is b]
    assert shared == [0, 1, 2, 3]  # the default's blocks 1-4, not the whole encoder (that is Table 7e's "All")
    assert [i for i, (a, b) in enumerate(zip(default.blocks("ventral"), default.blocks("dorsal"))) if a is b] == \
        [0, 1, 2, 3]
    ends = {s.name: {a.name: sum(x.blocks for x in s.areas[:i + 1]) for i, a in enumerate(s.areas)}
            for s in rows["12"].streams}
    assert ends["ventral"]["V1"] == ends["ventral"]["V2"] == ends["ventral"]["V4"] == 12
    assert ends["dorsal"]["MT"] == 12
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    decoders = lambda m: sum(p.numel() for s in m.streams.values() for p in s.decoders.parameters())  # noqa: E731
    assert count(twelve) - decoders(twelve) == count(default) - decoders(default)  # same encoders, same sharing


@pytest.mark.e2e
def test_without_imagenet_the_paper_rows_say_what_they_need(tmp_path, capsys, monkeypatch):
    base = _paper_base(tmp_path, images=False)
    (no_init, ucf, in1k) = ablations.rows("7a", base)
    assert no_init[1] is not None and ucf[1] is not None  # neither needs ImageNet
    assert in1k[1] is None and "data.image_root" in in1k[2]
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    assert ablations.main(["--table", "7e", f"data.root={tmp_path / 'ucf'}"]) == 2
    err = capsys.readouterr().err
    assert "data.image_root=/path/to/imagenet" in err and "data.image_root=frames" in err


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


@pytest.mark.e2e
def test_cli_needs_a_known_table(capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    assert ablations.main(["--variant", "tiny"]) == 2
    assert ablations.main(["--table", "7z"]) == 2
    assert "unknown table '7z'" in capsys.readouterr().err
