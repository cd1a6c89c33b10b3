"""A run's models in and out: what Hugging Face and timm load from our exports, class names
included, with nothing lost."""

import json

import attrs
import pytest
import torch

from recipes import bimm_ucf101
from recipes.export import main as export_main

transformers = pytest.importorskip("transformers")


def _ours(run):
    from recipes.config import Config
    from recipes.stages import Graphs, _classifier
    from visualpath.engine import load_weights

    classes = json.loads((run / "classes.json").read_text())
    model = _classifier(Config(), Graphs.of(Config(), run).finetune.build(), len(classes))
    load_weights(model, run / "finetune" / "model.safetensors")
    return model.eval(), classes


@pytest.mark.e2e
def test_a_finetuned_run_exports_as_videomae_for_video_classification_with_its_class_names(tiny_ucf101_run, tmp_path):
    assert export_main([str(tiny_ucf101_run), str(tmp_path / "hf")]) == 0
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    ours, classes = _ours(tiny_ucf101_run)
    assert [hf.config.id2label[i] for i in range(len(classes))] == classes
    x = torch.randn(2, 3, 4, 48, 48)  # already normalised pixels
    with torch.no_grad():
        theirs = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        mine = ours(x, normalized=True)
    assert (theirs - mine).abs().max() < 1e-4  # fc_norm's epsilon differs (1e-5 vs 1e-6)
    assert theirs.argmax(1).tolist() == mine.argmax(1).tolist()


@pytest.mark.e2e
def test_an_encoder_exports_as_videomae_model_and_timm(tiny_ucf101_run, tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from analysis.features import load_run
    from visualpath.classifier import Encoder

    pathway = load_run(tiny_ucf101_run)
    assert export_main([str(tiny_ucf101_run), str(tmp_path / "enc"), "--what", "encoder", "--stream", "dorsal"]) == 0
    hf = transformers.VideoMAEModel.from_pretrained(tmp_path / "enc").eval()
    encoder = Encoder.from_pathway(pathway, "dorsal").eval()
    x = torch.randn(1, 3, 4, 48, 48)
    with torch.no_grad():
        assert (hf(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state - encoder(x, normalized=True)).abs().max() \
            < 1e-5
    assert export_main([str(tiny_ucf101_run), str(tmp_path / "timm"), "--what", "encoder", "--stream", "ventral"]) == 0
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    vit = VisionTransformer(**config["model_args"]).eval()
    from safetensors.torch import load_file

    vit.load_state_dict(load_file(str(tmp_path / "timm" / "model.safetensors")), strict=True)
    image = Encoder.from_pathway(pathway, "ventral").eval()
    y = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert (vit.forward_features(y) - image(y, normalized=True)).abs().max() < 1e-5


def test_a_key_bias_is_dropped_exactly_with_a_note():
    from visualpath.classifier import Encoder
    from visualpath.interop import encoder_to_videomae
    from visualpath.tokens import Layout
    from visualpath.vit import vit_tiny

    torch.manual_seed(0)
    encoder = Encoder(vit_tiny(depth=2, width=64, heads=2), Layout("video", 16, 2), "flat").eval()
    with torch.no_grad():
        for block in encoder.blocks:
            block.attn.qkv.bias[64:128].normal_()  # the key part: trained encoders carry rounding noise there
    notes: list[str] = []
    state = encoder_to_videomae(encoder, notes)
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64,
                                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                      layer_norm_eps=1e-6)
    hf = transformers.VideoMAEModel(cfg).eval()
    hf.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert (hf(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state - encoder(x, normalized=True)).abs().max() \
            < 1e-5
    assert len(notes) == 2 and "dropped the key-projection bias" in notes[0]


@pytest.fixture(scope="module")
def finetuned_at_video_size(tmp_path_factory):
    """A tiny run trained at the built-in set's own frame size (64 px)."""
    run = tmp_path_factory.mktemp("export64") / "run"
    cfg = bimm_ucf101.VARIANTS["tiny"]
    bimm_ucf101.run(attrs.evolve(cfg, run_dir=str(run), device="cpu", data=attrs.evolve(cfg.data, size=64)))
    return run


@pytest.mark.e2e
def test_the_exported_processor_and_model_reproduce_predict_on_a_raw_clip(finetuned_at_video_size, tmp_path):
    """What a Hugging Face user does with an export: decode the clip config.json describes
    (PyAV), AutoImageProcessor, VideoMAEForVideoClassification: the same top-1 as
    ``python -m analysis predict`` and logits within 1e-4 of ours."""
    import av
    import numpy as np

    from analysis.cli import _dataset, predict_command
    from analysis.features import load_classifier
    from visualpath.data.layouts import video_set

    run = finetuned_at_video_size
    assert export_main([str(run), str(tmp_path / "hf")]) == 0
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    sampling = hf.config.visualpath_sampling
    model, classes = load_classifier(run)
    _, records, _ = video_set(None, "ucf101", 1, False, None)
    for record in records[:3]:
        with av.open(str(record.path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        span = (sampling["num_frames"] - 1) * sampling["stride"] + 1
        start = round((len(frames) - span) / 2)  # the centre clip
        clip = [frames[start + i * sampling["stride"]] for i in range(sampling["num_frames"])]
        pixels = processor(clip, return_tensors="pt")["pixel_values"]  # (1, T, C, H, W)
        with torch.no_grad():
            theirs = hf(pixel_values=pixels).logits[0]
            ours = model(_dataset(run, [record.path])[0]["video"])[0]
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
        top = predict_command(str(run), [str(record.path)], top=1)[0]["top"][0][0]
        assert hf.config.id2label[int(theirs.argmax())] == top == classes[int(ours.argmax())]
        assert np.isfinite(theirs.numpy()).all()


@pytest.mark.e2e
def test_export_help_describes_every_argument(capsys):
    import pytest

    from recipes.export import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for described in ("run_dir a recipe's run directory", "out_dir the folder to write", "--what {classifier,encoder}",
                      "finetuned model", "--stream STREAM the stream whose encoder", "--trust-code"):
        assert described in text, described
