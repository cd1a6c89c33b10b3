import gc
import json
import weakref
from pathlib import Path

import attrs
import pytest

from recipes import bimm_ucf101 as recipe, resume
from recipes import pipeline, stages
from tests.conftest import accuracy_over


MEMORY = {}  # what tiny_run saw of the videos kept in memory


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = attrs.evolve(recipe.VARIANTS["tiny"], run_dir=str(root / "run"), device="cpu")
    with pytest.MonkeyPatch.context() as mp:  # watch the training videos kept in memory (data.memory_gb)
        made, alive_at_test = [], []

        def decoded(*args, **kwargs):
            store = decode(*args, **kwargs)
            made.append(weakref.ref(store.buffer))
            return store

        def test_stage(*args, **kwargs):
            gc.collect()
            alive_at_test.append(sum(ref() is not None for ref in made))
            return run_test(*args, **kwargs)

        decode, run_test = stages.decoded_videos, pipeline.run_test
        mp.setattr(stages, "decoded_videos", decoded)
        mp.setattr(pipeline, "run_test", test_stage)
        results = recipe.run(cfg)
    MEMORY.update(made=len(made), alive_at_test=alive_at_test)
    return cfg, results


@pytest.mark.e2e
def test_the_training_videos_leave_memory_before_the_test(tiny_run):
    """The buffer of decoded training videos is freed once the training stages are done, so
    the test stage's own peak comes on top of less (the demo's peak memory was at its end)."""
    assert MEMORY["made"] >= 1  # the tiny variant keeps its videos in memory, as the demo does
    assert MEMORY["alive_at_test"] == [0]


