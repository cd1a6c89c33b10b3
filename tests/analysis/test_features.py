"""Feature extraction, its files, attention weights, and the per-run report on a tiny run."""

import json

import attrs
import pytest
import torch

from analysis.features import Features, KeptItems, block_features, extract, load_run, run_dataset
from analysis.figures import attention_weights
from tests.conftest import tiny_pathway


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_pathway().build().eval()


def test_pooled_token_and_block_features_agree_with_the_model(model):
    clips = torch.randint(0, 256, (5, 3, 4, 32, 32), dtype=torch.uint8)
    pooled = extract(model, clips, "dorsal", batch_size=2, progress=False)
    tokens = extract(model, clips, "dorsal", pooled=False, progress=False)
    blocks = extract(model, clips, "dorsal", level="block", progress=False)
    direct = model.features(clips, "dorsal")
    assert pooled.names == ["V1", "V2", "MT"] and pooled["MT"].shape == (5, 192)
    assert torch.allclose(pooled["V2"], direct["V2"].mean(1), atol=1e-5)
    assert tokens["V1"].shape == (5, 2 * 2 * 2, 192) and tokens.meta["grid"] == [2, 2, 2]
    assert blocks.names == ["block1", "block2", "block3", "block4"]
    assert torch.allclose(blocks["block2"], pooled["V2"], atol=1e-5)  # V2 ends at block 2 (split 1, 1, 2)
    # an image stream reads each clip's middle frame
    ventral = extract(model, clips, "ventral", progress=False)
    assert torch.allclose(ventral["V4"], model.features(clips[:, :, 2], "ventral")["V4"].mean(1), atol=1e-5)


def test_features_save_and_load_without_pickle(model, tmp_path):
    clips = torch.rand(3, 3, 4, 32, 32)
    data = [{"video": clips[i], "label": torch.tensor(i)} for i in range(3)]
    feats = extract(model, data, "dorsal", progress=False)
    path = feats.save(tmp_path / "f")
    assert path.suffix == ".safetensors" and json.loads(path.with_suffix(".json").read_text())["stream"] == "dorsal"
    back = Features.load(tmp_path / "f")
    assert back.names == feats.names and torch.equal(back.labels, torch.arange(3))
    assert all(torch.equal(back[n], feats[n]) for n in feats.names)
    with pytest.raises(ValueError, match="no saved features"):
        Features.load(tmp_path / "missing")


