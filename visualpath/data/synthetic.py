"""The built-in synthetic action set: real compressed videos in UCF101's official layout.

Each class is a kind of motion of one textured object over a real photograph, so a single
frame cannot tell the classes apart and a model has to see motion:

=========================  =============================================================
class                      motion
=========================  =============================================================
TranslateLeft/Right/Up/Down  constant velocity across the frame
RotateClockwise/Counter      spin about the object's centre
Expand / Contract            exponential growth / shrinkage about the centre
OscillateHorizontal/Vertical sinusoidal back-and-forth
=========================  =============================================================

Nuisance variation: shape (ellipse, rectangle, triangle, cross), colour, texture (solid,
stripes, checks, moving with the object), size, position and the background (a random crop
of a photograph bundled with scikit-image). As in UCF101, where a group's clips share actor
and scene, the nuisance is drawn per (group, clip) and shared by all classes: appearance
carries no information about the class, so a model that memorises scenes gains nothing and
has to learn motion. Speed, phase and sensor noise are drawn per video.

The set is generated once, deterministically from a seed (same seed, same frames), as
MPEG-4 AVI files (the codec family of UCF101's XviD files) with ``classInd.txt``,
``trainlist0{1,2,3}.txt`` and ``testlist0{1,2,3}.txt`` written the official way (CRLF line
endings, 1-based labels, test lists without labels), so the demo uses the same loader as
real UCF101. Split ``k`` tests groups ``2k-1`` and ``2k``, as UCF101's splits hold out
whole groups.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import attrs
import av
import numpy as np

from visualpath._validate import positive

__all__ = ["SyntheticSpec", "CLASSES", "generate", "ensure_synthetic", "default_root"]

log = logging.getLogger(__name__)

CLASSES = (
    "TranslateLeft", "TranslateRight", "TranslateUp", "TranslateDown",
    "RotateClockwise", "RotateCounterClockwise", "Expand", "Contract",
    "OscillateHorizontal", "OscillateVertical",
)
SHAPES = ("ellipse", "rectangle", "triangle", "cross")
TEXTURES = ("solid", "stripes", "checks")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "brick", "coins", "hubble_deep_field")
FORMAT_VERSION = 1


@attrs.frozen(kw_only=True)
class SyntheticSpec:
    """Size of the generated set.

    Attributes:
        seed: generation seed; same seed, same videos.
        groups: groups per class (UCF101 has 25); split k tests groups 2k-1 and 2k.
        clips: clips per group.
        frames: frames per video.
        size: frame side in pixels.
        fps: frame rate written in the container.
    """

    seed: int = 0
    groups: int = attrs.field(default=8, validator=positive)
    clips: int = attrs.field(default=4, validator=positive)
    frames: int = attrs.field(default=32, validator=positive)
    size: int = attrs.field(default=128, validator=positive)
    fps: int = attrs.field(default=25, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.groups < 7:
            raise ValueError(f"SyntheticSpec.groups must be >= 7 (three test splits of two groups), got {self.groups}")


def default_root(spec: SyntheticSpec | None = None) -> Path:
    """Where a built-in set lives: ``$VISUALPATH_DATA`` or ``~/.cache/visualpath``, one
    folder per spec (``synthetic_ucf-s0-g8x4-f32-128px``)."""
    spec = spec or SyntheticSpec()
    base = os.environ.get("VISUALPATH_DATA") or Path.home() / ".cache" / "visualpath"
    name = f"synthetic_ucf-s{spec.seed}-g{spec.groups}x{spec.clips}-f{spec.frames}-{spec.size}px"
    return Path(base) / name


def _backgrounds(size: int) -> list[np.ndarray]:
    from skimage import data, transform

    out = []
    for name in PHOTOS:
        try:
            img = getattr(data, name)()
        except Exception:  # a photo that needs a download is simply not used
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3].astype(np.float32) / 255.0
        short = min(img.shape[:2])
        if short > 2 * size:  # shrink large photos once; crops are resized later anyway
            img = transform.rescale(img, 2 * size / short, channel_axis=-1, anti_aliasing=True)
        out.append(img.astype(np.float32))
    if not out:
        raise RuntimeError("no scikit-image photograph could be loaded for the backgrounds")
    return out


def _background(photos: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    from skimage import transform

    photo = photos[rng.integers(len(photos))]
    H, W = photo.shape[:2]
    side = int(rng.integers(min(H, W) // 2, min(H, W) + 1))
    top, left = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    crop = photo[top:top + side, left:left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return transform.resize(crop, (size, size), anti_aliasing=True).astype(np.float32)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of canonical coordinates (object radius 1) in the shape."""
    if shape == "ellipse":
        return u**2 + v**2 <= 1
    if shape == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= 0.6)
    if shape == "triangle":  # pointing along +u, so rotation is visible
        return (u >= -0.8) & (u <= 1) & (np.abs(v) <= 0.7 * (1 - u) / 1.8)
    return ((np.abs(u) <= 1) & (np.abs(v) <= 0.3)) | ((np.abs(v) <= 1) & (np.abs(u) <= 0.3) & (u > -0.2))


