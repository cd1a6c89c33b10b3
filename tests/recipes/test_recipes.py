"""Every recipe's tiny variant runs end to end; the paper variants quote Tables 8 and 9; the
dataset layouts the recipes read are exercised on the built-in set laid out as each release."""

import importlib
import json
import os
from pathlib import Path

import attrs
import torch
import pytest

from areas.bimm import paper_pathway
from recipes import checks, cli, pipeline
from visualpath.data import ensure_synthetic, read_ucf101
from visualpath.data.synthetic import SyntheticSpec
from tests.conftest import accuracy_over

RECIPES = ["bimm_ucf101", "bimm_k400", "bimm_ssv2", "bimm_hmdb51", "bimm_imagenet", "videomae_ucf101"]


def _module(name):
    return importlib.import_module(f"recipes.{name}")


def _tiny(name, tmp_path, **changes):
    cfg = _module(name).VARIANTS["tiny"]
    return attrs.evolve(cfg, run_dir=str(tmp_path / name), device="cpu", **changes)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_config_variants_and_run(name):
    module = _module(name)
    assert {"demo", "paper", "tiny"} <= set(module.VARIANTS)
    assert module.config() == module.VARIANTS["paper"] and callable(module.run)
    for variant in ("demo", "tiny"):
        checks.check(module.VARIANTS[variant])  # a valid configuration, no data needed


@pytest.mark.parametrize("name", ["bimm_k400", "bimm_ssv2", "bimm_imagenet", "videomae_ucf101"])
@pytest.mark.e2e
def test_tiny_variant_runs_every_stage(name, tmp_path):
    cfg = _tiny(name, tmp_path)
    results = pipeline.run(cfg)
    assert accuracy_over(results)
    stages = {json.loads(line)["stage"] for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()}
    assert stages == set(cfg.stages)
    for stage in set(cfg.stages) - {"test"}:
        assert (Path(cfg.run_dir) / stage / "model.safetensors").is_file()


@pytest.mark.e2e
def test_hmdb51_finetunes_another_runs_pretrained_pathway(tiny_ucf101_run, tmp_path, capsys):
    cfg = _tiny("bimm_hmdb51", tmp_path, pretrained=str(tiny_ucf101_run))
    assert cfg.stages == ("finetune", "test")
    results = pipeline.run(cfg)
    assert accuracy_over(results)
    assert f"dorsal encoder from {tiny_ucf101_run / 'joint' / 'model.safetensors'}" in capsys.readouterr().err.replace(
        "\n", "")


def test_videomae_baseline_is_one_rgb_target_at_the_last_block():
    cfg = _module("videomae_ucf101").config()
    pathway = paper_pathway(cfg.model)
    (stream,) = pathway.streams
    assert stream.name == "dorsal" and [(a.name, a.blocks) for a in stream.areas] == [("V4", 12)]
    assert stream.areas[0].decoder.depth == 4 and stream.mask.ratio == 0.9


def test_bimm_imagenet_is_the_ventral_branch_alone():
    cfg = _module("bimm_imagenet").config()
    assert cfg.model.streams == ("ventral",) and cfg.finetune.stream == "ventral"
    ft = cfg.finetune
    assert (ft.optim.base_lr, ft.optim.batch_size, ft.optim.epochs, ft.optim.warmup_epochs) == (2e-3, 128, 100, 20)
    assert (ft.drop_path, ft.optim.layer_decay, ft.flip, ft.repeated) == (0.1, 0.65, False, 1)
    with pytest.raises(ValueError, match="data.image_root=/path/to/imagenet"):
        checks.check(cfg)
    with pytest.raises(ValueError, match="is an image stream, so it classifies images: set data.image_root"):
        checks.check(attrs.evolve(cfg, stages=("finetune", "test")))


