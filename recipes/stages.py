"""The four stages a recipe chains, for any pathway graph (BIMM Algorithm 1, appendix A).

1. ``ventral``: MAE-style pretraining of the graph's image streams (the paper's V1 -> V2 -> V4)
   on an image folder (``data.image_root``; ``builtin`` is the built-in shape set) or, without
   one, on frames of the video set (the paper's "UCF101 init", Table 7a).
2. ``joint``: every stream together, ``L = sum(stream.weight * L_stream)`` (Eq. 4). With a
   ventral checkpoint and ``model.dorsal_init="ventral"`` each video stream starts from the
   image stream it shares the most stages with (blocks copied, patch embedding inflated);
   an image stream fed clips sees one frame of each.
3. ``finetune``: one stream's encoder (``finetune.stream``: a video stream classifies clips,
   an image stream images) + mean pooling + fc_norm + linear head, with mixup, cutmix, label
   smoothing, drop path, layer-wise lr decay and repeated augmentation (Table 9).
4. ``test``: ``clips x crops`` views per video, softmax scores averaged (UCF101 5x3, SSv2 2x3,
   HMDB51 10x3), or one centre crop per image.

Every stage builds its model from the graph stored in the run directory, read once per command
(:class:`Graphs`, from :func:`visualpath.rundir.read_pathway`) and handed to each stage, so a
resumed or later stage trains the graph the run started with.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from rich.console import Console

from areas.bimm import ModelConfig, run_pathway
from recipes.config import Config, FinetuneConfig
from visualpath import Pathway, inherit_stream
from visualpath.inherit import copy_streams, inherit_sources
from visualpath.classifier import Classifier, Encoder
from visualpath.data import MapCache, TrainTransform, VideoDataset
from visualpath.data.datasets import ImageFolder
from visualpath.data.decode import VideoError
from visualpath.data.layouts import image_split, video_set
from visualpath.data.memory import DecodedVideos, decoded_videos
from visualpath.data.synthetic import ImageSpec, SyntheticSpec, ensure_synthetic_images
from visualpath.errors import Refused
from visualpath.engine import (MISSING, OptimSpec, RunLog, build_optimizer, compiled, evaluate, fit, load_weights,
                               make_loader)
from visualpath.rundir import PATHWAY_FILE, pretrained_stage, stage_progress
from visualpath import terminal
from visualpath.atomic import atomic

__all__ = ["FRAMES", "ventral_source", "graph_label", "data_label", "papers_configuration", "missing_maps", "given_maps", "run_ventral", "run_joint", "run_finetune", "run_test", "Graphs", "pretrained_graph", "init_target",
           "checkpoint_format", "is_pathway_checkpoint", "video_records", "image_root", "side_maps", "ddp"]


# --------------------------------------------------------------------------- data


def video_records(cfg: Config, train: bool, runtime=None):
    """(root, records, classes) of the training or evaluation part of the video set. Under
    torchrun (``runtime`` given) rank 0 lists and checks the set and the other ranks receive
    its list (decision R11): a dataset of 240k files on shared storage is scanned once per
    job, not once per process."""
    spec = SyntheticSpec(groups=cfg.data.synthetic_groups, clips=cfg.data.synthetic_clips,
                         size=cfg.data.synthetic_size)
    if runtime is None or not runtime.distributed or cfg.data.root is None:  # the built-in set: every node's own
        return video_set(cfg.data.root, cfg.data.format, cfg.data.split, train, spec)
    import torch.distributed as dist

    listed = [None]
    if runtime.main:
        try:
            listed = [video_set(cfg.data.root, cfg.data.format, cfg.data.split, train, spec)]
        except Exception as err:  # every rank must hear of it, or the others wait forever
            listed = [err]
    dist.broadcast_object_list(listed, src=0)
    if isinstance(listed[0], Exception):
        raise listed[0]
    return listed[0]


def kept_videos(cfg: Config, records, console: Console) -> DecodedVideos | None:
    """The training videos decoded once into shared memory, up to ``data.memory_gb``
    (decision P3); None when it is 0. The stages of one process share the decoded set."""
    if cfg.data.memory_gb <= 0:
        return None
    kept = decoded_videos([r.path for r in records], int(cfg.data.memory_gb * 2**30))
    console.print(f"  {len(kept)} of {len(records)} training videos decoded into memory "
                  f"({kept.nbytes / 2**20:.0f} MiB of data.memory_gb={cfg.data.memory_gb:g})")
    return kept


FRAMES = "frames"  # data.image_root: the ventral stage on frames of the video set (Table 7a, "UCF101 Init")


def image_root(cfg: Config) -> Path | None:
    """The ImageNet-layout root (``builtin``: the generated shape set), or None for frames
    of the video set (or no choice made)."""
    if cfg.data.image_root in (None, FRAMES):
        return None
    if cfg.data.image_root == "builtin":
        return ensure_synthetic_images(spec=ImageSpec())
    return Path(cfg.data.image_root)


def given_maps(cfg: Config, images: bool = False) -> dict[str, str]:
    """``{map: cache folder}`` from ``data.maps`` (and ``data.contours``) for videos, or from
    ``data.image_maps`` for the ventral stage's image folder."""
    if images:
        return dict(m.split("=", 1) for m in cfg.data.image_maps)
    given = dict(m.split("=", 1) for m in cfg.data.maps)
    if cfg.data.contours:
        given.setdefault("contour", cfg.data.contours)
    return given


