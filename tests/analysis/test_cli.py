"""python -m analysis extract / predict on any video files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.features import Features

pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from visualpath.data.layouts import video_set

    root, records, _ = video_set(None, "ucf101", 1, False, None)
    folder = tmp_path_factory.mktemp("mine")
    for r in records[:4]:
        (folder / r.path.name).symlink_to(r.path)
    (folder / "broken.avi").write_bytes(b"not a video")
    return folder


def test_extract_writes_per_area_features_of_any_videos(tiny_ucf101_run, videos, tmp_path, capsys):
    assert main(["extract", str(tiny_ucf101_run), str(videos), "--out", str(tmp_path / "feats")]) == 0
    features = Features.load(tmp_path / "feats")
    assert features.names == ["V1", "V2", "MT"] and len(features) == 4  # one row per readable file
    assert features.meta["skipped"] == 1 and len(features.meta["files"]) == 4
    assert list(features.meta["unreadable"])[0].endswith("broken.avi")


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """Six videos of the built-in set in two class folders, as a lab keeps its own clips."""
    from visualpath.data.layouts import video_set

    _, records, classes = video_set(None, "ucf101", 1, False, None)
    folder = tmp_path_factory.mktemp("classes")
    for name in (classes[3], classes[7]):
        (folder / name).mkdir()
        for r in [r for r in records if classes[r.label] == name][:3]:
            (folder / name / r.path.name).symlink_to(r.path)
    return folder, sorted((classes[3], classes[7]))


def test_extract_labels_videos_by_their_class_folders(tiny_ucf101_run, class_folders, tmp_path):
    folder, names = class_folders
    assert main(["extract", str(tiny_ucf101_run), str(folder), "--out", str(tmp_path / "feats")]) == 0
    features = Features.load(tmp_path / "feats")
    assert features.meta["classes"] == names and features.meta["labels_from"] == "class folders"
    by_file = dict(zip(features.meta["files"], features.labels.tolist()))
    assert all(names[label] == Path(f).parent.name for f, label in by_file.items()) and set(by_file.values()) == {0, 1}


def test_extract_reads_a_path_label_list(tiny_ucf101_run, class_folders, tmp_path):
    folder, names = class_folders
    files = sorted(folder.rglob("*.avi"))
    (tmp_path / "videos.txt").write_text("".join(f"{f} {names.index(f.parent.name)}\n" for f in files))
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    assert main(["extract", str(tiny_ucf101_run), "--list", str(tmp_path / "videos.txt"), "--out",
                 str(tmp_path / "feats")]) == 0
    features = Features.load(tmp_path / "feats")
    assert features.meta["classes"] == names and features.labels.tolist() == [names.index(f.parent.name) for f in files]


def test_extract_writes_every_streams_tokens_as_arrays_that_numpy_and_sklearn_read(tiny_ucf101_run, class_folders,
                                                                                    tmp_path):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    folder, names = class_folders
    out = tmp_path / "tokens.npz"
    assert main(["extract", str(tiny_ucf101_run), str(folder), "--out", str(out), "--stream", "all", "--tokens"]) == 0
    arrays = np.load(out)
    areas = [k for k in arrays.files if k not in ("labels", "files", "classes")]
    assert areas == ["ventral.V1", "ventral.V2", "ventral.V4", "dorsal.V1", "dorsal.V2", "dorsal.MT"]
    assert arrays["dorsal.MT"].ndim == 3 and arrays["dorsal.MT"].shape[0] == 6  # videos x tokens x width
    assert arrays["ventral.V4"].shape[1] != arrays["dorsal.MT"].shape[1]  # each stream's own token grid
    assert list(arrays["classes"]) == names and arrays["labels"].shape == (6,)
    flat = arrays["dorsal.MT"].reshape(6, -1)
    LogisticRegression(max_iter=50).fit(flat, arrays["labels"])  # as scikit-learn takes it
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["stream"] == "all" and set(meta["streams"]) == {"ventral", "dorsal"}


def test_extract_refuses_a_stream_the_run_lacks(tiny_ucf101_run, class_folders, tmp_path, capsys):
    folder, _ = class_folders
    assert main(["extract", str(tiny_ucf101_run), str(folder), "--out", str(tmp_path / "f"), "--stream", "MT"]) == 2
    assert "not a stream of the run" in capsys.readouterr().err


def test_predict_gives_top_k_class_names_per_file(tiny_ucf101_run, videos, tmp_path, capsys):
    assert main(["predict", str(tiny_ucf101_run), str(videos), "--top", "3", "--out", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    classes = json.loads((tiny_ucf101_run / "classes.json").read_text())
    assert len(rows) == 5 and [r for r in rows if r.get("error")][0]["file"].endswith("broken.avi")
    good = [r for r in rows if "top" in r]
    assert all(len(r["top"]) == 3 and r["top"][0][0] in classes for r in good)
    assert "broken.avi: unreadable" in capsys.readouterr().out


def test_the_module_dispatches_the_subcommands(tiny_ucf101_run, videos, tmp_path):
    done = subprocess.run([sys.executable, "-m", "analysis", "predict", str(tiny_ucf101_run), str(videos)],
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


def test_predict_on_a_single_unreadable_file_reports_it(tiny_ucf101_run, videos, tmp_path):
    assert main(["predict", str(tiny_ucf101_run), str(videos / "broken.avi"), "--out", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 1 and rows[0]["error"] == "unreadable"
