"""The model a :class:`~visualpath.graph.Pathway` builds: ``forward(batch)`` trains,
``features(x, stream)`` probes.

Shared stages are one ``nn.ModuleList`` owned by the first stream that declares the area;
the other streams borrow it by reference, so the parameters are the same objects and a
``state_dict()`` stores them once, under the owner (``streams.ventral.stages.V1.*``). A
checkpoint of a ventral-only pathway therefore loads straight into a joint one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from visualpath.area import Decoder, TargetInput
from visualpath.masking import Mask, running_cell_subset
from visualpath.tokens import Layout, PatchEmbed, cached_position_table, normalize_pixels
from visualpath.vit import ViTSpec, init_embedding, init_weights

if TYPE_CHECKING:  # the declaration builds the model, never the other way round
    from visualpath.graph import Pathway, Stream

__all__ = ["PathwayModel", "PathwayOutput", "StreamOutput"]


@dataclass
class StreamOutput:
    """One stream's result.

    Attributes:
        loss: weighted sum of its area losses (scalar).
        losses: per-area MSE at masked tokens.
        predictions: per-area ``(B, K, P)`` predictions at the tokens ``predicted`` names.
        targets: per-area ``(B, K, P)`` targets at the same tokens.
        mask: the mask used.
        grid: token grid ``(t, h, w)`` or ``(h, w)``.
        sources: per-area target source (``"pixels"``, ``"cache"``, ``"sobel"``...).
        predicted: per-area ``(B, K)`` token indices of its predictions and targets:
            ``mask.masked``, or a subset with decoder masking (``DecoderSpec.keep < 1``).
    """

    loss: Tensor
    losses: dict[str, Tensor]
    predictions: dict[str, Tensor]
    targets: dict[str, Tensor]
    mask: Mask
    grid: tuple[int, ...]
    sources: dict[str, str] = field(default_factory=dict)
    predicted: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class PathwayOutput:
    """The pathway's result: ``loss = sum(stream.weight * stream loss)``."""

    loss: Tensor
    streams: dict[str, StreamOutput]

    @property
    def losses(self) -> dict[str, Tensor]:
        """Flat per-area losses keyed ``"stream.area"``, for logging."""
        return {f"{s}.{a}": v for s, o in self.streams.items() for a, v in o.losses.items()}


class StreamModule(nn.Module):
    """A stream's own parameters: embedding, owned stages, decoders."""

    def __init__(self, stream: Stream, spec: ViTSpec, owned: Sequence[str]) -> None:
        super().__init__()
        self.layout = Layout(
            stream.modality, spec.patch, spec.tube if stream.modality == "video" else 1, spec.channels
        )
        self.embed = PatchEmbed(self.layout, spec.width)
        self.stages = nn.ModuleDict()
        for name in owned:
            span = stream.block_span(name)
            self.stages[name] = nn.ModuleList(spec.block(i) for i in span)
        self.decoders = nn.ModuleDict(
            {
                a.name: Decoder(
                    spec.width, a.decoder, a.target_dim(self.layout), stream.pos_embed, spec.norm_eps
                )
                for a in stream.areas
                if a.has_readout
            }
        )

        self.feedback = nn.ModuleDict({link.key: TopDown(spec.width, spec.norm_eps) for link in stream.feedback})

    def positions(self, grid: tuple[int, ...], kind: str, like: Tensor) -> Tensor:
        return cached_position_table(kind, grid, self.embed.proj.out_channels, like.device)


class TopDown(nn.Module):
    """The map of a :class:`Feedback` link: ``tanh(gate) * Linear(LayerNorm(h))``, gate 0 at first."""

    def __init__(self, width: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.proj = nn.Linear(width, width)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.gate).to(h.dtype) * self.proj(self.norm(h))