def side_maps(cfg: Config, pathway: Pathway, root: Path, images: bool = False) -> dict[str, MapCache]:
    """The caches of the side maps the graph's areas declare that the config provides (a
    declared map without a cache is one its area can do without, see :func:`missing_maps`)."""
    declared = {m for s in pathway.streams for m in s.maps}
    return {name: MapCache(folder, root, name=name) for name, folder in given_maps(cfg, images).items()
            if name in declared}


def missing_maps(pathway: Pathway, given: dict[str, str]) -> list[tuple[str, str]]:
    """``(area, map)`` pairs of maps an area reads, cannot do without and has no cache for."""
    return [(a.name, m) for s in pathway.streams for a in s.areas if a.has_readout and not a.map_fallback
            for m in a.maps if m not in given]


# --------------------------------------------------------------------------- training


def pretrain_step(model, batch):
    out = model(batch)
    return out.loss, out.losses


def ddp(model, runtime):
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _train(stage: str, cfg: Config, model, step_fn, dataset, optim: OptimSpec, runtime, run: RunLog, console,
           num_layers: int | None = None):
    """DDP wrap -> AdamW groups -> loader -> :func:`fit`: the tail every training stage shares."""
    if hasattr(model, "checkpointing"):
        model.checkpointing = cfg.checkpointing
    wrapped = ddp(model, runtime)
    if cfg.compile:
        wrapped = compiled(wrapped)
    optimizer = build_optimizer(model, optim, runtime, num_layers=num_layers)
    loader = make_loader(dataset, optim.batch_size, runtime, shuffle=True, seed=cfg.seed, workers=cfg.data.workers)
    return fit(stage, wrapped, step_fn, loader, optimizer, optim, runtime, run, resume=cfg.resume,
               log_every=cfg.log_every, checkpoint_minutes=cfg.checkpoint_minutes, console=console)


def _describe_maps(maps: dict[str, MapCache], pathway: Pathway) -> str:
    declared = sorted({m for s in pathway.streams for m in s.maps})
    if not declared:
        return ""
    return "; side maps: " + ", ".join(
        f"{m} from {maps[m].root}" if m in maps else f"{m}: no cache, its area's own fallback" for m in declared)


def papers_configuration(cfg: Config) -> bool:
    """Whether ``cfg`` is the paper's own configuration: its graph (no ``pathway=``, no graph
    edits, BIMM's targets) on a real dataset. Only then do labels cite the paper's tables."""
    return (cfg.pathway is None and not cfg.pathway_overrides and cfg.model.targets == ModelConfig().targets
            and cfg.data.root is not None)


def graph_label(cfg: Config) -> str:
    """Which graph ran, for the results table and ``results.json``."""
    if cfg.pathway is not None:
        return f"{cfg.pathway}" + (f" with {', '.join(cfg.pathway_overrides)}" if cfg.pathway_overrides else "")
    what = "the paper's BIMM graph" if cfg.model.targets == ModelConfig().targets else \
        f"the paper's graph with targets {cfg.model.targets}"
    edits = f" with {', '.join(cfg.pathway_overrides)}" if cfg.pathway_overrides else ""
    return f"{what} (model.size={cfg.model.size}){edits}"


