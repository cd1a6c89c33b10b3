"""Moving weights between built models, stream by stream: a ventral-stage model into the
joint one (:func:`copy_streams`), and a stream initialised from another (:func:`inherit_stream`,
BIMM's dorsal stream from the trained ventral one).
"""

from __future__ import annotations

import torch
from torch import nn

from visualpath.graph import Pathway
from visualpath.model import PathwayModel

__all__ = ["copy_streams", "inherit_stream", "inherit_sources"]


@torch.no_grad()
def copy_streams(dst: PathwayModel, src: PathwayModel) -> dict[str, list[str]]:
    """Copy every stream of ``src`` that ``dst`` also has, stage by stage, with its embedding
    and the decoders both have (a ventral-stage model into the joint one).

    Stages are matched by (stream, area), wherever the two graphs store them: a stage that
    ``src`` owns may be borrowed in ``dst`` (shared with a stream that comes first there).

    Returns:
        ``{"copied": [...], "skipped": [...]}`` as ``stream.area`` / ``stream.embed`` /
        ``stream.decoder.area`` names; skipped parts are absent from ``dst`` or of another shape.
    """
    report: dict[str, list[str]] = {"copied": [], "skipped": []}
    done: set[int] = set()

    def copy(name: str, to: nn.Module | None, source: nn.Module) -> None:
        if to is None or id(to) in done:
            report["skipped" if to is None else "copied"].append(name)
            return
        mine, theirs = to.state_dict(), source.state_dict()
        if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
            report["skipped"].append(name)
            return
        to.load_state_dict(theirs)
        done.add(id(to))
        report["copied"].append(name)

    for stream in src.pathway.streams:
        if stream.name not in dst.streams:
            continue
        copy(f"{stream.name}.embed", dst.streams[stream.name].embed, src.streams[stream.name].embed)
        names = {a.name for a in dst.pathway.stream(stream.name).areas}
        for area in stream.areas:
            target = dst.stage(stream.name, area.name) if area.name in names else None
            copy(f"{stream.name}.{area.name}", target, src.stage(stream.name, area.name))
        for name, decoder in src.streams[stream.name].decoders.items():
            copy(f"{stream.name}.decoder.{name}", dst.streams[stream.name].decoders[name]
                 if name in dst.streams[stream.name].decoders else None, decoder)
    return report


@torch.no_grad()
def inherit_stream(
    model: PathwayModel, dst: str, src: str, source: PathwayModel | None = None, temporal_contrast: float = 0.0
) -> dict[str, list[str]]:
    """Initialise stream ``dst`` from stream ``src`` (BIMM: dorsal from the trained ventral).

    Copies the encoder blocks position by position and the patch embedding, inflating a 2-D
    ``(D, C, p, p)`` kernel to 3-D by repeating it over the tube and dividing by its length
    (a static clip then embeds exactly as its frame did), or deflating 3-D to 2-D by summing
    over time. Decoders are not copied: image and tube heads predict different shapes, and
    the paper initialises only the encoder. Stages that ``dst`` already shares with ``src``
    are left alone.

    Repeating a 2-D kernel over the tube averages the tube's frames, so the inflated
    embedding cannot tell a moving patch from a still one. ``temporal_contrast > 0`` adds
    back that many times the part of ``dst``'s own current kernel that varies over the tube
    (its kernel minus its mean over time): a still clip still embeds exactly as its frame did,
    since that part sums to zero over identical frames, while frame differences reach the
    encoder through the fresh initialisation's temporal filters (decision D21).

    Args:
        model: the model whose stream ``dst`` is overwritten.
        dst: stream to initialise.
        src: stream to copy from.
        source: model holding ``src``; defaults to ``model`` itself (e.g. a joint model after
            loading a ventral-only checkpoint).
        temporal_contrast: gain of ``dst``'s own temporal-difference filters kept in an
            inflated kernel; 0 (the default) is the plain repeat-and-divide inflation.

    Returns:
        ``{"copied": [...], "shared": [...], "inflated": [...]}`` parameter names of ``dst``.
    """
    if temporal_contrast < 0:
        raise ValueError(f"temporal_contrast must be >= 0, got {temporal_contrast}")
    source = source or model
    for m, name in ((model, dst), (source, src)):
        if name not in m.streams:
            raise ValueError(f"unknown stream {name!r}; expected one of {list(m.streams)}")
    dst_blocks, src_blocks = model.blocks(dst), source.blocks(src)
    if len(dst_blocks) != len(src_blocks):
        raise ValueError(
            f"stream {dst!r} has {len(dst_blocks)} blocks but {src!r} has {len(src_blocks)}"
        )
    report: dict[str, list[str]] = {"copied": [], "shared": [], "inflated": []}
    for i, (b_dst, b_src) in enumerate(zip(dst_blocks, src_blocks)):
        if b_dst is b_src:
            report["shared"].append(f"block {i}")
            continue
        b_dst.load_state_dict(b_src.state_dict())
        report["copied"].append(f"block {i}")
    w_dst = model.streams[dst].embed.proj
    w_src = source.streams[src].embed.proj
    weight = w_src.weight
    if weight.ndim == 4 and w_dst.weight.ndim == 5:
        t = w_dst.weight.shape[2]
        weight = weight.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        if temporal_contrast:
            own = w_dst.weight.detach()
            weight = weight + temporal_contrast * (own - own.mean(2, keepdim=True))
        report["inflated"].append("embed.proj.weight" + (f" (+{temporal_contrast:g} x its own temporal differences)"
                                                         if temporal_contrast and t > 1 else ""))
    elif weight.ndim == 5 and w_dst.weight.ndim == 4:
        weight = weight.sum(2)
        report["inflated"].append("embed.proj.weight (summed over time)")
    else:
        report["copied"].append("embed.proj.weight")
    if weight.shape != w_dst.weight.shape:
        raise ValueError(
            f"patch embedding of {src!r} {tuple(w_src.weight.shape)} does not fit {dst!r} "
            f"{tuple(w_dst.weight.shape)}"
        )
    w_dst.weight.copy_(weight)
    w_dst.bias.copy_(w_src.bias)
    report["copied"].append("embed.proj.bias")
    return report


def inherit_sources(pathway: Pathway) -> dict[str, str]:
    """For each video stream, the image stream it is initialised from: the one it shares the
    most stages with (the first image stream when it shares none; decision G6)."""
    images = [s.name for s in pathway.streams if s.modality == "image"]
    if not images:
        return {}
    owner = pathway.owners()
    out = {}
    for s in pathway.streams:
        if s.modality != "video":
            continue
        shared = {i: sum(owner[(s.name, a.name)] == owner.get((i, b.name))
                         for a in s.areas for b in pathway.stream(i).areas) for i in images}
        out[s.name] = max(images, key=lambda i: (shared[i], -images.index(i)))
    return out
