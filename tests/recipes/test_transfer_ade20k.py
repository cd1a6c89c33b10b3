"""ADE20K transfer: the official layout, clear errors, a tiny run whose loss falls."""

import json

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from recipes import transfer_ade20k
from visualpath.data.formats import DatasetFormatError
from visualpath.transfer.data import ADE20K, write_ade20k_like


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return write_ade20k_like(tmp_path_factory.mktemp("ade"), train=12, val=4, size=64, classes=3)


def test_the_official_layout_reads_with_reduced_labels(ade):
    train = ADE20K(ade.parent, "training", crop=48, train=True)
    item = train[0]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.uint8
    assert item["label"].shape == (48, 48)
    assert set(item["label"].unique().tolist()) <= {0, 1, 2, 255}  # 0 ("other") -> 255, k -> k - 1
    raw = np.asarray(Image.open(ade / "annotations/validation/ADE_val_00000001.png"))
    val = ADE20K(ade, "validation", crop=64, train=False)
    _, label = val._read(0)
    assert torch.equal(label, torch.from_numpy(np.where(raw == 0, 255, raw.astype(np.int64) - 1)))


def test_missing_or_malformed_annotations_name_the_file(ade, tmp_path):
    with pytest.raises(DatasetFormatError, match="missing images/training.*expected ADEChallengeData2016"):
        ADE20K(tmp_path)
    import shutil

    broken = tmp_path / "copy"
    shutil.copytree(ade, broken / "ADEChallengeData2016")
    (broken / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(DatasetFormatError, match="ADE_train_00000002.jpg has no annotation .*8-bit PNG"):
        ADE20K(broken)
    rgb = broken / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"
    Image.new("RGB", (64, 64)).save(rgb)
    with pytest.raises(DatasetFormatError, match="ADE_val_00000001.png is a RGB image.*single-channel"):
        ADE20K(broken, "validation", train=False)._read(0)


@pytest.mark.e2e
def test_the_tiny_variant_trains_its_loss_down_and_reports_miou(tmp_path, monkeypatch):
    monkeypatch.setenv("VISUALPATH_DATA", str(tmp_path / "data"))
    cfg = attrs.evolve(transfer_ade20k.VARIANTS["tiny"], run_dir=str(tmp_path / "run"), device="cpu")
    results = transfer_ade20k.run(cfg)
    assert 0.0 <= results["miou"] <= 1.0 and results["images"] == 8
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.e2e
def test_a_pretrained_run_gives_its_ventral_encoder(tmp_path, monkeypatch, capsys):
    from recipes import bimm_ucf101, pipeline

    monkeypatch.setenv("VISUALPATH_DATA", str(tmp_path / "data"))
    source = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(tmp_path / "pre"), device="cpu",
                          stages=("ventral",))
    pipeline.run(source)
    cfg = attrs.evolve(transfer_ade20k.VARIANTS["tiny"], run_dir=str(tmp_path / "run"), device="cpu",
                       pretrained=source.run_dir, optim=attrs.evolve(transfer_ade20k.VARIANTS["tiny"].optim,
                                                                     total_steps=2))
    model = transfer_ade20k.build_model(cfg, __import__("rich.console").console.Console(stderr=True))
    from safetensors.torch import load_file

    saved = load_file(f"{source.run_dir}/ventral/model.safetensors")
    assert torch.equal(model.backbone.encoder.blocks[0].attn.qkv.weight,
                       saved["streams.ventral.stages.V1.0.attn.qkv.weight"])
    assert "ventral encoder from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a run directory"):
        transfer_ade20k.check(attrs.evolve(cfg, pretrained=str(tmp_path)))


def test_a_run_without_the_needed_stream_is_refused_before_compute(tmp_path):
    from areas.bimm import paper_pathway
    from recipes.config import Config
    from visualpath.config import to_dict
    from visualpath.rundir import write_pathway

    run = tmp_path / "videomae_run"
    run.mkdir()
    saved = attrs.evolve(Config(), model=attrs.evolve(Config().model, streams=("dorsal",)))
    (run / "config.json").write_text(json.dumps({"config": to_dict(saved)}))
    write_pathway(run, paper_pathway(saved.model))
    with pytest.raises(ValueError, match=r"the backbone is the ventral encoder: the run .* has streams \['dorsal'\]"):
        transfer_ade20k.check(attrs.evolve(transfer_ade20k.VARIANTS["tiny"], pretrained=str(run)))
