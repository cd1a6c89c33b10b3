"""The stages every recipe chains: ventral pretraining, joint pretraining, finetuning, testing.

A recipe is a :class:`Config` (the paper's settings for one dataset, plus ``demo`` and
``tiny`` variants) handed to :func:`run`, which calls the engine's plain functions top to
bottom. Stages, each resumable and runnable alone (``stages=joint,finetune``), chained
through the checkpoints in the run directory:

1. ``ventral``: MAE-style pretraining of the ventral stream (V1 -> V2 -> V4) on an image
   folder (``data.image_root``; ``builtin`` is the built-in shape set) or, without one, on
   frames of the video set (the paper's "UCF101 init", Table 7a).
2. ``joint``: the configured streams trained together, ``L = L_V + lambda * L_D``. With a
   ventral checkpoint and ``model.dorsal_init="ventral"`` the dorsal stream starts from it
   (blocks copied, patch embedding inflated); the image of each pair is a frame of its
   clip. Baselines without a ventral stream (VideoMAE, BIMM-Dorsal) train the dorsal
   stream alone here.
3. ``finetune``: the dorsal encoder (videos) or the ventral one (images, BIMM-V) + mean
   pooling + fc_norm + linear head, with mixup, cutmix, label smoothing, drop path,
   layer-wise lr decay and repeated augmentation (Table 9).
4. ``test``: ``clips x crops`` views per video, softmax scores averaged (UCF101 5x3,
   SSv2 2x3, HMDB51 10x3), or one centre crop per image.

Learning rates follow the linear scaling rule ``base_lr * total_batch / 256`` of MAE and
VideoMAE; the paper's appendix writes ``/16`` for the ventral stage, which with its batch of
128 would be a 16x larger rate than MAE's recipe, so we keep the common rule.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from areas.bimm import SIZES, STREAMS, TARGETS, ModelConfig, _one_of, build_pathway, model_config_from_dict
from visualpath import Pathway, inherit_stream
from visualpath.classifier import Classifier, Encoder
from visualpath.config import parse_cli, to_dict
from visualpath.data import ContourCache, TrainTransform, VideoDataset
from visualpath.data.datasets import ImageFolder
from visualpath.data.layouts import VIDEO_FORMATS, check_root, image_split, video_set
from visualpath.data.synthetic import ImageSpec, SyntheticSpec, ensure_synthetic_images
from visualpath.engine import (
    OptimSpec,
    RunLog,
    build_optimizer,
    evaluate,
    fit,
    load_weights,
    make_loader,
    setup,
    teardown,
)

__all__ = ["Config", "ModelConfig", "DataConfig", "PretrainConfig", "FinetuneConfig", "TestConfig", "run",
           "check", "build_pathway", "main", "demo_optim", "demo_of", "tiny_of", "SIZES", "STAGES", "TARGETS"]

STAGES = ("ventral", "joint", "finetune", "test")


def _stages(instance, attribute, value):
    bad = [s for s in value if s not in STAGES]
    if bad or not value:
        raise ValueError(f"stages must be a non-empty list from {list(STAGES)}, got {list(value)}")


@attrs.frozen(kw_only=True)
class DataConfig:
    """Where clips come from; ``root=None`` uses the built-in synthetic set (UCF101 layout)."""

    format: str = attrs.field(default="ucf101", validator=_one_of(VIDEO_FORMATS))
    root: str | None = None
    split: int = attrs.field(default=1, validator=_one_of((1, 2, 3)))
    image_root: str | None = None  # ImageNet-layout folder (ventral stage, BIMM-V); "builtin": shapes
    contours: str | None = None  # SAM contour cache folder (recipes.precompute_contours)
    frames: int = 16
    stride: int = 4
    size: int = 224
    workers: int = 8
    synthetic_groups: int = 8
    synthetic_clips: int = 4
    synthetic_size: int = 128


@attrs.frozen(kw_only=True)
class PretrainConfig:
    optim: OptimSpec
    flip: bool = True


@attrs.frozen(kw_only=True)
class FinetuneConfig:
    optim: OptimSpec
    stream: str = attrs.field(default="dorsal", validator=_one_of(STREAMS))  # ventral: images (BIMM-V)
    sampling: str = attrs.field(default="strided", validator=_one_of(("strided", "segments")))
    drop_path: float = 0.2
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    repeated: int = 2  # repeated augmentation: views per decoded video
    flip: bool = True
    randaugment: str | None = "rand-m7-n4-mstd0.5-inc1"
    erase: float = 0.25  # random-erasing probability
    crop_area: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area range (VideoMAE)
    pool: str = attrs.field(default="mean", validator=_one_of(("mean", "cls")))


@attrs.frozen(kw_only=True)
class TestConfig:
    clips: int = 5
    crops: int = 3
    batch_size: int = 8


@attrs.frozen(kw_only=True)
class Config:
    name: str = "bimm"
    run_dir: str = "runs/bimm"
    seed: int = 0
    device: str = "auto"
    stages: tuple[str, ...] = attrs.field(default=STAGES, validator=_stages)
    resume: bool = True
    log_every: int = 10
    tensorboard: bool = False  # also write metrics as TensorBoard events (needs the tensorboard package)
    compile: bool = False  # torch.compile the model of each training stage
    checkpointing: bool = False  # gradient checkpointing of the encoder blocks (less memory, ~1/3 more compute)
    pretrained: str | None = None  # a run directory (or pathway .safetensors) to finetune instead of our own
    init: str | None = None  # VideoMAE / MAE / timm / Hugging Face checkpoint to start pretraining from
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    ventral: PretrainConfig = PretrainConfig(  # Table 8, IN-1K column
        optim=OptimSpec(epochs=800, batch_size=128, base_lr=2e-4, warmup_epochs=40), flip=False)
    joint: PretrainConfig = PretrainConfig(  # Table 8, UCF column; 1600 epochs (appendix A.2)
        optim=OptimSpec(epochs=1600, batch_size=64, base_lr=3e-4, warmup_epochs=40), flip=True)
    finetune: FinetuneConfig = FinetuneConfig(  # Table 9, UCF column
        optim=OptimSpec(epochs=100, batch_size=32, base_lr=5e-4, warmup_epochs=5, betas=(0.9, 0.999),
                        layer_decay=0.7))
    test: TestConfig = TestConfig()


def demo_optim(epochs, batch, lr, warmup, **kw) -> OptimSpec:
    return OptimSpec(epochs=epochs, batch_size=batch, base_lr=lr, warmup_epochs=warmup, **kw)


# --------------------------------------------------------------------------- building blocks


def synthetic_spec(cfg: Config) -> SyntheticSpec:
    return SyntheticSpec(groups=cfg.data.synthetic_groups, clips=cfg.data.synthetic_clips,
                         size=cfg.data.synthetic_size)


def video_records(cfg: Config, train: bool):
    """(root, records, classes) of the training or evaluation part of the video set."""
    return video_set(cfg.data.root, cfg.data.format, cfg.data.split, train, synthetic_spec(cfg))


def image_root(cfg: Config) -> Path | None:
    """The ImageNet-layout root (``builtin``: the generated shape set), or None."""
    if cfg.data.image_root is None:
        return None
    if cfg.data.image_root == "builtin":
        return ensure_synthetic_images(spec=ImageSpec())
    return Path(cfg.data.image_root)


def _contours(cfg: Config, root: Path) -> ContourCache | None:
    return ContourCache(cfg.data.contours, root) if cfg.data.contours else None


def pretrain_step(model, batch):
    out = model(batch)
    return out.loss, out.losses


def _ddp(model, runtime):
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _train(stage: str, cfg: Config, model, step_fn, dataset, optim: OptimSpec, runtime, run: RunLog, console,
           num_layers: int | None = None):
    """DDP wrap -> AdamW groups -> loader -> :func:`fit`: the tail every training stage shares."""
    if hasattr(model, "checkpointing"):
        model.checkpointing = cfg.checkpointing
    ddp = _ddp(model, runtime)
    if cfg.compile:
        ddp = torch.compile(ddp)
    optimizer = build_optimizer(model, optim, runtime, num_layers=num_layers)
    loader = make_loader(dataset, optim.batch_size, runtime, shuffle=True, seed=cfg.seed, workers=cfg.data.workers)
    return fit(stage, ddp, step_fn, loader, optimizer, optim, runtime, run, resume=cfg.resume,
               log_every=cfg.log_every, console=console)


# --------------------------------------------------------------------------- stages


def run_ventral(cfg: Config, runtime, run: RunLog, console: Console):
    model = build_pathway(attrs.evolve(cfg.model, streams=("ventral",))).build().to(runtime.device)
    transform = TrainTransform(size=cfg.data.size, crop="resized", area=(0.2, 1.0), flip=cfg.ventral.flip)
    images = image_root(cfg)
    if images is not None:
        folder = image_split(images, train=True)
        dataset = ImageFolder(folder, transform=transform, seed=cfg.seed)
        source = f"images of {folder}"
    else:
        root, records, classes = video_records(cfg, train=True)
        dataset = VideoDataset(records, classes, frames=1, transform=transform, as_images=True, seed=cfg.seed,
                               name="video frames")
        source = f"frames of {root} (video-set init)"
    console.print(f"[bold]ventral[/]: MAE-style pretraining on {source}, {len(dataset)} items")
    if cfg.init is not None and init_target(cfg)[2] == "ventral":
        _load_init(cfg, model, "ventral", console)
    state = _train("ventral", cfg, model, pretrain_step, dataset, cfg.ventral.optim, runtime, run, console)
    return model, state


def checkpoint_format(path: str) -> str:
    """The format of a checkpoint file (:func:`visualpath.interop.detect_format`), read once
    per file version: ``check`` and each stage ask again without reading it again."""
    stat = Path(path).stat()
    return _checkpoint_format(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _checkpoint_format(path: str, mtime_ns: int, size: int) -> str:
    from visualpath.interop import detect_format, read_state_dict

    return detect_format(read_state_dict(path))


def init_target(cfg: Config) -> tuple[str, str, str]:
    """Where ``init=`` goes: ``(format, stream, stage)``.

    A video checkpoint (VideoMAE, Hugging Face) initialises the dorsal stream before the
    joint stage. An image one (MAE, timm) initialises the ventral stream before the ventral
    stage, or before the joint stage when that runs without one; a pathway with a single
    stream takes either (an image patch embedding is inflated over the tube).

    Raises:
        ValueError: naming the file or the missing stream/stage.
    """
    fmt = checkpoint_format(cfg.init)
    streams = cfg.model.streams
    wanted = "dorsal" if fmt in ("videomae", "huggingface-videomae") else "ventral"
    stream = wanted if wanted in streams else (streams[0] if len(streams) == 1 else None)
    if stream is None or fmt == "visualpath":
        raise ValueError(f"init={cfg.init!r} is a {fmt} checkpoint, which initialises the {wanted} stream; "
                         f"model.streams is {list(streams)}" if fmt != "visualpath" else
                         f"init={cfg.init!r} is one of our pathway checkpoints: finetune it with pretrained=, or "
                         "continue its run directory with resume")
    stage = "ventral" if stream == "ventral" and "ventral" in cfg.stages else "joint"
    if stage not in cfg.stages:
        when = "the ventral or joint stage" if stream == "ventral" else "the joint stage"
        raise ValueError(f"init={cfg.init!r} initialises the {stream} stream before {when}: keep one in stages "
                         f"(stages={','.join(cfg.stages)})")
    return fmt, stream, stage


def _load_init(cfg: Config, model, stage: str, console: Console) -> None:
    from visualpath.interop import load_checkpoint

    _, stream, _ = init_target(cfg)
    report = load_checkpoint(model, cfg.init, stream=stream)
    console.print(f"[bold]{stage}[/]: {stream} stream from the checkpoint {cfg.init}: {report}")


def run_joint(cfg: Config, runtime, run: RunLog, console: Console):
    model = build_pathway(cfg.model).build().to(runtime.device)
    streams = cfg.model.streams
    ventral_ckpt = run.stage_dir("ventral") / "model.safetensors"
    if "ventral" in streams and ventral_ckpt.is_file():
        result = load_weights(model, ventral_ckpt, strict=False)
        console.print(f"[bold]joint[/]: ventral stream loaded from {ventral_ckpt} "
                      f"({len(result.missing_keys)} dorsal keys initialised fresh)")
        if cfg.model.dorsal_init == "ventral" and "dorsal" in streams:
            report = inherit_stream(model, dst="dorsal", src="ventral")
            console.print(f"  dorsal from ventral: {len(report['copied'])} copied, {len(report['shared'])} "
                          f"shared, inflated {report['inflated']}")
    elif cfg.init is None:
        console.print(f"[bold]joint[/]: {', '.join(streams)} from scratch")
    if cfg.init is not None and init_target(cfg)[2] == "joint":
        _load_init(cfg, model, "joint", console)
    root, records, classes = video_records(cfg, train=True)
    transform = TrainTransform(size=cfg.data.size, crop="multiscale", flip=cfg.joint.flip)
    contours = _contours(cfg, root)
    dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride, transform=transform,
                           contours=contours, seed=cfg.seed, name="training videos")
    console.print(f"  {len(dataset)} training videos; V2 contours from "
                  f"{'the SAM cache ' + str(contours.root) if contours else 'the on-device edge detector (no cache)'}")
    state = _train("joint", cfg, model, pretrain_step, dataset, cfg.joint.optim, runtime, run, console)
    return model, state


def finetune_step_fn(ft: FinetuneConfig, num_classes: int, device):
    """Mixup/CutMix + soft-target loss (timm) and random erasing on the device."""
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing
    from timm.loss import SoftTargetCrossEntropy

    mixup = Mixup(mixup_alpha=ft.mixup, cutmix_alpha=ft.cutmix, label_smoothing=ft.smoothing,
                  num_classes=num_classes) if (ft.mixup > 0 or ft.cutmix > 0) else None
    erase = RandomErasing(probability=ft.erase, mode="pixel", device=str(device)) if ft.erase > 0 else None
    soft = SoftTargetCrossEntropy()

    def step(model, batch):
        x = (batch["video"] if "video" in batch else batch["image"]).float() / 255  # (B, C, [T,] H, W)
        target = batch["label"]
        if mixup is not None and x.shape[0] % 2 == 0:
            x, target = mixup(x, target)
        else:
            target = F.one_hot(target, num_classes).float() * (1 - ft.smoothing) + ft.smoothing / num_classes
        core = model.module if hasattr(model, "module") else model
        x = core.encoder.normalize(x)
        if erase is not None:  # one region per clip, the same in every frame (timm, per sample)
            if x.ndim == 5:
                B, C, T, H, W = x.shape
                x = erase(x.reshape(B, C * T, H, W)).reshape(B, C, T, H, W)
            else:
                x = erase(x)
        logits = model(x, normalized=True)
        return soft(logits, target), {}

    return step


def model_config(cfg: Config) -> ModelConfig:
    """The pathway to finetune: ``cfg.model``, or the model of the ``pretrained`` run directory."""
    saved = Path(cfg.pretrained or "", "config.json")
    if cfg.pretrained is None or not saved.is_file():
        return cfg.model
    return model_config_from_dict(json.loads(saved.read_text())["config"]["model"])


def _pretrained(cfg: Config, run: RunLog, console: Console):
    """The pathway whose encoder is finetuned: ``cfg.pretrained``'s, else this run's joint
    checkpoint, else its ventral one. A ``pretrained`` file that is not one of our pathway
    checkpoints (VideoMAE, MAE, timm, Hugging Face) initialises the finetuned stream's encoder
    through :func:`visualpath.interop.load_checkpoint`."""
    model = build_pathway(model_config(cfg)).build()
    source = Path(cfg.pretrained) if cfg.pretrained else run.root
    if source.is_file() and not _is_pathway_checkpoint(source):
        from visualpath.interop import load_checkpoint

        report = load_checkpoint(model, source, stream=cfg.finetune.stream)
        console.print(f"[bold]finetune[/]: {cfg.finetune.stream} encoder from the checkpoint {source}: {report}")
        return model
    candidates = [source] if source.is_file() else [source / s / "model.safetensors" for s in ("joint", "ventral")]
    for ckpt in candidates:
        if ckpt.is_file():
            load_weights(model, ckpt, strict=ckpt.parent.name == "joint")
            console.print(f"[bold]finetune[/]: {cfg.finetune.stream} encoder from {ckpt}")
            return model
    console.print(f"[bold]finetune[/]: no pretrained checkpoint, training the {cfg.finetune.stream} encoder "
                  "from scratch")
    return model


def _is_pathway_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a pathway's ``model.safetensors`` (its keys name streams)."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return any(k.startswith("streams.") for k in f.keys())


def _classifier(cfg: Config, pathway, num_classes: int, drop_path: float | None = None) -> Classifier:
    return Classifier(Encoder.from_pathway(pathway, cfg.finetune.stream, drop_path=drop_path), num_classes,
                      pool=cfg.finetune.pool)


def run_finetune(cfg: Config, runtime, run: RunLog, console: Console):
    ft = cfg.finetune
    pathway = _pretrained(cfg, run, console)
    if ft.stream == "ventral":  # BIMM-V: image classification
        folder = image_split(image_root(cfg), train=True)
        transform = TrainTransform(size=cfg.data.size, crop="resized", area=ft.crop_area, flip=ft.flip,
                                   randaugment=ft.randaugment)
        dataset = ImageFolder(folder, transform=transform, seed=cfg.seed)
        classes = dataset.classes
    else:
        _, records, classes = video_records(cfg, train=True)
        transform = TrainTransform(size=cfg.data.size, crop="resized", area=ft.crop_area, flip=ft.flip,
                                   randaugment=ft.randaugment)
        # Table 9's batch counts videos; repeated augmentation gives each `repeated` clips (VideoMAE).
        dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride,
                               sampling=ft.sampling, transform=transform, views=ft.repeated, seed=cfg.seed,
                               name="training videos")
    model = _classifier(cfg, pathway, len(classes), drop_path=ft.drop_path).to(runtime.device)
    state = _train("finetune", cfg, model, finetune_step_fn(ft, len(classes), runtime.device), dataset, ft.optim,
                   runtime, run, console, num_layers=sum(model_config(cfg).split))
    return model, state, classes


def run_test(cfg: Config, runtime, run: RunLog, console: Console, model=None):
    if cfg.finetune.stream == "ventral":
        dataset = ImageFolder(image_split(image_root(cfg), train=False), size=cfg.data.size)
        classes = dataset.classes
    else:
        _, records, classes = video_records(cfg, train=False)
        dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride,
                               sampling=cfg.finetune.sampling, mode="test", size=cfg.data.size,
                               clips=cfg.test.clips, crops=cfg.test.crops, name="evaluation videos")
    if model is None:
        model = _classifier(cfg, build_pathway(model_config(cfg)).build(), len(classes))
        load_weights(model, run.stage_dir("finetune") / "model.safetensors")
        model = model.to(runtime.device)
    loader = make_loader(dataset, cfg.test.batch_size, runtime, shuffle=False, seed=cfg.seed,
                         workers=cfg.data.workers, drop_last=False)
    result = evaluate(model, loader, runtime, console=console)
    result["chance"] = 1 / len(classes)
    run.metrics("test", top1=result["top1"], top5=result["top5"], count=result["count"])
    return result


# --------------------------------------------------------------------------- checks and the run


def check(cfg: Config) -> Pathway:
    """Reject a configuration that cannot run, before any data or compute is touched."""
    if cfg.data.root is not None:
        check_root(cfg.data.format, cfg.data.root)
    if cfg.pretrained is not None and not Path(cfg.pretrained).exists():
        raise ValueError(f"pretrained={cfg.pretrained!r} does not exist; expected a run directory of a recipe "
                         "(holding config.json and joint/ or ventral/model.safetensors) or a checkpoint file "
                         "(ours, VideoMAE, MAE, timm or Hugging Face)")
    if cfg.pretrained is not None and Path(cfg.pretrained).is_file() and \
            not _is_pathway_checkpoint(Path(cfg.pretrained)):
        try:
            checkpoint_format(cfg.pretrained)
        except ValueError as err:
            raise ValueError(f"pretrained={cfg.pretrained!r}: {err}") from None
    if cfg.data.image_root not in (None, "builtin"):
        check_root("imagenet", cfg.data.image_root, key="data.image_root")
    if cfg.finetune.stream == "ventral" and cfg.data.image_root is None and \
            any(s in cfg.stages for s in ("finetune", "test")):
        raise ValueError("finetune.stream='ventral' classifies images: set data.image_root (an ImageNet-layout "
                         "folder, or 'builtin')")
    if cfg.finetune.stream not in model_config(cfg).streams:
        raise ValueError(f"finetune.stream={cfg.finetune.stream!r} is not one of model.streams "
                         f"{list(model_config(cfg).streams)}")
    if cfg.init is not None:
        if not Path(cfg.init).is_file():
            raise ValueError(f"init={cfg.init!r} does not exist; expected a checkpoint file (VideoMAE, MAE, timm or "
                             "Hugging Face: .pth, .bin or .safetensors)")
        init_target(cfg)
    if cfg.pretrained is not None and any(s in cfg.stages for s in ("ventral", "joint")):
        raise ValueError("pretrained= finetunes another run: set stages=finetune,test")
    if "ventral" in cfg.stages and "ventral" not in cfg.model.streams:
        raise ValueError("stages include 'ventral' but model.streams has no ventral stream")
    pathway = build_pathway(cfg.model)  # validates the graph
    patch = pathway.encoder.patch
    if cfg.data.size % patch or cfg.data.frames % pathway.encoder.tube:
        raise ValueError(f"data.size must be a multiple of {patch} and data.frames of {pathway.encoder.tube}, got "
                         f"{cfg.data.size}, {cfg.data.frames}")
    side = cfg.data.size // patch
    for stream in pathway.streams:
        grid = (side, side) if stream.modality == "image" else (cfg.data.frames // pathway.encoder.tube, side, side)
        try:
            stream.mask.count(grid)
        except ValueError as err:
            raise ValueError(f"model mask for {stream.name} at data.size={cfg.data.size}: {err}") from None
    return pathway


# keys that may change between a run and its resumption: they do not change what is trained
RESUMABLE_CHANGES = ("name", "run_dir", "stages", "resume", "log_every", "tensorboard", "device", "data.workers",
                     "compile", "checkpointing",
                     "test.")


def resume_conflicts(cfg: Config) -> list[str]:
    """Settings that differ from the run already in ``cfg.run_dir`` (empty when none is there).

    A resumed stage must continue the run it started; one with other settings would mix two
    experiments in one set of checkpoints.
    """
    saved = Path(cfg.run_dir, "config.json")
    if not cfg.resume or not saved.is_file():
        return []
    if not any(Path(cfg.run_dir, s, "state.pt").is_file() for s in STAGES):
        return []
    old = _flatten(json.loads(saved.read_text()).get("config", {}))
    new = _flatten(to_dict(cfg))
    defaults = _flatten(to_dict(Config()))
    out = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUMABLE_CHANGES) or key in RESUMABLE_CHANGES:
            continue
        if key not in old and new.get(key) == defaults.get(key):
            continue  # a setting added after the run started, left at its default
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run(cfg: Config) -> dict:
    """Run the configured stages; returns the results (also in ``run_dir/results.json``)."""
    check(cfg)
    conflicts = resume_conflicts(cfg)
    if conflicts:
        raise ValueError(f"run_dir={cfg.run_dir!r} holds a run with other settings ({'; '.join(conflicts)}); "
                         "choose another run_dir, or resume=false to start it again")
    runtime = setup(cfg.device, cfg.seed)
    console = Console(stderr=True)
    run_log = RunLog(cfg.run_dir, runtime, tensorboard=cfg.tensorboard)
    run_log.write_config(to_dict(cfg))
    results: dict = {"run_dir": str(run_log.root), "device": str(runtime.device), "world": runtime.world}
    model = None
    try:
        if "ventral" in cfg.stages:
            _, state = run_ventral(cfg, runtime, run_log, console)
            results["ventral_skipped"] = state.skipped
        if "joint" in cfg.stages:
            joint, state = run_joint(cfg, runtime, run_log, console)
            results["joint_skipped"] = state.skipped
            if runtime.main and "dorsal" in cfg.model.streams:
                _figure(joint, cfg, run_log, runtime)
        if "finetune" in cfg.stages:
            model, state, _ = run_finetune(cfg, runtime, run_log, console)
            results["finetune_skipped"] = state.skipped
        if "test" in cfg.stages:
            test = run_test(cfg, runtime, run_log, console, model=model)
            results.update(top1=test["top1"], top5=test["top5"], test_items=test["count"], chance=test["chance"])
    finally:
        run_log.close()
        teardown(runtime, model)
    if runtime.main:
        (run_log.root / "results.json").write_text(json.dumps(results, indent=2))
        _table(cfg.name, results)
    return results


def _figure(joint, cfg: Config, run_log: RunLog, runtime) -> None:
    from analysis.figures import reconstruction_figure

    _, records, classes = video_records(cfg, train=False)
    dataset = VideoDataset(records[:1], classes, frames=cfg.data.frames, stride=cfg.data.stride, mode="test",
                           size=cfg.data.size, clips=1, crops=1)
    clip = dataset[0]["video"][:1].to(runtime.device)
    fig = reconstruction_figure(joint, {"video": clip}, stream="dorsal")
    fig.savefig(run_log.root / "reconstruction_dorsal.png", dpi=110)


def _table(name: str, results: dict) -> None:
    table = Table(title=f"{name} results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("top1", "top5", "chance", "test_items", "ventral_skipped", "joint_skipped", "finetune_skipped",
                "run_dir"):
        if key in results:
            value = results[key]
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


def paper_if_data(argv: list[str], variants: dict, data_keys: tuple[str, ...] = ("data.root",)) -> list[str]:
    """``argv`` with ``--data-root``-style spellings normalised and, when it names one of
    ``data_keys`` but no ``--variant``, ``--variant paper`` in front: real data gets the
    paper's settings, the built-in sets the demo's."""
    def flat(name: str) -> str:
        return name.replace("-", "_").replace(".", "_")

    wanted = {flat(k): k for k in data_keys}
    out = []
    for a in argv:  # --data-root, --data_root, data_root= ... -> the config's own key
        dashes = "--" if a.startswith("--") else ""
        name, eq, value = a[len(dashes):].partition("=")
        is_key = (dashes or eq) and flat(name) in wanted  # a bare word is a value, not a key
        out.append(f"{dashes}{wanted[flat(name)]}{eq}{value}" if is_key else a)
    named = any(a.startswith(("--" + k, k + "=")) for a in out for k in data_keys)
    if named and "paper" in variants and not any(a.startswith("--variant") for a in out):
        out = ["--variant", "paper", *out]
    return out


def main(module: str, doc: str, variants: dict, argv: list[str] | None = None,
         data_keys: tuple[str, ...] = ("data.root",)) -> int:
    """``python -m recipes.NAME``: given real data (``data_keys``) and no ``--variant``, the
    paper's settings."""
    argv = paper_if_data(list(sys.argv[1:] if argv is None else argv), variants, data_keys)
    _, cfg = parse_cli(argv, variants, module, doc)
    try:
        check(cfg)
    except ValueError as err:  # a bad configuration: one line, no traceback, nothing run
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    run(cfg)
    return 0