def data_label(cfg: Config) -> str:
    """Which videos ran, for the results table and ``results.json``."""
    if cfg.data.root is None:
        return (f"the built-in set ({cfg.data.synthetic_groups} groups x {cfg.data.synthetic_clips} clips per class "
                f"at {cfg.data.synthetic_size} px, UCF101 layout, split {cfg.data.split})")
    layout = {"lists": "train/test lists", "folders": "class folders", "unlabeled": "unlabeled videos"}.get(
        cfg.data.format, f"{cfg.data.format}'s official layout")
    split = f", split {cfg.data.split}" if cfg.data.format in ("ucf101", "hmdb51") else ""
    return f"{cfg.data.root} ({layout}{split})"


def ventral_source(cfg: Config) -> str:
    """What the ventral stage trains on, as the results table and config.json name it; the
    paper's Table 7a row only for the paper's own configuration."""
    paper = papers_configuration(cfg)
    if cfg.data.image_root == FRAMES:
        return "frames of the video set" + (" (Table 7a: UCF101 Init)" if paper and cfg.data.format == "ucf101" else "")
    if cfg.data.image_root == "builtin":
        return "built-in shape images"
    return f"ImageNet-layout folder {cfg.data.image_root}" + (" (Table 7a: IN-1K Init)" if paper else "")


@attrs.frozen
class Graphs:
    """The graphs one command's stages train, read once from the run directory after it is
    written (so every stage builds from the code the run carries, decision T2) and handed to
    each stage: none of them reads ``pathway.json`` again."""

    run: Pathway  # the run's graph (pathway.json): what the joint stage trains
    ventral: Pathway | None  # what the ventral stage trains and the joint stage starts from
    finetune: Pathway  # whose stream is finetuned and tested: the pretrained run's, else the run's

    @classmethod
    def of(cls, cfg: Config, run_root: Path) -> Graphs:
        graph = run_pathway(run_root)
        ventral = run_pathway(run_root, stage="ventral") if any(s.modality == "image" for s in graph.streams) \
            else None
        return cls(run=graph, ventral=ventral, finetune=pretrained_graph(cfg) or graph)


def run_ventral(cfg: Config, graphs: Graphs, runtime, run: RunLog, console: Console):
    pathway = graphs.ventral
    model = pathway.build().to(runtime.device)
    transform = TrainTransform(size=cfg.data.size, crop="resized", area=(0.2, 1.0), flip=cfg.ventral.flip)
    images = image_root(cfg)
    if images is not None:
        folder = image_split(images, train=True)
        maps = side_maps(cfg, pathway, images, images=True)
        dataset = ImageFolder(folder, transform=transform, seed=cfg.seed, maps=maps)
        source = f"images of {folder}"
    else:
        root, records, classes = video_records(cfg, train=True, runtime=runtime)
        maps = side_maps(cfg, pathway, root)
        dataset = VideoDataset(records, classes, frames=1, transform=transform, as_images=True, seed=cfg.seed,
                               maps=maps, memory=kept_videos(cfg, records, console), name="video frames")
        source = f"frames of {root} (data.image_root=frames)"
    names = ", ".join(s.name for s in pathway.streams)
    console.print(f"[bold]ventral[/]: MAE-style pretraining of {names} on {source}, {len(dataset)} items"
                  f"{_describe_maps(maps, pathway)}")
    if cfg.init is not None and init_target(cfg, graphs.run)[2] == "ventral":
        _load_init(cfg, model, graphs.run, "ventral", console)
    state = _train("ventral", cfg, model, pretrain_step, dataset, cfg.ventral.optim, runtime, run, console)
    return model, state


def start_from_ventral(cfg: Config, model, ventral) -> list[str]:
    """Initialise the joint ``model`` from the ventral stage's ``ventral`` model as the joint
    stage does: its streams copied, then each video stream inherited from its image stream
    (``model.dorsal_init``, with ``model.dorsal_contrast``; decision D21). Returns what was
    done, a line per step."""
    report = copy_streams(model, ventral)
    lines = [f"{len(report['copied'])} parts copied"
             + (f", not in the joint graph: {', '.join(report['skipped'])}" if report["skipped"] else "")]
    if cfg.model.dorsal_init == "ventral":
        for dst, src in inherit_sources(model.pathway).items():
            report = inherit_stream(model, dst=dst, src=src, temporal_contrast=cfg.model.dorsal_contrast)
            lines.append(f"{dst} from {src}: {len(report['copied'])} copied, {len(report['shared'])} shared, "
                         f"inflated {report['inflated']}")
    return lines