@pytest.mark.parametrize("name, pre, ft, views", [
    # (joint base lr, batch, epochs, flip), (base lr, batch, epochs, drop path, layer decay, flip), clips x crops
    ("bimm_k400", (1.5e-4, 16, 800, False), (1e-3, 16, 75, 0.1, 0.75, True), (5, 3)),
    ("bimm_ssv2", (1.5e-4, 16, 800, True), (5e-4, 16, 40, 0.1, 0.75, False), (2, 3)),
    ("bimm_ucf101", (3e-4, 64, 1600, True), (5e-4, 32, 100, 0.2, 0.7, True), (5, 3)),
    ("bimm_hmdb51", None, (1e-3, 32, 50, 0.2, 0.7, True), (10, 3)),
])
def test_paper_variants_quote_tables_8_and_9(name, pre, ft, views):
    cfg = _module(name).config()
    if pre is not None:
        o = cfg.joint.optim
        assert (o.base_lr, o.batch_size, o.epochs, cfg.joint.flip) == pre
        assert o.warmup_epochs == 40 and o.betas == (0.9, 0.95) and o.weight_decay == 0.05
    f = cfg.finetune
    assert (f.optim.base_lr, f.optim.batch_size, f.optim.epochs, f.drop_path, f.optim.layer_decay, f.flip) == ft
    assert f.optim.warmup_epochs == 5 and f.optim.betas == (0.9, 0.999)
    assert (f.mixup, f.cutmix, f.smoothing, f.repeated) == (0.8, 1.0, 0.1, 2)
    assert (cfg.test.clips, cfg.test.crops) == views


def test_large_variants_take_the_vit_l_column():
    k400, ssv2 = _module("bimm_k400").VARIANTS["paper-large"], _module("bimm_ssv2").VARIANTS["paper-large"]
    assert (k400.model.size, k400.finetune.optim.epochs, k400.finetune.drop_path) == ("large", 50, 0.2)
    assert (ssv2.model.size, ssv2.finetune.optim.epochs, ssv2.finetune.drop_path) == ("large", 30, 0.2)
    assert _module("bimm_ssv2").config().finetune.sampling == "segments"


TABLE_4 = {"base": (87e6, 180e9), "large": (305e6, 597e9)}  # parameters, multiply-adds per 16x224^2 view


@pytest.mark.parametrize("name, variant", [(n, v) for n in RECIPES for v in ("paper", "paper-large")
                                           if v in _module(n).VARIANTS and _module(n).VARIANTS[v].finetune.stream
                                           == "dorsal"])
def test_the_finetuned_model_each_paper_variant_builds_has_table_4s_size(name, variant):
    """Built as the recipe builds it (its graph, the finetuned stream's encoder + head, K400's
    400 classes as in Table 4), on the meta device: parameters and multiply-adds within 1%."""
    from torch.utils.flop_counter import FlopCounterMode

    from recipes.graph import build_graph
    from recipes.stages import _classifier

    cfg = _module(name).VARIANTS[variant]
    params, macs = TABLE_4[cfg.model.size]
    with torch.device("meta"):
        model = _classifier(cfg, build_graph(cfg).build(), 400)
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.empty(1, 3, cfg.data.frames, cfg.data.size, cfg.data.size))
    assert abs(sum(p.numel() for p in model.parameters()) / params - 1) < 0.01
    assert abs(counter.get_total_flops() / 2 / macs - 1) < 0.01  # flop_counter counts a multiply-add twice
    assert len(model.encoder.blocks) == {"base": 12, "large": 24}[cfg.model.size]


# --------------------------------------------------------------------------- official layouts


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    spec = SyntheticSpec(groups=7, clips=1, size=128)
    root = ensure_synthetic(spec=spec)
    train, classes = read_ucf101(root, 1, train=True)
    test, _ = read_ucf101(root, 1, train=False)
    return root, train, test, classes


def _kinetics(root: Path, train, test, classes):
    (root / "annotations").mkdir(parents=True)
    for part, records, csv_name in (("train", train, "train.csv"), ("val", test, "validate.csv")):
        lines = ["label,youtube_id,time_start,time_end,split"]
        for i, r in enumerate(records):
            label = classes[r.label]
            _link(r.path, root / part / label / f"vid{i:04d}_000000_000010.mp4")
            lines.append(f"{label},vid{i:04d},0,10,{part}")
        (root / "annotations" / csv_name).write_text("\n".join(lines) + "\n")


def _ssv2(root: Path, train, test, classes):
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "something-something-v2-labels.json").write_text(
        json.dumps({c: str(i) for i, c in enumerate(classes)}))
    for records, name, offset in ((train, "train", 0), (test, "validation", 10_000)):
        entries = []
        for i, r in enumerate(records):
            _link(r.path, root / "20bn-something-something-v2" / f"{offset + i}.webm")
            entries.append({"id": str(offset + i), "template": classes[r.label], "label": "", "placeholders": []})
        (root / "labels" / f"something-something-v2-{name}.json").write_text(json.dumps(entries))