@pytest.mark.e2e
def test_tiny_variant_runs_every_stage_and_leaves_a_run_directory(tiny_run):
    cfg, results = tiny_run
    run_dir = Path(cfg.run_dir)
    assert accuracy_over(results) and results["test_items"] == 20 and results["chance"] == 0.1
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"]["model"]["targets"] == "V1-V2-V4&MT" and "git_revision" in saved
    stages = {json.loads(line)["stage"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert stages == {"ventral", "joint", "finetune", "test"}
    for stage in ("ventral", "joint", "finetune"):
        assert (run_dir / stage / "model.safetensors").is_file() and (run_dir / stage / "state.pt").is_file()
    for stream in ("ventral", "dorsal"):
        assert (run_dir / f"reconstruction_{stream}.png").stat().st_size > 10_000
    assert json.loads((run_dir / "results.json").read_text())["top1"] == results["top1"]


@pytest.mark.e2e
def test_a_stage_runs_alone_from_saved_checkpoints(tiny_run):
    cfg, results = tiny_run
    again = recipe.run(attrs.evolve(cfg, stages=("test",)))
    assert again["top1"] == results["top1"]


@pytest.mark.e2e
def test_completed_stages_resume_without_training_again(tiny_run, capsys):
    cfg, _ = tiny_run
    before = (Path(cfg.run_dir) / "joint" / "model.safetensors").read_bytes()
    recipe.run(attrs.evolve(cfg, stages=("joint",)))
    assert (Path(cfg.run_dir) / "joint" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["model.tragets=V1"], "did you mean 'model.targets'"),
    (["model.targets=some"], "targets must be one of"),
    (["model.share=none"], "model.share is set by the graph's own key now: pathway.share=none"),
    (["pathway.dorsal.mask.ratio=1.2"], "must be in the open interval"),
    (["model.video_mask=0.5"], "model.video_mask is set by the graph's own key now: pathway.dorsal.mask.ratio=VALUE"),  # the graph's own key sets it: one surface
    (["data.frames=eight"], "data.frames must be an integer"),
    (["--data-root", "/nonexistent"], "is not a folder; expected it to hold UCF-101/ and ucfTrainTestlist/"),
    (["data.size=60"], "data.size must be a multiple of 8"),  # the demo's 8 px patches
    (["stages=ventral,pretrain"], "stages must be a non-empty list"),
])
def test_bad_configuration_fails_before_compute(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises((SystemExit, ValueError)) as err:
        recipe.main([f"run_dir={tmp_path / 'run'}", *argv])
    text = str(err.value) + capsys.readouterr().err
    assert message in text


def test_help_lists_variants_and_keys(capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--help"])
    out = capsys.readouterr().out
    assert "\n  demo " in out and "\n  small " in out and "\n  tiny " in out and "joint.optim.base_lr" in out


def test_paper_settings_follow_tables_8_and_9():
    cfg = recipe.config()
    assert (cfg.joint.optim.base_lr, cfg.joint.optim.batch_size, cfg.joint.optim.warmup_epochs) == (3e-4, 64, 40)
    assert (cfg.ventral.optim.base_lr, cfg.ventral.optim.batch_size) == (2e-4, 128)
    ft = cfg.finetune
    assert (ft.optim.base_lr, ft.optim.batch_size, ft.optim.epochs, ft.optim.layer_decay) == (5e-4, 32, 100, 0.7)
    assert (ft.drop_path, ft.mixup, ft.cutmix, ft.smoothing, ft.repeated) == (0.2, 0.8, 1.0, 0.1, 2)
    assert (cfg.test.clips, cfg.test.crops, cfg.data.frames, cfg.data.stride) == (5, 3, 16, 4)
    from recipes.graph import build_graph

    graph = build_graph(cfg)
    assert cfg.model.blocks == (2, 2, 8) and graph.stream("dorsal").mask.ratio == 0.9
    assert graph.stream("ventral").mask.ratio == 0.75 and graph.stream("dorsal").weight == 1.0


@pytest.mark.e2e
def test_resuming_with_other_settings_is_refused_before_compute(tiny_run, monkeypatch):
    cfg, _ = tiny_run
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    changed = attrs.evolve(cfg, pathway_overrides=("pathway.dorsal.mask.ratio=0.5",))
    with pytest.raises(ValueError, match=r"holds a run with other settings \(graph dorsal.mask.ratio: 0.9 -> 0.5\)"):
        recipe.run(changed)
    assert resume.resume_conflicts(attrs.evolve(changed, resume=False)) == []
    assert resume.resume_conflicts(attrs.evolve(cfg, stages=("test",), log_every=5)) == []


@pytest.mark.e2e
def test_a_setting_added_after_a_run_started_does_not_block_resuming_at_its_default(tiny_run, tmp_path):
    import json
    import shutil

    cfg, _ = tiny_run
    copy = tmp_path / "older_run"
    shutil.copytree(cfg.run_dir, copy, symlinks=True)  # a run as cp -a copies it: its checkpoint links kept
    saved = json.loads((copy / "config.json").read_text())
    del saved["config"]["model"]["dorsal_init"]  # as written before the setting existed
    saved["config"]["model"]["video_mask"] = 0.9  # and a setting this version no longer has (a graph key now)
    for key in ("depth", "decoder_depth"):  # and scale settings added since, which the graph shows
        del saved["config"]["model"][key]
    saved["config"]["model"].update(split=[1, 1, 2], decoder_depths=[1, 1, 1], share="partial")  # their old form
    (copy / "config.json").write_text(json.dumps(saved))
    older = attrs.evolve(cfg, run_dir=str(copy))
    assert resume.resume_conflicts(older) == []
    changed = attrs.evolve(older, model=attrs.evolve(cfg.model, dorsal_init="none"))
    assert resume.resume_conflicts(changed) == ["model.dorsal_init: None -> 'none'"]
    deeper = attrs.evolve(older, model=attrs.evolve(cfg.model, decoder_depth=2))
    assert "graph V2.decoder.depth: 1 -> 2" in resume.resume_conflicts(deeper)  # a scale that changes the graph
    halved = attrs.evolve(older, pathway_overrides=("pathway.V1.decoder.keep=0.5",))
    conflicts = resume.resume_conflicts(halved)  # the stored graph differs, and only it
    assert "graph V1.decoder.keep: 1.0 -> 0.5" in conflicts and all(c.startswith("graph ") for c in conflicts)


@pytest.mark.e2e
def test_real_data_without_a_choice_of_ventral_images_names_both_choices(tmp_path, capsys, monkeypatch):
    """--data-root selects the paper's settings, whose ventral stage needs ImageNet or an explicit
    choice of the video set's frames (Table 7a's UCF101 Init), recorded in config.json."""
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    root = tmp_path / "ucf"
    (root / "UCF-101").mkdir(parents=True)
    (root / "ucfTrainTestlist").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["--data-root", str(root)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data.image_root=/path/to/imagenet" in err and "data.image_root=frames" in err and "UCF101 Init" in err


@pytest.mark.e2e
def test_the_results_and_config_name_the_ventral_images(tiny_run):
    cfg, results = tiny_run
    assert results["ventral_images"] == "frames of the video set"  # the built-in set: no paper table cited
    assert results["graph"] == "the paper's BIMM graph (model.size=tiny)"
    assert results["data"].startswith("the built-in set (")
    saved = json.loads(Path(cfg.run_dir, "config.json").read_text())
    assert saved["config"]["data"]["image_root"] == "frames"


def test_labels_cite_the_paper_only_for_its_own_configuration(tmp_path):
    from recipes.stages import data_label, graph_label, ventral_source

    paper = recipe.VARIANTS["paper"]
    ucf = attrs.evolve(paper, data=attrs.evolve(paper.data, root=str(tmp_path), image_root="frames"))
    assert ventral_source(ucf) == "frames of the video set (Table 7a: UCF101 Init)"
    assert data_label(ucf) == f"{tmp_path} (ucf101's official layout, split 1)"
    own = attrs.evolve(ucf, pathway="my_graph.py:build", data=attrs.evolve(ucf.data, format="folders"))
    assert ventral_source(own) == "frames of the video set" and graph_label(own) == "my_graph.py:build"
    assert data_label(own) == f"{tmp_path} (class folders)"
    edited = attrs.evolve(ucf, pathway_overrides=("pathway.V1.cells=2",))
    assert "Table 7a" not in ventral_source(edited) and graph_label(edited).endswith("with pathway.V1.cells=2")


def test_help_gives_each_keys_type_allowed_values_and_description(capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--help"])
    out = capsys.readouterr().out
    assert "model.targets: str = 'V1-V2-V4&MT'  # one of ['V1', 'V1-V2', 'V1-V2-V4&MT', 'RGB']" in out
    assert "seed: int = 0  # seeds every random draw" in out and "pretrained: str | None = None  #" in out


@pytest.mark.e2e
def test_print_config_and_config_files_rerun_a_saved_run(tiny_run, tmp_path, capsys):
    cfg, _ = tiny_run
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["--config", str(Path(cfg.run_dir) / "config.json"), "seed=3", "--print-config"])
    assert exit_info.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((Path(cfg.run_dir) / "config.json").read_text())["config"]
    assert printed == {**saved, "seed": 3}  # the saved run, with the command line on top
    settings = tmp_path / "mine.json"
    settings.write_text(json.dumps({"model": {"targets": "V1"}, "joint": {"optim": {"epochs": 3}}}))
    with pytest.raises(SystemExit):
        recipe.main(["--variant", "tiny", "--config", str(settings), "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["targets"] == "V1" and printed["joint"]["optim"]["epochs"] == 3
    (tmp_path / "mine.yaml").write_text("model:\n  depth: 2\nstages: [joint, finetune]\npathway_overrides: [pathway.share=none]\n")
    with pytest.raises(SystemExit):
        recipe.main(["--variant", "tiny", "--config", str(tmp_path / "mine.yaml"), "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["depth"] == 2 and printed["stages"] == ["joint", "finetune"]
    assert printed["pathway_overrides"] == ["pathway.share=none"]


def test_a_config_file_chooses_a_run_dir_only_inside_the_current_folder(tmp_path, capsys):
    """A shared config file pointing run_dir elsewhere is refused before anything is written;
    run_dir= on the command line (the reader's choice) or a relative one is used."""
    from recipes.cli import config_file_run_dir

    for where in (str(tmp_path / "elsewhere"), "../elsewhere"):
        settings = tmp_path / "shared.json"
        settings.write_text(json.dumps({"run_dir": where}))
        with pytest.raises(SystemExit) as exit_info:
            recipe.main(["--variant", "tiny", "--config", str(settings)])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "outside the current folder" in err
        assert not Path(where).exists() and not (tmp_path / "elsewhere").exists()
    argv = ["--config", str(settings), f"run_dir={tmp_path / 'mine'}"]
    assert config_file_run_dir(argv, attrs.evolve(recipe.VARIANTS["tiny"], run_dir=str(tmp_path / "mine"))) is None
    assert config_file_run_dir(["--config", "f.json"], attrs.evolve(recipe.VARIANTS["tiny"], run_dir="runs/x")) is None


def test_a_config_file_named_like_a_setting_or_a_linked_folder_chooses_nothing_outside(tmp_path, monkeypatch):
    """Decided from the parsed arguments, not a string prefix: ``--config run_dir_x.yaml`` sets
    no run_dir on the command line; and a folder of the current one that is a link out of it
    is where the writes would land, so it is outside."""
    from recipes.cli import config_file_run_dir

    monkeypatch.chdir(tmp_path)
    tiny = recipe.VARIANTS["tiny"]
    outside = attrs.evolve(tiny, run_dir=str(tmp_path.parent / "victim"))
    for argv in (["--config", "run_dir_settings.yaml"], ["--config=run_dir.yaml"],
                 ["--name", "run_dir=x", "--config", "c.yaml"]):
        assert "outside the current folder" in config_file_run_dir(argv, outside), argv
    for argv in (["--config", "c.yaml", "run_dir=/d"], ["--config", "c.yaml", "--run-dir", "/d"],
                 ["--run_dir=/d", "--config", "c.yaml"]):
        assert config_file_run_dir(argv, outside) is None, argv  # the reader's own choice
    (tmp_path / "out").symlink_to(tmp_path.parent)
    problem = config_file_run_dir(["--config", "c.yaml"], attrs.evolve(tiny, run_dir="out/run"))
    assert "outside the current folder" in problem and str(tmp_path.parent / "run") in problem
    assert config_file_run_dir(["--config", "c.yaml"], attrs.evolve(tiny, run_dir="runs/x")) is None


@pytest.mark.e2e
def test_an_unknown_flag_is_an_unknown_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["--varaint", "tiny"])
    assert exit_info.value.code == 2
    assert "unknown option --varaint" in capsys.readouterr().err


def test_the_demo_inflates_the_dorsal_embedding_with_temporal_contrast_and_the_paper_does_not():
    """What each variant builds (decision D21): the demo and tiny runs keep the video stream's
    own frame-difference filters; the paper's settings inflate by repeating alone."""
    assert recipe.VARIANTS["demo"].model.dorsal_contrast == 4.0
    assert recipe.VARIANTS["tiny"].model.dorsal_contrast == 4.0
    assert recipe.VARIANTS["paper"].model.dorsal_contrast == 0.0