def run_joint(cfg: Config, graphs: Graphs, runtime, run: RunLog, console: Console):
    pathway = graphs.run
    model = pathway.build().to(runtime.device)
    names = [s.name for s in pathway.streams]
    ventral_ckpt = run.stage_dir("ventral") / "model.safetensors"
    has_images = any(s.modality == "image" for s in pathway.streams)
    if has_images and ventral_ckpt.is_file():
        ventral = graphs.ventral.build()
        load_weights(ventral, ventral_ckpt)  # strict: the graph the ventral stage trained
        lines = start_from_ventral(cfg, model, ventral)
        console.print(f"[bold]joint[/]: {', '.join(s.name for s in ventral.pathway.streams)} loaded from "
                      f"{ventral_ckpt}: {lines[0]}")
        for line in lines[1:]:
            console.print(f"  {line}")
    elif cfg.init is None:
        console.print(f"[bold]joint[/]: {', '.join(names)} from scratch")
    if cfg.init is not None and init_target(cfg, pathway)[2] == "joint":
        _load_init(cfg, model, pathway, "joint", console)
    root, records, classes = video_records(cfg, train=True, runtime=runtime)
    transform = TrainTransform(size=cfg.data.size, crop="multiscale", flip=cfg.joint.flip)
    maps = side_maps(cfg, pathway, root)
    dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride, transform=transform,
                           maps=maps, seed=cfg.seed, memory=kept_videos(cfg, records, console), name="training videos")
    console.print(f"  {len(dataset)} training videos{_describe_maps(maps, pathway)}")
    state = _train("joint", cfg, model, pretrain_step, dataset, cfg.joint.optim, runtime, run, console)
    return model, state


# --------------------------------------------------------------------------- init= files