def _hmdb51(root: Path, train, test, classes):
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for ci, c in enumerate(classes):
        lines = []
        for records, tag in ((train, 1), (test, 2)):
            for r in records:
                if r.label == ci:
                    _link(r.path, root / "hmdb51_org" / c / r.path.name)
                    lines.append(f"{r.path.name} {tag}")
        for k in (1, 2, 3):
            (splits / f"{c}_test_split{k}.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, layout", [("bimm_k400", _kinetics), ("bimm_ssv2", _ssv2),
                                          ("bimm_hmdb51", _hmdb51)])
@pytest.mark.e2e
def test_recipes_read_their_datasets_official_layout(name, layout, builtin, tmp_path):
    _, train, test, classes = builtin
    root = tmp_path / "data"
    layout(root, train, test, classes)
    cfg = _tiny(name, tmp_path, data=attrs.evolve(_module(name).VARIANTS["tiny"].data, root=str(root)))
    results = pipeline.run(cfg)
    assert results["test_items"] == len(test) and accuracy_over(results)


@pytest.mark.parametrize("name, argv, message", [
    ("bimm_k400", ["data.root={tmp}"], "must hold annotations/train.csv"),
    ("bimm_ssv2", ["data.root={tmp}"], "labels/labels.json"),
    ("bimm_hmdb51", ["data.root={tmp}"], "testTrainMulti_7030_splits"),
    ("bimm_imagenet", ["data.image_root={tmp}"], "train/<class>/ and val/<class>/"),
    ("bimm_hmdb51", ["pretrained=/nonexistent/run"], "pretrained='/nonexistent/run' does not exist"),
    ("bimm_ucf101", ["model.depth=0"], "depth must be a block count >= 1 or None"),
    ("bimm_ucf101", ["pathway.V1.blocks=3"], "must sum to the encoder depth"),
    ("bimm_ucf101", ["model.streams=ventral,ventral"], "streams must be 'ventral', 'dorsal' or both"),
])
def test_recipes_reject_bad_configuration_before_compute(name, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises((SystemExit, ValueError)) as err:
        _module(name).main(argv)
    assert message in str(err.value) + capsys.readouterr().err


@pytest.mark.e2e
def test_joint_pretraining_can_start_from_a_videomae_checkpoint(tmp_path, capsys):
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    cfg = _tiny("bimm_ucf101", tmp_path, stages=("joint",))
    m = cfg.model
    hf = VideoMAEModel(VideoMAEConfig(image_size=cfg.data.size, patch_size=m.patch, num_frames=cfg.data.frames,
                                      tubelet_size=2, hidden_size=m.width, num_hidden_layers=m.encoder_depth,
                                      num_attention_heads=m.heads, intermediate_size=4 * m.width,
                                      layer_norm_eps=1e-6, use_mean_pooling=True))
    torch.save(hf.state_dict(), tmp_path / "videomae.pth")
    pipeline.run(attrs.evolve(cfg, init=str(tmp_path / "videomae.pth")))
    err = capsys.readouterr().err.replace("\n", "")
    assert "dorsal stream from the checkpoint" in err and "huggingface-videomae" in err and "loaded 50 tensors; ignored 0" in err
    with pytest.raises(ValueError, match="init='/nonexistent.pth' does not exist"):
        checks.check(attrs.evolve(cfg, init="/nonexistent.pth"))


@pytest.mark.e2e
def test_finetuning_can_start_from_a_videomae_checkpoint(tmp_path, capsys):
    from safetensors.torch import save_file
    from transformers import VideoMAEConfig, VideoMAEModel

    cfg = _tiny("bimm_hmdb51", tmp_path)
    m = cfg.model
    hf = VideoMAEModel(VideoMAEConfig(image_size=cfg.data.size, patch_size=m.patch, num_frames=cfg.data.frames,
                                      tubelet_size=2, hidden_size=m.width, num_hidden_layers=m.encoder_depth,
                                      num_attention_heads=m.heads, intermediate_size=4 * m.width,
                                      layer_norm_eps=1e-6, use_mean_pooling=True))
    save_file(hf.state_dict(), str(tmp_path / "videomae.safetensors"))
    results = pipeline.run(attrs.evolve(cfg, pretrained=str(tmp_path / "videomae.safetensors")))
    assert accuracy_over(results)
    err = capsys.readouterr().err.replace("\n", "")
    assert "dorsal encoder from the checkpoint" in err and "loaded 50 tensors; ignored 0" in err
    save_file({"fc.weight": hf.state_dict()["embeddings.patch_embeddings.projection.bias"][None]},
              str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors'?: unrecognised checkpoint format .*fc.weight"):
        checks.check(attrs.evolve(cfg, pretrained=str(tmp_path / "other.safetensors")))


@pytest.mark.parametrize("argv, expected", [
    (["--data-root", "/x"], ["--variant", "paper", "--data.root", "/x"]),
    (["data_root=/x", "k=1"], ["--variant", "paper", "data.root=/x", "k=1"]),
    (["data.root=/x", "--variant", "demo"], ["data.root=/x", "--variant", "demo"]),
    (["--run-dir", "data_root"], ["--run-dir", "data_root"]),  # a value, not a key
    (["k=1"], ["k=1"]),
])
def test_real_data_on_the_command_line_selects_the_paper_variant(argv, expected):
    assert cli.paper_if_data(argv, {"demo": None, "paper": None}) == expected
    images = cli.paper_if_data(["--data-image-root", "/i"], {"demo": None, "paper": None}, ("data.image_root",))
    assert images == ["--variant", "paper", "--data.image_root", "/i"]


@pytest.mark.e2e
def test_an_mae_or_timm_image_checkpoint_starts_the_ventral_stage(tmp_path, capsys):
    import torch
    from timm.models.vision_transformer import VisionTransformer

    cfg = _tiny("bimm_ucf101", tmp_path, stages=("ventral",))
    m = cfg.model
    vit = VisionTransformer(img_size=cfg.data.size, patch_size=m.patch, embed_dim=m.width, depth=m.encoder_depth, num_heads=m.heads,
                            num_classes=0)
    torch.save({"model": vit.state_dict()}, tmp_path / "mae.pth")
    pipeline.run(attrs.evolve(cfg, init=str(tmp_path / "mae.pth")))
    err = capsys.readouterr().err.replace("\n", "")
    blocks = 12 * m.encoder_depth
    assert "ventral stream from the checkpoint" in err and f"vit: loaded {blocks + 2} tensors" in err
    assert "cls_token" in err  # reported as not used by the pathway's stream
    with pytest.raises(ValueError, match="initialises the ventral stream before the ventral or joint stage: keep one"):
        checks.check(attrs.evolve(cfg, init=str(tmp_path / "mae.pth"), stages=("finetune",)))


@pytest.mark.slow
def test_compile_and_checkpointing_train_and_save_plain_checkpoints(tmp_path):
    from safetensors.torch import load_file

    cfg = _tiny("bimm_ucf101", tmp_path, stages=("joint",), compile=True, checkpointing=True)
    pipeline.run(cfg)
    keys = load_file(str(tmp_path / "bimm_ucf101" / "joint" / "model.safetensors")).keys()
    assert keys and not any(k.startswith(("_orig_mod.", "module.")) for k in keys)


@pytest.mark.e2e
def test_under_torchrun_only_rank_0_lists_a_real_dataset(monkeypatch, tmp_path):
    """A 240k-file dataset on shared storage is listed once per job: rank 0 lists, the others
    receive its list (and its refusal, when the set is not in its layout)."""
    import attrs
    import torch.distributed as dist

    from recipes import bimm_ucf101, stages

    calls = []
    monkeypatch.setattr(stages, "video_set", lambda *a, **k: calls.append(a) or ("root", ["rec"], ["c"]))
    cfg = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], data=attrs.evolve(bimm_ucf101.VARIANTS["tiny"].data,
                                                                       root=str(tmp_path)))

    class Rank:
        def __init__(self, rank):
            self.rank, self.distributed, self.main = rank, True, rank == 0

    sent = {}

    def broadcast(objects, src):
        if "list" in sent:
            objects[0] = sent["list"]
        else:
            sent["list"] = objects[0]

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    assert stages.video_records(cfg, train=True, runtime=Rank(0)) == ("root", ["rec"], ["c"])
    assert stages.video_records(cfg, train=True, runtime=Rank(1)) == ("root", ["rec"], ["c"])
    assert len(calls) == 1  # rank 1 did not list
    sent.clear()
    monkeypatch.setattr(stages, "video_set", lambda *a, **k: (_ for _ in ()).throw(ValueError("not a UCF101 tree")))
    for rank in (0, 1):
        with pytest.raises(ValueError, match="not a UCF101 tree"):
            stages.video_records(cfg, train=True, runtime=Rank(rank))