def _texture(kind: str, u: np.ndarray, v: np.ndarray, color: np.ndarray, rng_params: dict) -> np.ndarray:
    if kind == "solid":
        return np.broadcast_to(color, u.shape + (3,))
    if kind == "stripes":
        a = rng_params["angle"]
        phase = np.cos(2 * np.pi * rng_params["freq"] * (u * np.cos(a) + v * np.sin(a)))
    else:
        f = rng_params["freq"]
        phase = np.sign(np.sin(2 * np.pi * f * u) * np.sin(2 * np.pi * f * v))
    shade = 0.65 + 0.35 * phase[..., None]
    return np.clip(color * shade, 0, 1)


def _render(label: str, spec: SyntheticSpec, photos, scene: np.random.Generator,
            rng: np.random.Generator) -> np.ndarray:
    """One video, ``(frames, size, size, 3)`` uint8.

    ``scene`` draws the nuisance (background, shape, texture, colour, size, position) and is
    shared by every class of a (group, clip), as a UCF101 group shares actor and scene;
    ``rng`` draws the motion (speed, phase, noise) of this class.
    """
    S, N = spec.size, spec.frames
    bg = _background(photos, S, scene)
    shape = SHAPES[scene.integers(len(SHAPES))]
    texture = TEXTURES[scene.integers(len(TEXTURES))]
    color = scene.uniform(0.15, 1.0, 3).astype(np.float32)
    tex = {"angle": scene.uniform(0, np.pi), "freq": scene.uniform(1.0, 2.5)}
    radius = S * scene.uniform(0.12, 0.2)
    t = np.arange(N, dtype=np.float32)
    margin = radius * 1.3
    cx = np.full(N, scene.uniform(margin + S * 0.2, S - margin - S * 0.2))
    cy = np.full(N, scene.uniform(margin + S * 0.2, S - margin - S * 0.2))
    theta = np.full(N, scene.uniform(0, 2 * np.pi))
    scale = np.ones(N)
    travel = S - 2 * margin
    speed = travel / N * rng.uniform(0.7, 1.0)  # stays in frame for the whole clip
    start = margin + rng.uniform(0, travel - speed * N + 1e-3)
    if label == "TranslateLeft":
        cx = S - start - speed * t
    elif label == "TranslateRight":
        cx = start + speed * t
    elif label == "TranslateUp":
        cy = S - start - speed * t
    elif label == "TranslateDown":
        cy = start + speed * t
    elif label.startswith("Rotate"):
        omega = np.deg2rad(rng.uniform(3.0, 6.0)) * (1 if label == "RotateClockwise" else -1)
        theta = theta[0] + omega * t  # image y points down: positive angle turns clockwise
    elif label in ("Expand", "Contract"):
        growth = rng.uniform(1.6, 2.2) ** (1 / N)
        scale = growth ** (t if label == "Expand" else (N - 1 - t)) * 0.55
    elif label.startswith("Oscillate"):
        amplitude = S * rng.uniform(0.12, 0.2)
        period = rng.uniform(14, 24)
        offset = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        if label == "OscillateHorizontal":
            cx = cx + offset
        else:
            cy = cy + offset
    else:
        raise ValueError(f"unknown synthetic class {label!r}")

    ys, xs = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    noise = rng.normal(0, 0.015, (N, S, S, 3)).astype(np.float32)
    video = np.empty((N, S, S, 3), dtype=np.uint8)
    for i in range(N):
        dx, dy = xs - cx[i], ys - cy[i]
        c, s = np.cos(theta[i]), np.sin(theta[i])
        r = radius * scale[i]
        u = (dx * c + dy * s) / r
        v = (-dx * s + dy * c) / r
        inside = _shape_mask(shape, u, v)[..., None]
        frame = np.where(inside, _texture(texture, u, v, color, tex), bg)
        video[i] = np.clip((frame + noise[i]) * 255 + 0.5, 0, 255).astype(np.uint8)
    return video