def checkpoint_format(path: str) -> str:
    """The format of a checkpoint file (:func:`visualpath.interop.detect_format`), read once
    per file version: ``check`` and each stage ask again without reading it again."""
    stat = Path(path).stat()
    return _checkpoint_format(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _checkpoint_format(path: str, mtime_ns: int, size: int) -> str:
    from visualpath.interop import detect_format, read_state_dict

    return detect_format(read_state_dict(path))


def init_target(cfg: Config, pathway: Pathway) -> tuple[str, str, str]:
    """Where ``init=`` goes: ``(format, stream, stage)``.

    A video checkpoint (VideoMAE, Hugging Face) initialises the graph's video stream before
    the joint stage. An image one (MAE, timm) initialises its image stream before the ventral
    stage, or before the joint stage when that runs without one; a graph with a single
    stream takes either (an image patch embedding is inflated over the tube).

    Raises:
        Refused: naming the file or the missing stream/stage.
    """
    fmt = checkpoint_format(cfg.init)
    if fmt == "visualpath":
        raise Refused(f"init={cfg.init!r} is one of our pathway checkpoints: finetune it with pretrained=, or "
                         "continue its run directory with resume")
    modality = "video" if fmt in ("videomae", "huggingface-videomae") else "image"
    matching = [s.name for s in pathway.streams if s.modality == modality]
    if len(pathway.streams) == 1:
        matching = [pathway.streams[0].name]
    if len(matching) != 1:
        raise Refused(f"init={cfg.init!r} is a {fmt} checkpoint, which initialises one {modality} stream; the "
                         f"graph has {len(matching)} ({matching}) among {[s.name for s in pathway.streams]}")
    stream = matching[0]
    is_image = pathway.stream(stream).modality == "image"
    stage = "ventral" if is_image and "ventral" in cfg.stages else "joint"
    if stage not in cfg.stages:
        when = "the ventral or joint stage" if is_image else "the joint stage"
        raise Refused(f"init={cfg.init!r} initialises the {stream} stream before {when}: keep one in stages "
                         f"(stages={','.join(cfg.stages)})")
    return fmt, stream, stage


def _load_init(cfg: Config, model, pathway: Pathway, stage: str, console: Console) -> None:
    from visualpath.interop import load_checkpoint

    _, stream, _ = init_target(cfg, pathway)
    report = load_checkpoint(model, cfg.init, stream=stream)
    console.print(f"[bold]{stage}[/]: {stream} stream from the checkpoint {cfg.init}: {report}")


# --------------------------------------------------------------------------- finetuning and testing


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


def is_pathway_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a pathway's ``model.safetensors`` (its keys name streams)."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    from visualpath.errors import Refused, one_line

    try:
        with safe_open(str(path), "pt") as f:
            return any(k.startswith("streams.") for k in f.keys())
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        raise Refused(f"{path} is not a readable safetensors file ({one_line(err)[:200]})") from None


def pretrained_graph(cfg: Config) -> Pathway | None:
    """The graph of the ``pretrained`` run (or of the run holding a ``pretrained`` pathway
    checkpoint); None when ``pretrained`` is not one of our runs."""
    if cfg.pretrained is None:
        return None
    source = Path(cfg.pretrained)
    run_dir = source if source.is_dir() else source.parent.parent
    if source.is_dir() or (is_pathway_checkpoint(source) and
                           any((run_dir / f).is_file() for f in ("config.json", PATHWAY_FILE))):
        return run_pathway(run_dir)
    return None


def _pretrained(cfg: Config, pathway: Pathway, run: RunLog, console: Console):
    """The pathway whose encoder is finetuned: ``cfg.pretrained``'s, else this run's joint
    checkpoint, else its ventral one. A ``pretrained`` file that is not one of our pathway
    checkpoints (VideoMAE, MAE, timm, Hugging Face) initialises the finetuned stream's encoder
    through :func:`visualpath.interop.load_checkpoint`."""
    model = pathway.build()
    source = Path(cfg.pretrained) if cfg.pretrained else run.root
    if source.is_file() and not is_pathway_checkpoint(source):
        from visualpath.interop import load_checkpoint

        report = load_checkpoint(model, source, stream=cfg.finetune.stream)
        console.print(f"[bold]finetune[/]: {cfg.finetune.stream} encoder from the checkpoint {source}: {report}")
        return model
    if source.is_file():
        ckpt = source
    else:
        try:
            ckpt = source / pretrained_stage(source) / "model.safetensors"
        except Refused:
            ckpt = None  # no pretraining stage has run: finetuning starts from random weights
    if ckpt is not None:
        result = load_weights(model, ckpt, strict=False)
        encoder = _encoder_keys(model, cfg.finetune.stream)
        missing = sorted(encoder & set(result.missing_keys))
        if missing:
            raise Refused(f"{ckpt} holds no weights for {len(missing)} of the {len(encoder)} tensors of the "
                             f"{cfg.finetune.stream} encoder (e.g. {missing[0]}): it was trained with another "
                             "graph or without that stream; finetune.stream names the stream to finetune")
        console.print(f"[bold]finetune[/]: {cfg.finetune.stream} encoder from {ckpt} "
                      f"({len(encoder)} tensors)")
        return model
    console.print(f"[bold]finetune[/]: no pretrained checkpoint, training the {cfg.finetune.stream} encoder "
                  "from scratch")
    return model


def _encoder_keys(model, stream: str) -> set[str]:
    """State-dict keys of one stream's encoder (its embedding and the stages it reads,
    under whichever stream owns them)."""
    owned = {id(p) for p in model.streams[stream].embed.parameters()}
    owned |= {id(p) for block in model.blocks(stream) for p in block.parameters()}
    return {k for k, p in model.named_parameters() if id(p) in owned}


def _classifier(cfg: Config, model, num_classes: int, drop_path: float | None = None) -> Classifier:
    return Classifier(Encoder.from_pathway(model, cfg.finetune.stream, drop_path=drop_path), num_classes,
                      pool=cfg.finetune.pool)


def classifies_images(cfg: Config, pathway: Pathway) -> bool:
    return pathway.stream(cfg.finetune.stream).modality == "image"


def run_finetune(cfg: Config, graphs: Graphs, runtime, run: RunLog, console: Console):
    ft = cfg.finetune
    model = _pretrained(cfg, graphs.finetune, run, console)
    if classifies_images(cfg, model.pathway):  # BIMM-V: image classification
        folder = image_split(image_root(cfg), train=True)
        transform = TrainTransform(size=cfg.data.size, crop="resized", area=ft.crop_area, flip=ft.flip,
                                   randaugment=ft.randaugment)
        dataset = ImageFolder(folder, transform=transform, seed=cfg.seed)
        classes = dataset.classes
    else:
        _, records, classes = video_records(cfg, train=True, runtime=runtime)
        transform = TrainTransform(size=cfg.data.size, crop="resized", area=ft.crop_area, flip=ft.flip,
                                   randaugment=ft.randaugment)
        # Table 9's batch counts videos; repeated augmentation gives each `repeated` clips (VideoMAE).
        dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride,
                               sampling=ft.sampling, transform=transform, views=ft.repeated, seed=cfg.seed,
                               memory=kept_videos(cfg, records, console), name="training videos")
    classifier = _classifier(cfg, model, len(classes), drop_path=ft.drop_path).to(runtime.device)
    state = _train("finetune", cfg, classifier, finetune_step_fn(ft, len(classes), runtime.device), dataset,
                   ft.optim, runtime, run, console, num_layers=model.pathway.encoder.depth)
    return classifier, state, classes


