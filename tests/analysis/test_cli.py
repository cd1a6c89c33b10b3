"""python -m analysis extract / predict on any video files."""

import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from analysis.cli import main
from analysis.features import Features

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from recipes import bimm_ucf101

    run = tmp_path_factory.mktemp("cli") / "run"
    bimm_ucf101.run(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(run), device="cpu"))
    return run


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from visualpath.data.layouts import video_set

    root, records, _ = video_set(None, "ucf101", 1, False, None)
    folder = tmp_path_factory.mktemp("mine")
    for r in records[:4]:
        (folder / r.path.name).symlink_to(r.path)
    (folder / "broken.avi").write_bytes(b"not a video")
    return folder


def test_extract_writes_per_area_features_of_any_videos(finetuned, videos, tmp_path, capsys):
    assert main(["extract", str(finetuned), str(videos), "--out", str(tmp_path / "feats")]) == 0
    features = Features.load(tmp_path / "feats")
    assert features.names == ["V1", "V2", "MT"] and len(features) == 4  # one row per readable file
    assert features.meta["skipped"] == 1 and len(features.meta["files"]) == 4
    assert list(features.meta["unreadable"])[0].endswith("broken.avi")


def test_predict_gives_top_k_class_names_per_file(finetuned, videos, tmp_path, capsys):
    assert main(["predict", str(finetuned), str(videos), "--top", "3", "--out", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    classes = json.loads((finetuned / "classes.json").read_text())
    assert len(rows) == 5 and [r for r in rows if r.get("error")][0]["file"].endswith("broken.avi")
    good = [r for r in rows if "top" in r]
    assert all(len(r["top"]) == 3 and r["top"][0][0] in classes for r in good)
    assert "broken.avi: unreadable" in capsys.readouterr().out


def test_the_module_dispatches_the_subcommands(finetuned, videos, tmp_path):
    done = subprocess.run([sys.executable, "-m", "analysis", "predict", str(finetuned), str(videos)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "broken.avi: unreadable" in done.stdout


def test_extract_reads_another_librarys_checkpoint_too(videos, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=192,
                                      num_hidden_layers=2, num_attention_heads=3, intermediate_size=384)
    transformers.VideoMAEModel(cfg).save_pretrained(tmp_path / "hf")
    assert main(["extract", str(tmp_path / "hf" / "model.safetensors"), str(videos), "--out", str(tmp_path / "f"),
                 "--frames", "4", "--size", "32"]) == 0
    features = Features.load(tmp_path / "f")
    assert features.names == ["encoder"] and tuple(features["encoder"].shape) == (4, 192)


def test_predict_on_a_single_unreadable_file_reports_it(finetuned, videos, tmp_path):
    assert main(["predict", str(finetuned), str(videos / "broken.avi"), "--out", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 1 and rows[0]["error"] == "unreadable"
