"""A pathway graph round-trips through JSON; bad specs fail naming the field."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from areas import MTMotion, V1Gabor, V4Color
from areas.bimm import SIZES, ModelConfig, paper_pathway
from visualpath import DecoderSpec, Pathway, Stream, TubeMask, vit_tiny
from visualpath.overrides import apply_overrides, override_keys
from visualpath.spec import SpecError, area_class, class_ref, import_object

FIXTURE = Path(__file__).parents[1] / "fixtures" / "v3_sobel.py"


def _round_trip(p: Pathway) -> Pathway:
    return Pathway.from_dict(json.loads(json.dumps(p.to_dict())))


@pytest.mark.parametrize("size", list(SIZES))
def test_the_paper_graph_round_trips_at_every_size(size):
    p = paper_pathway(ModelConfig(size=size))
    assert _round_trip(p) == p


def test_every_table_7_row_round_trips():
    from recipes import ablations, bimm_ucf101

    import attrs

    paper = bimm_ucf101.VARIANTS["paper"]
    base = attrs.evolve(paper, data=attrs.evolve(paper.data, image_root="frames"))
    count = 0
    for table in ablations.TABLES:
        for row, cfg, _ in ablations.rows(table, base):
            if cfg is None:
                continue
            p = paper_pathway(cfg.model)
            assert _round_trip(p) == p, (table, row.label)
            count += 1
    assert count >= 18


def test_a_user_area_in_a_plain_file_round_trips_by_its_path():
    build = import_object(f"{FIXTURE}:build")
    p = build()
    spec = p.to_dict()
    v3 = spec["streams"][0]["areas"][2]
    assert v3["type"] == f"{FIXTURE.resolve()}:V3Sobel" and v3["cells"] == 2 and v3["decoder"]["width"] == 32
    assert _round_trip(p) == p
    assert import_object(f"{FIXTURE}:build") is build  # one module per file: its classes stay the same objects


def test_areas_are_found_by_registered_name_or_import_path():
    assert area_class("V1Gabor") is V1Gabor
    assert area_class("areas.mt_motion:MTMotion") is MTMotion
    assert class_ref(V4Color) == "areas.v4_color:V4Color"
    spec = paper_pathway(ModelConfig(size="tiny", streams=("dorsal",))).to_dict()
    for area in spec["streams"][0]["areas"]:
        area["type"] = area["type"].split(":")[1]  # hand-written specs may use the short names
    assert Pathway.from_dict(spec) == paper_pathway(ModelConfig(size="tiny", streams=("dorsal",)))


def _spec():
    return paper_pathway(ModelConfig(size="tiny")).to_dict()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["streams"][0]["areas"][0].update(type="V1Gabbor"), r"streams\[0\] \(ventral\).areas\[0\] \(V1\)"
                                                                      r".type: unknown area 'V1Gabbor'; did you mean "
                                                                      r"'V1Gabor'"),
    (lambda s: s["streams"][1]["areas"][2].update(normalise=True), r"unknown field 'normalise' of MTMotion; did you "
                                                                   r"mean 'normalize'"),
    (lambda s: s["streams"][0]["areas"][0].pop("type"), r"streams\[0\] \(ventral\).areas\[0\]: missing field 'type'"),
    (lambda s: s["streams"][1].pop("modality"), r"streams\[1\]: missing field 'modality'"),
    (lambda s: s["streams"][0]["areas"][0].update(blocks="two"), r"areas\[0\] \(V1\).blocks must be an integer"),
    (lambda s: s["streams"][0]["areas"][0]["decoder"].update(width=-1), r"DecoderSpec.width must be an integer >= 1"),
    (lambda s: s["encoder"].pop("depth"), r"encoder: missing field 'depth' of ViTSpec"),
    (lambda s: s["streams"][1].update(mask={"type": "Tube", "ratio": 0.9}), r"streams\[1\] \(dorsal\).mask must be"),
    (lambda s: s["streams"][1]["areas"][0].update(type="nowhere.module:Area"), r"cannot import 'nowhere.module'"),
    (lambda s: s.update(format="visualpath.pathway/9"), r"format: this version reads"),
])
def test_bad_specs_name_the_field(edit, message):
    spec = _spec()
    edit(spec)
    with pytest.raises(SpecError, match=message):
        Pathway.from_dict(spec)


def test_overrides_address_streams_areas_and_decoders():
    p = paper_pathway(ModelConfig(size="tiny"))
    q = apply_overrides(p, ["dorsal.MT.normalize=false", "V1.wavelengths=4,8", "ventral.V2.decoder.depth=3",
                            "dorsal.mask.ratio=0.8", "dorsal.weight=0.5", "encoder.drop_path=0.1", "share=V1"])
    assert q.stream("dorsal").area("MT").normalize is False and p.stream("dorsal").area("MT").normalize is True
    assert q.stream("ventral").area("V1").wavelengths == q.stream("dorsal").area("V1").wavelengths == (4.0, 8.0)
    assert q.stream("ventral").area("V2").decoder.depth == 3 and q.stream("dorsal").area("V2").decoder.depth == 2
    assert q.stream("dorsal").mask == TubeMask(0.8) and q.stream("dorsal").weight == 0.5
    assert q.encoder.drop_path == 0.1 and q.share == ("V1",)
    keys = override_keys(p)
    assert keys["dorsal.MT.decoder.width"] == 384 and keys["V1.orientations"] == 8 and "ventral.frame_step" in keys
    with pytest.raises(SpecError, match="MTMotion has no field 'normalise'; did you mean 'normalize'"):
        apply_overrides(p, ["dorsal.MT.normalise=false"])


def test_a_sub_graph_keeps_the_sharing_left_among_its_streams():
    dec = DecoderSpec(width=32, depth=1, heads=2)
    v1 = V1Gabor(blocks=1, decoder=dec)
    p = Pathway(encoder=vit_tiny(depth=2), share=["V1"], streams=[
        Stream("a", "video", [v1, MTMotion(blocks=1, decoder=dec)]),
        Stream("b", "video", [v1, MTMotion(name="MT2", blocks=1, decoder=dec)]),
        Stream("c", "image", [v1, V4Color(blocks=1, decoder=dec)])])
    assert p.select(["a", "c"]).share == ("V1",)
    assert p.select(["b"]).share == "none" and [s.name for s in p.select(["b"]).streams] == ["b"]
    q = Pathway(encoder=vit_tiny(depth=2), share=[("V4", "MT")], streams=[
        Stream("a", "image", [v1, V4Color(blocks=1, decoder=dec)]),
        Stream("b", "image", [v1, V4Color(blocks=1, decoder=dec)]),
        Stream("c", "video", [v1, MTMotion(blocks=1, decoder=dec)])])
    assert q.select(["a", "b"]).share == (("V4",),)  # the entry keeps the areas that remain


def test_the_joint_stage_gets_the_ventral_weights_whichever_stream_owns_a_shared_stage():
    from visualpath.inherit import copy_streams

    dec = DecoderSpec(width=32, depth=1, heads=2)
    v1 = V1Gabor(blocks=1, decoder=dec)
    joint = Pathway(encoder=vit_tiny(depth=2), share=["V1"], streams=[  # the video stream first: it owns V1
        Stream("dorsal", "video", [v1, MTMotion(blocks=1, decoder=dec)]),
        Stream("ventral", "image", [v1, V4Color(blocks=1, decoder=dec)])])
    ventral = joint.select(["ventral"]).build()
    model = joint.build()
    report = copy_streams(model, ventral)
    assert not report["skipped"]
    for a, b in zip(model.blocks("ventral"), ventral.blocks("ventral")):
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert model.stage("dorsal", "V1") is model.stage("ventral", "V1")


def test_a_run_written_before_graphs_were_stored_is_refused_in_one_line(tmp_path):
    """config.json with the old ``model`` section and weights, no pathway.json: not read
    (that version is gone), and the message says to train it again."""
    from analysis.features import load_run

    model_cfg = ModelConfig(size="tiny", width=32, heads=2, depth=4, decoder_width=32, decoder_heads=2)
    config = {"config": {"model": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in __import__("attrs").asdict(model_cfg).items()}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    trained = paper_pathway(model_cfg).build()
    (tmp_path / "joint").mkdir()
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "joint" / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        load_run(tmp_path)
    assert "did not store its graph (pathway.json)" in str(err.value) and "train it again" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.e2e
def test_a_graph_defined_in_the_running_script_round_trips_without_running_it_again(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "train_mine.py"
    script.write_text(
        "import attrs\n"
        "from visualpath import Area, Pathway, Stream, vit_tiny\n"
        "print('body runs')\n"
        "@attrs.frozen(kw_only=True)\n"
        "class Mine(Area):\n"
        "    name: str = 'M'\n"
        "    def target_dim(self, layout): return layout.pixels_per_token\n"
        "    def target(self, inp): return inp.layout.patchify(inp.pixels.mean(1, keepdim=True))\n"
        "if __name__ == '__main__':\n"
        "    p = Pathway(encoder=vit_tiny(depth=1), streams=[Stream('s', 'image', [Mine(blocks=1)])])\n"
        "    spec = p.to_dict()\n"
        "    print(spec['streams'][0]['areas'][0]['type'].endswith('train_mine.py:Mine'), Pathway.from_dict(spec) == p)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["body", "runs", "True", "True"]


def test_classes_defined_inside_a_function_are_refused_with_a_reason():
    import attrs

    @attrs.frozen(kw_only=True)
    class Local(V4Color):
        pass

    p = Pathway(encoder=vit_tiny(depth=1), streams=[Stream("s", "image", [Local(blocks=1)])])
    with pytest.raises(SpecError, match="defined inside a function"):
        p.to_dict()


def test_share_and_stream_overrides_read_like_the_command_line():
    p = paper_pathway(ModelConfig(size="tiny"))
    assert apply_overrides(p, ["share=V1, V2"]).share == ("V1", "V2")
    q = apply_overrides(p, ["dorsal.pos_embed=grid"])
    assert q.stream("dorsal").pos_embed == "grid"
    assert apply_overrides(q, ["dorsal.pos_embed=none"]).stream("dorsal").pos_embed == "flat"  # the default again