def run_test(cfg: Config, graphs: Graphs, runtime, run: RunLog, console: Console, model=None):
    pathway = graphs.finetune
    if classifies_images(cfg, pathway):
        dataset = ImageFolder(image_split(image_root(cfg), train=False), size=cfg.data.size)
        classes = dataset.classes
    else:
        _, records, classes = video_records(cfg, train=False, runtime=runtime)
        dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride,
                               sampling=cfg.finetune.sampling, mode="test", size=cfg.data.size,
                               clips=cfg.test.clips, crops=cfg.test.crops, name="evaluation videos")
    progress = stage_progress(run.stage_dir("finetune")) or {}
    views = {"clips": cfg.test.clips, "crops": cfg.test.crops, "items": len(dataset),
             "finetune_sha256": progress.get("weights_sha256")}
    done = _tested(run, views)
    if done is not None:  # the same command again: this model was tested on these views already
        console.print(f"[bold]test[/]: already done for this finetuned model (top-1 {done['top1']:.3f}); kept as it is")
        return {"top1": done["top1"], "top5": done["top5"], "count": done["count"], "chance": 1 / len(classes),
                "skipped_count": done.get("skipped", 0), "short_count": done.get("short", 0)}
    if model is None:
        model = _classifier(cfg, pathway.build(), len(classes))
        load_weights(model, run.stage_dir("finetune") / "model.safetensors")
        model = model.to(runtime.device)
    loader = make_loader(dataset, cfg.test.batch_size, runtime, shuffle=False, seed=cfg.seed,
                         workers=cfg.data.workers, drop_last=False)
    result = evaluate(model, loader, runtime, console=console)
    result["skipped"] = {**{path: MISSING for path in getattr(dataset, "missing_files", ())}, **result["skipped"]}
    result["chance"] = 1 / len(classes)
    if runtime.main:
        run.broken_files("test", result["skipped"], result["short"])  # beside the training stages'
    run.trim_metrics("test", -1)  # one test record per run: the latest finetuned model's
    result["skipped_count"], result["short_count"] = len(result["skipped"]), len(result["short"])
    run.metrics("test", top1=result["top1"], top5=result["top5"], count=result["count"],
                skipped=result["skipped_count"], short=result["short_count"], **views)
    return result


def _tested(run: RunLog, views: dict) -> dict | None:
    """The test record of the same finetuned weights on the same views, if any."""
    if views["finetune_sha256"] is None:
        return None
    path = run.root / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict) and record.get("stage") == "test" and all(record.get(k) == v for k, v in views.items()):
            return record
    return None


def figure(joint, cfg: Config, run_log: RunLog, runtime, console: Console | None = None) -> None:
    """``reconstruction_<stream>.png`` for every stream of a trained joint model that has a
    video stream, on a clip of the evaluation set (an image stream sees its middle frame)
    with the side maps its areas read."""
    import matplotlib.pyplot as plt

    from analysis.figures import reconstruction_figure

    if not any(s.modality == "video" for s in joint.pathway.streams):
        return
    root, records, classes = video_records(cfg, train=False)  # rank 0 alone draws the figure
    whole = TrainTransform(size=cfg.data.size, crop="resized", area=(1.0, 1.0), flip=False)  # the whole frame
    say = (console or terminal.console(stderr=True)).print
    try:
        # the whole evaluation set, so that an unreadable first video is replaced by a readable one
        dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride,
                               transform=whole, maps=side_maps(cfg, joint.pathway, root), seed=cfg.seed)
        item = dataset[0]
    except (ValueError, VideoError) as err:  # e.g. a map the evaluation videos have no cache for
        say(f"  no reconstruction figure: {err}")
        return
    batch = {k: v[None].to(runtime.device) for k, v in item.items()
             if isinstance(v, torch.Tensor) and k not in ("label", "index", "skipped")}
    middle = batch["video"].shape[2] // 2
    for key in [k for k in batch if k != "video"]:  # what an image stream reads: the middle frame and its maps
        batch[f"image_{key}"] = batch[key][:, middle]
    batch["image"] = batch["video"][:, :, middle]
    for s in joint.pathway.streams:
        try:
            fig = reconstruction_figure(joint, batch, stream=s.name)
        except ValueError as err:
            say(f"  no reconstruction figure for {s.name}: {err}")
            continue
        atomic(run_log.root / f"reconstruction_{s.name}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)