# --------------------------------------------------------------------------- demo and tiny scales


def demo_model(model: ModelConfig) -> ModelConfig:
    """``model`` at demo scale: a 4-block width-128 ViT (split 1/1/2), 64-wide 1-block decoders."""
    return attrs.evolve(model, size="tiny", width=128, heads=4, split=(1, 1, 2), decoder_width=64, decoder_heads=2,
                        decoder_depths=(1, 1, 1))


def tiny_model(model: ModelConfig) -> ModelConfig:
    """``model`` at test scale: width 32, 2 heads, 32-wide decoders."""
    return attrs.evolve(model, width=32, heads=2, decoder_width=32)


def demo_of(paper: Config, name: str) -> Config:
    """``paper`` at demo scale on the built-in sets, for a 2-core CPU (minutes).

    Keeps what makes the recipe itself (streams, targets, sharing, masks, which encoder is
    finetuned, sampling, test views) and shrinks the rest: a 4-block width-128 ViT, 8-frame
    64x64 clips, a few epochs. Flips are off: the built-in classes include left/right and
    clockwise/anticlockwise motion. Peak learning rates are 1e-3 (``base_lr`` 1.6e-2 at
    batch 16, by the linear scaling rule). Finetuning runs 80 epochs without layer-wise
    decay and with mild crops: after minutes of pretraining the early blocks have little to
    protect, and a small ViT needs several hundred steps before it picks up motion.
    """
    images = "builtin" if (paper.data.image_root is not None or paper.finetune.stream == "ventral") else None
    ft_epochs = 15 if paper.finetune.stream == "ventral" else 80
    return attrs.evolve(
        paper,
        run_dir=f"runs/{name}_demo",
        model=demo_model(paper.model),
        data=attrs.evolve(paper.data, root=None, image_root=images, frames=8, stride=4, size=64, workers=2),
        ventral=PretrainConfig(optim=demo_optim(3, 32, 1.6e-2, 1), flip=False),
        joint=PretrainConfig(optim=demo_optim(10, 16, 1.6e-2, 1), flip=False),
        finetune=attrs.evolve(paper.finetune, optim=demo_optim(ft_epochs, 16, 1.6e-2, ft_epochs // 10,
                                                               betas=(0.9, 0.999), layer_decay=1.0),
                              drop_path=0.0, mixup=0.0, cutmix=0.0, randaugment=None, erase=0.0, flip=False,
                              repeated=1, crop_area=(0.8, 1.0)),
        test=attrs.evolve(paper.test, batch_size=8),
    )