def test_attention_weights_reproduce_the_blocks_own_attention(model):
    x = torch.rand(2, 3, 32, 32)
    weights = attention_weights(model, x, "ventral", block=1)  # (B, heads, N, N)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 4))
    h = block_features(model, x, "ventral")["block1"]
    block = model.blocks("ventral")[1]
    B, N, D = h.shape
    v = block.attn.qkv(block.norm1(h)).reshape(B, N, 3, 3, D // 3)[:, :, 2].transpose(1, 2)
    mine = block.attn.proj((weights @ v).transpose(1, 2).reshape(B, N, D))
    assert torch.allclose(mine, block.attn(block.norm1(h)), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from recipes import bimm_ucf101, pipeline

    cfg = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(tmp_path_factory.mktemp("runs") / "tiny"),
                       device="cpu", stages=("ventral", "joint"))
    pipeline.run(cfg)
    return cfg.run_dir


@pytest.mark.e2e
def test_a_run_directory_loads_with_its_weights(tiny_run, tmp_path):
    from safetensors.torch import load_file

    model = load_run(tiny_run)
    saved = load_file(f"{tiny_run}/joint/model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert len(run_dataset(tiny_run, train=False)) > 0
    with pytest.raises(ValueError, match="is not a run directory: it has no pathway.json$"):
        load_run(tmp_path)


@pytest.mark.e2e
def test_the_command_line_prints_the_per_area_table_and_writes_figures(tiny_run, capsys):
    from analysis.report import main

    assert main([tiny_run, "--limit", "12"]) == 0
    out = capsys.readouterr().out
    for word in ("probe top-1", "kNN", "OSI", "DSI", "V1", "V2", "V4", "MT"):
        assert word in out
    result = json.loads(open(f"{tiny_run}/analysis/results.json").read())
    assert {(r["stream"], r["area"]) for r in result["rows"]} == {
        ("ventral", "V1"), ("ventral", "V2"), ("ventral", "V4"), ("dorsal", "V1"), ("dorsal", "V2"), ("dorsal", "MT")}
    assert all(0 <= r["probe_top1"] <= 1 and 0 <= r["knn_top1"] <= 1 for r in result["rows"])
    assert all(r["dsi"] is None for r in result["rows"] if r["stream"] == "ventral")
    names = {p.rsplit("/", 1)[1] for p in result["figures"]}
    assert names == {"cka.png", "reconstruction_ventral.png", "reconstruction_dorsal.png", "tuning_ventral.png",
                     "tuning_dorsal.png", "attention_ventral.png", "attention_dorsal.png", "tuning_distributions.png",
                     "losses.png", "receptive_fields_ventral.png", "receptive_fields_dorsal.png"}
    for r in result["rows"]:  # an interval around every probe figure, and the untrained baseline beside it
        lo, hi = r["probe_ci95"]
        assert lo <= r["probe_top1"] <= hi and 0 <= r["random_init_probe_top1"] <= 1
        assert 0 <= r["responsive"] <= 1 and 0 < r["top_component_share"] <= 1
        draws = r["random_init_probe_draws"]  # three random draws of the graph: a mean and a spread
        assert len(draws) == 3 and abs(r["random_init_probe_top1"] - sum(draws) / 3) < 1e-9
        starts = r["untrained_start_probe_draws"]  # the dorsal stream as the joint stage starts it: its own reference
        assert (len(starts) == 3 and abs(r["untrained_start_probe_top1"] - sum(starts) / 3) < 1e-9) \
            if r["stream"] == "dorsal" else (starts == [] and r["untrained_start_probe_top1"] is None)
        assert r["random_init_probe_sd"] is not None and r["random_init_probe_sd"] >= 0
        assert 0 <= r["target_average_share"] < 1  # the part of the target's mean square its average accounts for
    assert "random weights % (mean ± sd, 3 draws)" in " ".join(out.split()) and "responsive" in out
    assert main(["/nonexistent-run"]) == 2
    total = result["total_steps"]  # which weights it read, said in the table and recorded
    assert result["stage"] == "joint" and result["step"] == total and result["finished"] is True and total > 0
    assert f"joint weights at step {total} of {total}" in " ".join(out.split())
    assert "unfinished" not in out


class _Counted(torch.utils.data.Dataset):
    """Four 1 KiB items; counts reads of each."""

    classes = ["a", "b"]

    def __init__(self):
        self.reads = [0] * 4

    def __len__(self):
        return 4

    def __getitem__(self, i):
        self.reads[i] += 1
        return {"video": torch.full((1024,), i, dtype=torch.uint8), "label": torch.tensor(i % 2), "short": ""}


def test_kept_items_are_read_once_while_they_fit_their_budget_and_again_past_it():
    data = _Counted()
    kept = KeptItems(data, budget_bytes=2 * (1024 + 8))  # two items' tensors
    for _ in range(3):
        items = [kept[i] for i in range(len(kept))]
    assert data.reads == [1, 1, 3, 3] and kept.used == 2 * (1024 + 8)
    assert [int(x["video"][0]) for x in items] == [0, 1, 2, 3] and kept.classes == ["a", "b"]
    items[0]["video"] = None  # a reader changing its item does not change the kept one
    assert kept[0]["video"] is not None
    other = KeptItems(_Counted(), share=kept)  # the budget is shared, and already spent
    [other[0] for _ in range(2)]
    assert other.dataset.reads[0] == 2 and other.used == kept.used
    nothing = KeptItems(_Counted(), budget_bytes=0)
    [nothing[0] for _ in range(2)]
    assert nothing.dataset.reads[0] == 2


@pytest.mark.e2e
def test_keeping_the_clips_in_memory_changes_no_figure_of_the_analysis(tiny_run):
    from analysis.report import analyse_run

    kept = analyse_run(tiny_run, limit=12, figures=False, progress=False)
    again = analyse_run(tiny_run, limit=12, figures=False, progress=False, keep_gb=0)
    assert kept["rows"] == again["rows"] and kept["cka"] == again["cka"]
    with pytest.raises(ValueError, match="keep_gb"):
        analyse_run(tiny_run, keep_gb=-1)


@pytest.mark.e2e
def test_a_run_stopped_mid_stage_is_analysed_with_a_warning_saying_so(tiny_run, tmp_path, capsys):
    import shutil

    from analysis.report import main
    from visualpath.rundir import selected_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    progress_file = selected_checkpoint(run / "joint") / "progress.json"
    progress = json.loads(progress_file.read_text())
    progress.update(step=2, finished=False)  # as a kill after the joint stage's second step leaves it
    progress_file.write_text(json.dumps(progress))
    assert main([str(run), "--limit", "12", "--no-figures"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"the joint stage is unfinished: these are its weights at step 2 of {progress['total_steps']}" in out
    result = json.loads((run / "analysis" / "results.json").read_text())
    assert result["stage"] == "joint" and result["step"] == 2 and result["finished"] is False


def test_the_token_grid_of_a_stream_with_a_frame_step_fills_its_tokens():
    """A video stream that sees every 2nd frame: the grid ``extract`` records (and the neural
    readout lays tokens on) is the one its tokens fill."""
    from analysis.encoding import readout
    from analysis.features import token_grid

    spec = tiny_pathway(share="none")
    spec = attrs.evolve(spec, streams=[spec.streams[0], attrs.evolve(spec.streams[1], frame_step=2)])
    model = spec.build().eval()
    clips = torch.randint(0, 256, (2, 3, 8, 32, 32), dtype=torch.uint8)
    features = extract(model, clips, "dorsal", pooled=False, progress=False)
    tokens = features["MT"]
    assert tuple(features.meta["grid"]) == token_grid(model, "dorsal", clips) == (2, 2, 2)
    assert tokens.shape[1] == 8 and readout(tokens, token_grid(model, "dorsal", clips), "grid", 2).shape == (2, 4 * 192)


@pytest.mark.parametrize("dorsal_init", ["ventral", "none"])
def test_the_recipes_untrained_start_inherits_the_video_stream_as_the_joint_stage_does(model, tmp_path, dorsal_init):
    from analysis.features import random_weights, untrained_start

    (tmp_path / "config.json").write_text(json.dumps({"config": {"model": {"dorsal_init": dorsal_init,
                                                                           "dorsal_contrast": 4.0}}}))
    start = untrained_start(model, tmp_path, seed=1)
    if dorsal_init == "none":
        assert start is None  # the joint stage then starts from the random weights themselves
        return
    random = random_weights(model, seed=1)
    top = model.pathway.encoder.depth - 1  # MT's last block: not shared, so inherited from V4's position
    theirs, ours = random.blocks("dorsal")[top], start.blocks("dorsal")[top]
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), start.blocks("ventral")[top].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(theirs.parameters(), ours.parameters()))


@pytest.mark.e2e
def test_two_analysed_runs_compare_from_another_folder_after_one_is_moved(tiny_run, tmp_path, monkeypatch):
    """What a user runs: python -m analysis on a recipe's run, the run copied elsewhere, then
    python -m analysis compare from a third folder. A run against its own copy: every area
    paired over the same test items, every difference 0 with an interval of 0."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from analysis.report import main

    if not (Path(tiny_run) / "analysis" / "results.json").is_file():
        assert main([tiny_run, "--limit", "12", "--no-figures"]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved, symlinks=True)
    third = tmp_path / "third"
    third.mkdir()
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-m", "analysis", "compare", str(tiny_run), "../moved", "--out", "c.json"],
                          cwd=third, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((third / "c.json").read_text())
    assert result["same_test_items"] and len(result["rows"]) == 6
    for row in result["rows"]:
        assert row["paired"] and row["probe_diff"] == 0 and row["probe_diff_ci95"] == [0.0, 0.0]
        assert row["probe_a"] == row["probe_b"] and row["target_left_a"] == row["target_left_b"]


def test_the_untrained_start_is_the_joint_stage_s_own_start_from_an_untrained_ventral_stream(tmp_path):
    """The recipe's path (recipes.stages.start_from_ventral, as run_joint calls it) from the
    same random draw gives the same weights, tensor for tensor."""
    from recipes import bimm_ucf101
    from recipes.graph import build_graph
    from recipes.stages import start_from_ventral
    from analysis.features import random_weights, untrained_start
    from visualpath.config import to_dict

    cfg = bimm_ucf101.VARIANTS["tiny"]  # dorsal_contrast 4: the inflation keeps temporal contrast
    model = build_graph(cfg).build()
    (tmp_path / "config.json").write_text(json.dumps({"config": to_dict(cfg)}))
    ours = untrained_start(model, tmp_path, seed=2)
    joint, ventral = random_weights(model, seed=2), random_weights(model, seed=2)
    start_from_ventral(cfg, joint, ventral)
    theirs = joint.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.state_dict().items())