class PathwayModel(nn.Module):
    """The built pathway: ``forward(batch)`` trains, ``features(x, stream)`` probes.

    Attributes:
        checkpointing: recompute each encoder block in the backward pass instead of keeping
            its activations (gradient checkpointing; training only): less memory, about one
            more forward's worth of compute.
    """

    def __init__(self, pathway: Pathway) -> None:
        super().__init__()
        self.pathway = pathway
        self.checkpointing = False
        self.owner = pathway.owners()
        self.streams = nn.ModuleDict()
        for s in pathway.streams:
            owned = [a.name for a in s.areas if self.owner[(s.name, a.name)] == (s.name, a.name)]
            self.streams[s.name] = StreamModule(s, pathway.encoder, owned)
        self.apply(init_weights)
        for module in self.streams.values():
            init_embedding(module.embed.proj)

    # ------------------------------------------------------------------ structure

    def stage(self, stream: str, area: str) -> nn.ModuleList:
        """The blocks of ``area``'s stage in ``stream`` (the owner's, if shared)."""
        owner_stream, owner_area = self.owner[(stream, area)]
        return self.streams[owner_stream].stages[owner_area]

    def blocks(self, stream: str) -> list[nn.Module]:
        """All encoder blocks of a stream, in order."""
        return [b for a in self.pathway.stream(stream).areas for b in self.stage(stream, a.name)]

    # ------------------------------------------------------------------ inputs

    def _select(self, stream: Stream, batch: Mapping[str, Tensor], mask: Mask | None = None) -> _Selected:
        """Pick this stream's pixels and side maps from the batch; checks shapes only.

        Also checks that the stream's mask rule fits the token grid, or, when a fixed
        ``mask`` is given, that it covers the grid.
        """
        layout = self.streams[stream.name].layout
        if stream.modality == "video":
            key, prefix = "video", ""
        elif "image" in batch or "video" not in batch:
            key, prefix = "image", "image_"
        else:
            key, prefix = "video", ""  # one frame per clip, chosen in _prepare
        if key not in batch:
            raise ValueError(
                f"stream {stream.name!r} reads batch[{key!r}]: expected {layout.expected}; the "
                f"batch has keys {sorted(batch)}"
            )
        x = batch[key]
        if not isinstance(x, Tensor):
            raise ValueError(f"batch[{key!r}] must be a tensor, got {type(x).__name__}")
        if key == "video" and x.ndim == 5 and stream.frame_step > 1:
            x = x[:, :, ::stream.frame_step]
        if key == "video" and stream.modality == "image":
            if x.ndim != 5:
                raise ValueError(
                    f"stream {stream.name!r} takes frames of batch['video']: expected (B, C, T, H, W), "
                    f"got shape {tuple(x.shape)}"
                )
            grid = layout.grid((x.shape[0], x.shape[1], *x.shape[3:]), name="batch['video'] frames")
        else:
            step = f" every {stream.frame_step} frames of" if stream.frame_step > 1 else ""
            grid = layout.grid(x.shape, name=f"{step.strip() + ' ' if step else ''}batch[{key!r}]")
        if mask is None:
            try:
                stream.mask.count(grid)
            except ValueError as err:
                raise ValueError(f"stream {stream.name!r}, input {tuple(x.shape)}: {err}") from None
        elif tuple(mask.hidden.shape) != (x.shape[0], math.prod(grid)):
            raise ValueError(
                f"mask for stream {stream.name!r} must cover (B, N) = {(x.shape[0], math.prod(grid))} "
                f"tokens, got {tuple(mask.hidden.shape)}"
            )
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"batch[{key!r}] must be uint8 or floating point, got {x.dtype}")
        maps = {}
        for name in stream.maps:
            m = batch.get(prefix + name)
            if m is None:
                continue
            if key == "video" and m.ndim == 4 and stream.frame_step > 1:
                m = m[:, ::stream.frame_step]
            expected = (x.shape[0], *x.shape[2:])
            if tuple(m.shape) != expected:
                raise ValueError(
                    f"batch[{prefix + name!r}] must be (B, [T,] H, W) = {expected} to match "
                    f"batch[{key!r}], got {tuple(m.shape)}"
                )
            maps[name] = m
        return _Selected(x, maps, key)

    def _prepare(self, stream: Stream, sel: _Selected, generator) -> tuple[Tensor, dict[str, Tensor]]:
        """uint8/float input -> float32 pixels in [0, 1] and ``(B, 1, [T,] H, W)`` maps,
        one frame per clip for an image stream fed clips."""
        x = sel.pixels
        pixels = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        maps = {}
        for name, m in sel.maps.items():  # uint8 maps in [0, 255] (binary: 0/255), bool, or float
            m = m.float() / 255 if m.dtype == torch.uint8 else m.float()
            maps[name] = m.unsqueeze(1)  # (B, 1, [T,] H, W)
        if sel.key == "video" and stream.modality == "image":
            B, T = x.shape[0], x.shape[2]
            t = torch.randint(T, (B,), device=x.device, generator=generator)
            rows = torch.arange(B, device=x.device)
            pixels = pixels[rows, :, t]  # (B, C, H, W)
            maps = {name: m[rows, :, t] for name, m in maps.items()}
        return pixels, maps

    def _tokens(self, stream: Stream, pixels: Tensor, grid: tuple[int, ...]) -> Tensor:
        module = self.streams[stream.name]
        tokens = module.embed(normalize_pixels(pixels))  # (B, N, D)
        return tokens + module.positions(grid, stream.pos_embed, tokens).to(tokens.dtype)

    def _visible_tokens(self, stream: Stream, pixels: Tensor, grid: tuple[int, ...], keep: Tensor) -> Tensor:
        """``_gather(self._tokens(...), keep)``, embedding only the tokens at ``keep``."""
        module = self.streams[stream.name]
        tokens = module.embed.visible(pixels, keep)  # (B, K, D)
        return tokens + module.positions(grid, stream.pos_embed, tokens).to(tokens.dtype)[keep]

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        batch: Mapping[str, Tensor],
        masks: Mapping[str, Mask] | None = None,
        generator: torch.Generator | None = None,
    ) -> PathwayOutput:
        """Masked prediction for every stream.

        Args:
            batch: dict of tensors (see :class:`Stream` for the keys each stream reads).
            masks: optional fixed masks per stream name; others are drawn by the stream's rule.
            generator: optional RNG for masks and frame picks.

        Raises:
            ValueError: before any compute, when an input does not fit its stream.
        """
        masks = dict(masks or {})
        unknown = set(masks) - set(self.streams)
        if unknown:
            raise ValueError(f"masks given for unknown streams {sorted(unknown)}; expected {list(self.streams)}")
        # Every input is checked before any compute.
        selected = {s.name: self._select(s, batch, masks.get(s.name)) for s in self.pathway.streams}
        outputs: dict[str, StreamOutput] = {}
        total = None
        for stream in self.pathway.streams:
            out = self._forward_stream(stream, batch, selected[stream.name], masks.get(stream.name), generator)
            outputs[stream.name] = out
            weighted = stream.weight * out.loss
            total = weighted if total is None else total + weighted
        return PathwayOutput(loss=total, streams=outputs)

    def _forward_stream(self, stream, batch, sel: _Selected, mask, generator) -> StreamOutput:
        """One stream's masked-modeling step: targets -> encoder on visible tokens ->
        each area's decoder at its readout block -> per-area MSE."""
        module = self.streams[stream.name]
        pixels, maps = self._prepare(stream, sel, generator)
        grid = module.layout.grid(pixels.shape)
        if mask is None:
            mask = stream.mask(pixels.shape[0], grid, device=pixels.device, generator=generator)
        inp = TargetInput(pixels=pixels, layout=module.layout, batch=batch, maps=maps)
        targets, sources, predicted = self.forward_targets(stream, inp, mask, grid, generator)
        h = self._visible_tokens(stream, pixels, grid, mask.keep)  # (B, N_visible, D)
        losses, predictions, loss, outputs = {}, {}, None, {}
        for name, h in self.forward_encoder(stream.name, h):
            outputs[name] = h
            if name in targets:
                reads = [outputs[r] for r in stream.area(name).decoder.reads]  # cross-layer inputs
                pred = self.forward_decoder(stream.name, name, h, mask.keep, predicted[name], grid, reads)
                predictions[name] = pred
                losses[name] = self.forward_loss(pred, targets[name])
                weighted = stream.area(name).weight * losses[name]
                loss = weighted if loss is None else loss + weighted
        if loss is None:
            loss = h.sum() * 0  # a stream of plain stages still joins the graph
        return StreamOutput(
            loss=loss, losses=losses, predictions=predictions, targets=targets,
            mask=mask, grid=grid, sources=sources, predicted=predicted,
        )

    def forward_targets(self, stream: Stream, inp: TargetInput, mask: Mask, grid: tuple[int, ...], generator=None
                        ) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Tensor]]:
        """Each reading area's target at the tokens it predicts, without grad, in float32.

        Returns:
            ``(targets, sources, predicted)``: ``{area: (B, K, P)}``, where each target came
            from, and ``{area: (B, K)}`` the token indices: ``mask.masked``, or a running-cell
            subset of it with decoder masking (``DecoderSpec.keep < 1``).
        """
        targets, sources, predicted = {}, {}, {}
        with torch.no_grad(), torch.autocast(inp.pixels.device.type, enabled=False):
            for area in stream.areas:
                if area.has_readout:
                    keep = area.decoder.keep
                    predicted[area.name] = mask.masked if keep >= 1 else \
                        running_cell_subset(mask.masked, grid, keep, generator)
                    targets[area.name] = _gather(area.loss_target(inp), predicted[area.name])
                    sources[area.name] = area.source(inp)
        return targets, sources, predicted

    def forward_encoder(self, stream: str, h: Tensor, by: str = "area") -> Iterator[tuple[str, Tensor]]:
        """The one block loop: run a stream's encoder blocks on tokens ``h`` ``(B, N, D)``
        (the visible ones in training) and yield ``(name, h)`` after each area's stage
        (``by="area"``; an area of 0 blocks reads the block before it) or after each block
        (``by="block"``: ``"block1"``, ``"block2"``, ...). Blocks are recomputed in the
        backward pass when ``checkpointing`` is on (training only)."""
        if by not in ("area", "block"):
            raise ValueError(f"by must be 'area' or 'block', got {by!r}")
        spec = self.pathway.stream(stream)
        if not spec.feedback:
            yield from self._run_stages(stream, spec.areas, h, by)
            return
        # Feedback: a first pass up to the last source, then a second from the first target on,
        # each target's input plus the gated top-down map of its sources' first-pass outputs.
        names = [a.name for a in spec.areas]
        first = min(names.index(link.target) for link in spec.feedback)
        last = max(names.index(link.source) for link in spec.feedback)
        before = 1 + sum(a.blocks for a in spec.areas[:first])  # block numbers go on from here
        inputs, outputs = {}, {}
        first_pass = list(self._run_stages(stream, spec.areas[:last + 1], h, by, inputs, outputs))
        yield from first_pass[:first if by == "area" else before - 1]  # the stages below every target
        top_down = self.streams[stream].feedback
        extra = {}
        for link in spec.feedback:
            signal = top_down[link.key](outputs[link.source])
            extra[link.target] = signal if link.target not in extra else extra[link.target] + signal
        yield from self._run_stages(stream, spec.areas[first:], inputs[names[first]], by, extra=extra,
                                    start=before)

    def _run_stages(self, stream: str, areas, h: Tensor, by: str, inputs: dict | None = None,
                    outputs: dict | None = None, extra: Mapping[str, Tensor] | None = None, start: int = 1
                    ) -> Iterator[tuple[str, Tensor]]:
        """Run the stages of ``areas`` in order on ``h``, blocks numbered from ``start``;
        ``extra[name]`` is added to a stage's input; ``inputs`` / ``outputs`` keep each
        stage's input and output by area name."""
        recompute = self.checkpointing and self.training
        index = start - 1
        for area in areas:
            if extra and area.name in extra:
                h = h + extra[area.name]
            if inputs is not None:
                inputs[area.name] = h
            for block in self.stage(stream, area.name):
                h = checkpoint(block, h, use_reentrant=False) if recompute else block(h)
                index += 1
                if by == "block":
                    yield f"block{index}", h
            if outputs is not None:
                outputs[area.name] = h
            if by == "area":
                yield area.name, h

    def forward_decoder(self, stream: str, area: str, h: Tensor, keep: Tensor, predicted: Tensor,
                        grid: tuple[int, ...], sources: Sequence[Tensor] = ()) -> Tensor:
        """``area``'s decoder: visible tokens ``h`` at ``keep`` (and the outputs of the stages
        its ``DecoderSpec.reads`` names, ``sources``) -> ``(B, K, P)`` predictions at the
        token indices ``predicted``."""
        return self.streams[stream].decoders[area](h, keep, predicted, grid, sources)

    @staticmethod
    def forward_loss(pred: Tensor, target: Tensor) -> Tensor:
        """MSE between predictions and targets at the predicted tokens (in float32)."""
        return F.mse_loss(pred.float(), target)

    def target_input(self, batch: Mapping[str, Tensor], stream: str, generator=None) -> TargetInput:
        """What one stream's areas compute their targets from, as training picks it from
        ``batch`` (its frames every ``frame_step``, an image stream's frame of a clip)."""
        s = self.pathway.stream(stream)
        pixels, maps = self._prepare(s, self._select(s, batch), generator)
        return TargetInput(pixels=pixels, layout=self.streams[stream].layout, batch=batch, maps=maps)

    @torch.no_grad()
    def targets(self, batch: Mapping[str, Tensor], stream: str, inp: TargetInput | None = None
                ) -> dict[str, Tensor]:
        """Every area's full ``(B, N, P)`` target for one stream, as the loss sees it
        (:meth:`~visualpath.Area.loss_target`; for figures and checks);
        ``inp``: this batch's :meth:`target_input`, when the caller already made it."""
        inp = inp if inp is not None else self.target_input(batch, stream)
        return {a.name: a.loss_target(inp) for a in self.pathway.stream(stream).areas if a.has_readout}

    def embed(self, x: Tensor, stream: str) -> Tensor:
        """Embedded tokens with positions of one stream's input, before any block and
        unmasked: ``(B, N, D)``. ``x`` is ``(B, C, [T,] H, W)``, uint8 or in [0, 1]; a stream
        with a ``frame_step`` takes every ``frame_step``-th frame of a clip."""
        if stream not in self.streams:
            raise ValueError(f"unknown stream {stream!r}; expected one of {list(self.streams)}")
        step = self.pathway.stream(stream).frame_step
        if step > 1 and x.ndim == 5:  # the frames this stream sees
            x = x[:, :, ::step]
        grid = self.streams[stream].layout.grid(x.shape, name=f"stream {stream!r} input")
        return self._tokens(self.pathway.stream(stream), x, grid)

    def features(
        self,
        x: Tensor,
        stream: str,
        mask: Mask | None = None,
        pooled: bool = False,
    ) -> dict[str, Tensor]:
        """Per-area token features of one stream.

        Args:
            x: the stream's input, ``(B, C, H, W)`` or ``(B, C, T, H, W)``, uint8 or [0, 1].
            stream: stream name.
            mask: optional mask; features then cover visible tokens only.
            pooled: mean over tokens, ``(B, D)`` per area.

        Returns:
            ``{area name: (B, N, D)}`` (or ``(B, D)``) outputs of each area's last block.
        """
        h = self.embed(x, stream)  # checks the stream and the input first
        if mask is not None:
            h = _gather(h, mask.keep)
        return {name: h.mean(1) if pooled else h for name, h in self.forward_encoder(stream, h)}


@dataclass
class _Selected:
    """A stream's raw input picked from the batch: pixels, side maps and the batch key."""

    pixels: Tensor
    maps: dict[str, Tensor]
    key: str


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b]]`` for ``(B, N, P)`` x and ``(B, K)`` index -> ``(B, K, P)``."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
