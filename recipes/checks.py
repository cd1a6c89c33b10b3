"""Everything a configuration must satisfy before any data is read or compute starts: the
device, the data's layout and lists, the run directory, the graph (its streams, side maps,
masks and targets at the run's size), ``pretrained=`` and ``init=``, and the memory a step
needs. Each check raises ``ValueError`` naming the key and what to set instead."""


from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import torch

from recipes.config import Config
from recipes.graph import build_graph, ventral_graph
from recipes.resume import stored_graph
from recipes.stages import (FRAMES, checkpoint_format, classifies_images, given_maps, init_target,
                            is_pathway_checkpoint, missing_maps, pretrained_graph)
from visualpath import Pathway
from visualpath.data.layouts import UNLABELED, check_root, video_split
from visualpath.data.synthetic import SyntheticSpec, train_videos
from visualpath.errors import Refused, one_line


def check(cfg: Config) -> Pathway:
    """Reject a configuration that cannot run, before any data or compute is touched;
    returns the graph it trains."""
    check_device(cfg.device)
    videos = None  # training videos, where they can be counted without reading a large set's lists
    if cfg.data.root is None:
        videos = train_videos(SyntheticSpec(groups=cfg.data.synthetic_groups, clips=cfg.data.synthetic_clips),
                              cfg.data.split)
    else:
        check_root(cfg.data.format, cfg.data.root)
        if cfg.data.format in ("lists", "folders", UNLABELED):  # a user's own layout: read its lists now
            listed = video_split(cfg.data.format, cfg.data.root, True, cfg.data.split)[0]
            videos = sum(r.path.is_file() for r in listed)  # what the stages will train on
            video_split(cfg.data.format, cfg.data.root, False, cfg.data.split)
    if cfg.data.format == UNLABELED and set(cfg.stages) & {"finetune", "test"}:
        raise ValueError("data.format=unlabeled has no labels to finetune or test on: stages=ventral,joint (then "
                         "finetune the run on labelled data with pretrained=RUN_DIR)")
    if cfg.pretrained is not None and not Path(cfg.pretrained).exists():
        raise ValueError(f"pretrained={cfg.pretrained!r} does not exist; expected a run directory of a recipe "
                         "(holding config.json and joint/ or ventral/model.safetensors) or a checkpoint file "
                         "(ours, VideoMAE, MAE, timm or Hugging Face)")
    if cfg.pretrained is not None and Path(cfg.pretrained).is_file() and \
            not is_pathway_checkpoint(Path(cfg.pretrained)):
        try:
            checkpoint_format(cfg.pretrained)
        except ValueError as err:
            raise ValueError(f"pretrained={cfg.pretrained!r}: {err}") from None
    if cfg.pretrained is not None and any(s in cfg.stages for s in ("ventral", "joint")):
        raise ValueError("pretrained= finetunes another run: set stages=finetune,test")
    _check_writable(Path(cfg.run_dir))
    if cfg.data.image_root not in (None, "builtin", FRAMES):
        check_root("imagenet", cfg.data.image_root, key="data.image_root")
    if "ventral" in cfg.stages and cfg.data.image_root is None:
        raise ValueError("the ventral stage needs its images: data.image_root=/path/to/imagenet (an ImageNet-layout "
                         "folder: the paper's IN-1K initialisation, Table 7a's default) or data.image_root=frames "
                         "(frames of the video set: Table 7a's 'UCF101 Init' row)")
    pathway = build_graph(cfg)  # the builder runs and the graph validates here
    stored = stored_graph(cfg)
    if cfg.pretrained is not None:
        pathway = pretrained_graph(cfg) or pathway  # finetuning another run: the graph it trained
    elif stored is not None and not set(cfg.stages) & {"ventral", "joint"}:
        pathway = stored  # finetuning or testing this run: the graph it trained
    finetuned = pathway
    streams = [s.name for s in finetuned.streams]
    if cfg.finetune.stream not in streams and any(s in cfg.stages for s in ("finetune", "test")):
        raise ValueError(f"finetune.stream={cfg.finetune.stream!r} is not a stream of the graph; its streams: "
                         f"{streams}")
    if cfg.finetune.stream in streams and classifies_images(cfg, finetuned) and \
            cfg.data.image_root in (None, FRAMES) and any(s in cfg.stages for s in ("finetune", "test")):
        raise ValueError(f"finetune.stream={cfg.finetune.stream!r} is an image stream, so it classifies images: "
                         "set data.image_root (an ImageNet-layout folder, or 'builtin')")
    if cfg.init is not None:
        if not Path(cfg.init).is_file():
            raise ValueError(f"init={cfg.init!r} does not exist; expected a checkpoint file (VideoMAE, MAE, timm or "
                             "Hugging Face: .pth, .bin or .safetensors)")
        _, stream, _ = init_target(cfg, pathway)
        _check_init_fits(cfg, pathway, stream)
    if "ventral" in cfg.stages and not any(s.modality == "image" for s in pathway.streams):
        raise ValueError(f"stages include 'ventral' (pretraining the image streams) but the graph has none; its "
                         f"streams: {[f'{s.name} ({s.modality})' for s in pathway.streams]}")
    declared = sorted({m for s in pathway.streams for m in s.maps})
    for key, images in (("data.maps", False), ("data.image_maps", True)):
        unknown = [m for m in given_maps(cfg, images) if m not in declared]
        if unknown:
            raise ValueError(f"{key} names {unknown[0]!r}, which no area of the graph reads; declared maps: "
                             f"{declared or 'none'}")
    needs = []
    if "joint" in cfg.stages:
        needs.append(("data.maps", missing_maps(pathway, given_maps(cfg))))
    if "ventral" in cfg.stages and cfg.data.image_root is not None:
        on_images = cfg.data.image_root != FRAMES
        ventral = ventral_graph(cfg, pathway)
        if ventral is not None:
            needs.append(("data.image_maps" if on_images else "data.maps",
                          missing_maps(ventral, given_maps(cfg, images=on_images))))
    for key, missing in needs:
        if missing:
            area, name = missing[0]
            raise ValueError(f"area {area} reads the side map {name!r} and has no fallback: precompute it "
                             f"(python -m recipes.precompute_maps --map {name} ...) and pass {key}={name}=DIR")
    patch, tube = pathway.encoder.patch, pathway.encoder.tube
    if cfg.data.size % patch or cfg.data.frames % tube:
        raise ValueError(f"data.size must be a multiple of {patch} and data.frames of {tube}, got "
                         f"{cfg.data.size}, {cfg.data.frames}")
    side = cfg.data.size // patch
    for stream in pathway.streams:
        frames = -(-cfg.data.frames // stream.frame_step)
        if stream.modality == "video" and frames % tube:
            raise ValueError(f"stream {stream.name!r} sees {frames} of data.frames={cfg.data.frames} "
                             f"(frame_step {stream.frame_step}), not a multiple of the tube ({tube})")
        grid = (side, side) if stream.modality == "image" else (frames // tube, side, side)
        try:
            stream.mask.count(grid)
        except ValueError as err:
            raise ValueError(f"mask of stream {stream.name!r} at data.size={cfg.data.size}: {err}") from None
    check_memory(cfg, pathway)
    if videos is not None:
        check_batches(cfg, finetuned, videos)
    if cfg.data.root is None and 2 * cfg.data.synthetic_size < cfg.data.size:
        raise ValueError(f"data.synthetic_size={cfg.data.synthetic_size} is less than half the crop, data.size="
                         f"{cfg.data.size}: each crop would be the built-in set's frames enlarged more than 2x; "
                         f"raise data.synthetic_size to at least {-(-cfg.data.size // 2)} (up to 512) or lower "
                         "data.size")
    check_targets(pathway, cfg.data.size, cfg.data.frames)
    return pathway


def check_batches(cfg: Config, finetuned: Pathway, videos: int) -> None:
    """Each stage that trains on the video set gets at least one full optimiser step per epoch
    on each process (``WORLD_SIZE`` of them under torchrun), as the training loop needs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_rank = -(-videos // world)  # the sampler pads to a multiple of the processes
    stages = []
    if "ventral" in cfg.stages and cfg.data.image_root == FRAMES:
        stages.append(("ventral", cfg.ventral.optim))
    if "joint" in cfg.stages:
        stages.append(("joint", cfg.joint.optim))
    if "finetune" in cfg.stages and cfg.finetune.stream in [s.name for s in finetuned.streams] \
            and not classifies_images(cfg, finetuned):
        stages.append(("finetune", cfg.finetune.optim))
    for stage, optim in stages:
        if per_rank < optim.batch_size * optim.accum_steps:
            most = per_rank // optim.accum_steps
            raise ValueError(f"{stage}.optim.batch_size={optim.batch_size} (x {optim.accum_steps} accumulation) needs "
                             f"more than the {per_rank} training videos each of {world} process(es) gets: no full "
                             f"step; lower it to at most {most}" if most else
                             f"{stage}.optim.batch_size={optim.batch_size}: {per_rank} training videos per process "
                             f"cannot fill one step of {optim.accum_steps} accumulation")


def check_targets(pathway: Pathway, size: int, frames: int) -> None:
    """Each area's target, computed once on one random clip (or image) at the run's size,
    has the ``(1, tokens, target_dim)`` shape its decoder is built for: a user's area whose
    target disagrees with its ``target_dim`` is refused before compute, naming both shapes.

    Raises:
        Refused: naming the stream, the area and the shapes, or the error its target raised.
    """
    from visualpath import TargetInput
    from visualpath.tokens import Layout

    enc = pathway.encoder
    generator = torch.Generator().manual_seed(0)
    for stream in pathway.streams:
        video = stream.modality == "video"
        layout = Layout(stream.modality, enc.patch, enc.tube if video else 1, enc.channels)
        # at most two tubes of frames: the shape check holds for any length, and a long clip's
        # targets (a Gabor bank over 100k frames) would take more memory than the check guards
        short = min(-(-frames // stream.frame_step), 2 * enc.tube)
        shape = (1, enc.channels, short, size, size) if video else (1, enc.channels, size, size)
        pixels = torch.rand(shape, generator=generator)
        maps = {m: torch.zeros(shape[:1] + (1,) + shape[2:]) for m in stream.maps}
        tokens = math.prod(layout.grid(shape))
        for area in stream.areas:
            if not area.has_readout:
                continue
            where = f"area {area.name} ({type(area).__name__}) of stream {stream.name!r}"
            want = area.target_dim(layout)
            try:
                with torch.no_grad():
                    got = area.target(TargetInput(pixels=pixels, layout=layout, maps=maps))
            except Exception as err:  # noqa: BLE001 (a user's target: any failure is theirs to see, in one line)
                raise Refused(f"{where}: its target fails on a {tuple(shape)} input: {type(err).__name__}: "
                              f"{one_line(err)[:300]}") from None
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != (1, tokens, want):
                found = tuple(getattr(got, "shape", ()))
                if len(found) != 3 or found[:2] != (1, tokens):  # a map, not tokens: the patches were never cut
                    advice = (f"a target is one row per token: cut a map of shape (B, C, [T,] H, W) into tokens with "
                              f"inp.layout.patchify(map), which gives (1, {tokens}, values per token)")
                else:
                    advice = "make target_dim return the values per token its target gives"
                raise Refused(f"{where}: its target has shape {found} where (1, {tokens}, {want}) was expected "
                              f"(batch, tokens, target_dim(layout)={want}); {advice}")


# what one clip holds in memory at the finetuning stage (every token, no mask), besides the model: the
# activations each block keeps for the backward pass, about 16 tensors of width D per token, in float32
_ACTIVATIONS_PER_TOKEN = 16


def check_memory(cfg: Config, pathway: Pathway) -> None:
    """Refuse a clip size that could not fit in this machine's memory (the host's, or the
    GPU's for ``device=cuda``), with what it needs and what the machine has. Two lower
    bounds, so that no setting that could run is refused: one clip through a finetuning step
    (its decoded frames and the activations its encoder keeps for the backward pass), and
    each video stage's batch of decoded clips alone (as uint8 and as float32)."""
    enc = pathway.encoder
    frames = cfg.data.frames if set(cfg.stages) & {"joint", "finetune", "test"} else 1  # ventral: a frame an item
    tokens = max(frames // enc.tube, 1) * (cfg.data.size // enc.patch) ** 2
    clip = enc.channels * frames * cfg.data.size ** 2 * (1 + 4)  # uint8, then float32
    needs = {"a single clip": (clip + tokens * enc.width * enc.depth * _ACTIVATIONS_PER_TOKEN * 4,
                               f"{tokens} tokens through a {enc.depth}-block encoder of width {enc.width}")}
    if "joint" in cfg.stages:
        batch = cfg.joint.optim.batch_size
        needs["a joint batch"] = (batch * clip, f"{batch} decoded clips; or lower joint.optim.batch_size")
    if "finetune" in cfg.stages:
        batch, views = cfg.finetune.optim.batch_size, cfg.finetune.repeated
        needs["a finetune batch"] = (batch * views * clip, f"{batch} x {views} decoded clips; or lower "
                                                           "finetune.optim.batch_size")
    what, (need, detail) = max(needs.items(), key=lambda item: item[1][0])
    available = _memory_available(cfg.device)
    if available is not None and need > available:
        raise Refused(f"data.size={cfg.data.size} with data.frames={cfg.data.frames} needs at least {need / 2**30:.1f} "
                      f"GiB for {what} ({detail}) and this machine has {available / 2**30:.1f} GiB: lower data.size "
                      "or data.frames")


def _memory_available(device: str) -> int | None:
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_device(device: str) -> None:
    """``device`` names a device this machine has: auto, cpu, mps, cuda or cuda:N."""
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise Refused(f"device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise Refused(f"device={device}: this machine has no CUDA device; use device=auto or cpu")
        if index and int(index) >= count:
            raise Refused(f"device={device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise Refused(f"device={device}: MPS is not available on this machine; use device=auto or cpu")


def _check_writable(run_dir: Path) -> None:
    """The run directory can be created and written (not under a file, not read-only),
    decided without creating it: a refusal leaves the folder as it found it."""
    existing = run_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        probe = existing / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"run_dir={str(run_dir)!r} cannot be written ({reason}); choose a writable folder") from None


def _check_init_fits(cfg: Config, pathway: Pathway, stream: str) -> None:
    """``init=``'s tensors fit the stream they start (loaded into a throwaway model)."""
    from visualpath.interop import load_checkpoint

    try:
        load_checkpoint(pathway.build(), cfg.init, stream=stream)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"init={cfg.init!r} does not fit the {stream} stream: {str(err).splitlines()[0]}") from None