def _write_avi(path: Path, video: np.ndarray, fps: int) -> None:
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 900_000
        stream.codec_context.gop_size = 12  # keyframes every 12 frames, as XviD files have
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _video_name(label: str, group: int, clip: int) -> str:
    return f"{label}/v_{label}_g{group:02d}_c{clip:02d}.avi"


def generate(root: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the set under ``root`` (``UCF-101/`` and ``ucfTrainTestlist/``); returns ``root``.

    Writes into a temporary folder beside ``root`` and renames it into place, so an
    interrupted generation never leaves a half-written set.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        photos = _backgrounds(spec.size)
        videos = tmp / "UCF-101"
        lists = tmp / "ucfTrainTestlist"
        lists.mkdir(parents=True)
        names: dict[str, list[str]] = {c: [] for c in CLASSES}
        for ci, label in enumerate(CLASSES):
            (videos / label).mkdir(parents=True)
            for g in range(1, spec.groups + 1):
                for k in range(1, spec.clips + 1):
                    scene = np.random.default_rng([spec.seed, g, k])
                    rng = np.random.default_rng([spec.seed, g, k, ci + 1])
                    name = _video_name(label, g, k)
                    _write_avi(videos / name, _render(label, spec, photos, scene, rng), spec.fps)
                    names[label].append(name)
        crlf = "\r\n"
        (lists / "classInd.txt").write_bytes(
            "".join(f"{i + 1} {c}{crlf}" for i, c in enumerate(CLASSES)).encode()
        )
        for split in (1, 2, 3):
            test_groups = {2 * split - 1, 2 * split}
            train, test = [], []
            for ci, label in enumerate(CLASSES):
                for name in names[label]:
                    group = int(name.split("_g")[1][:2])
                    (test if group in test_groups else train).append((name, ci + 1))
            (lists / f"trainlist0{split}.txt").write_bytes("".join(f"{n} {c}{crlf}" for n, c in train).encode())
            (lists / f"testlist0{split}.txt").write_bytes("".join(f"{n}{crlf}" for n, _ in test).encode())
        manifest = {"format": FORMAT_VERSION, "spec": attrs.asdict(spec), "classes": list(CLASSES)}
        (tmp / "visualpath_synthetic.json").write_text(json.dumps(manifest, indent=2))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def ensure_synthetic(root: str | os.PathLike | None = None, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Return the set's root, generating it first if absent or made with another spec."""
    root = Path(root) if root is not None else default_root(spec)
    manifest = root / "visualpath_synthetic.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if found.get("format") == FORMAT_VERSION and found.get("spec") == attrs.asdict(spec):
            return root
    log.info("generating the built-in synthetic action set in %s", root)
    return generate(root, spec)