def tiny_of(demo: Config, name: str) -> Config:
    """A few steps of every stage on a tiny built-in set: what the tests run."""
    return attrs.evolve(
        demo,
        run_dir=f"runs/{name}_tiny",
        log_every=1,
        model=tiny_model(demo.model),
        data=attrs.evolve(demo.data, frames=4, stride=2, size=48, workers=0, synthetic_groups=7, synthetic_clips=1),
        ventral=PretrainConfig(optim=demo_optim(1, 8, 1e-3, 0)),
        joint=PretrainConfig(optim=demo_optim(1, 8, 1e-3, 0)),
        finetune=attrs.evolve(demo.finetune, optim=demo_optim(1, 8, 1e-3, 0, betas=(0.9, 0.999), layer_decay=0.75)),
        test=TestConfig(clips=2, crops=1, batch_size=8),
    )


def variants(paper: Config, name: str, **extra: Config) -> dict[str, Config]:
    """A recipe's ``VARIANTS``: ``demo`` (the default), ``paper``, any ``extra``, ``tiny``."""
    demo = demo_of(paper, name)
    return {"demo": demo, "paper": paper, **extra, "tiny": tiny_of(demo, name)}


def entry(name: str, doc: str, recipe_variants: dict[str, Config], data_keys: tuple[str, ...] = ("data.root",)):
    """A recipe's ``main(argv=None)`` for ``python -m recipes.<name>``."""
    def recipe_main(argv: list[str] | None = None) -> int:
        return main(f"recipes.{name}", doc, recipe_variants, argv, data_keys)
    return recipe_main
