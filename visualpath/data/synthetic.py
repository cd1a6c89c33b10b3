"""The built-in synthetic sets: real compressed videos in UCF101's official layout, and a
small ImageNet-layout image set.

Each video class is a motion of the whole view over a static scene (a plaid with two
textured, outlined shapes on it), as a camera would film it, so a single frame cannot tell
the classes apart and a model has to see motion:

==============================  ==========================================================
class                           motion of the scene on screen
==============================  ==========================================================
TranslateLeft/Right/Up/Down     constant velocity, 35-50% of the frame over the clip
RotateClockwise/Counter         roll about the frame centre, 2.5-5 degrees per frame
Expand / Contract               zoom in / out by 1.5-1.9x over the clip
OscillateHorizontal/Vertical    sinusoidal back-and-forth, period 14-24 frames
==============================  ==========================================================

Motion fills every token of a clip, so every token carries the class. As in UCF101, where a
group's clips share actor and scene, the scene is drawn per (group, clip) and shared by all
classes: appearance carries no information about the class. Speed, phase and the view's
start are drawn per video.

The scene is made so that each area's target carries structure that a masked model can
infer at the tokens it does not see (decision S2 in docs/decisions.md):

- the backdrop is a plaid (``GRATINGS``, ``GRATING_PERIOD``): one colour whose luminance is
  modulated by a grating of contrast 0.3 and a faint one of 0.1 at 45-135 degrees from it,
  periods a quarter to half a frame (2-4 patches of the demo). The targets are standardised
  per token, so a masked token's target is the structure inside its patch: which way a
  stripe runs and where its phase is (V1's Gabor energies), the pixels (V4), how the stripes
  move across it (MT). A regular backdrop makes these inferable from the tokens a 0.75 or
  0.9 mask leaves visible (the measurements behind each choice are in S2). The faint grating shows
  motion along the strong one's stripes (the aperture problem), so every class is visible
  in every part of the frame;
- ``OBJECTS`` large (``RADIUS``) outlined shapes, lit as domes and filled with solid colour
  or low-frequency stripes and checks (``TEXTURE_FREQ``): the contours for V2 and the
  objects in the reconstructions; two, not six, because every occluding shape is structure
  a masked token cannot infer;
- sensor noise is half a grey level (``NOISE``): per-token standardised targets (V1, V4,
  MT) turn any noise in a flat patch into a unit-variance target no model can predict.

The set is generated once, deterministically from a seed (same seed, same frames), as
MPEG-4 AVI files (the codec family of UCF101's XviD files) with ``classInd.txt``,
``trainlist0{1,2,3}.txt`` and ``testlist0{1,2,3}.txt`` written the official way (CRLF line
endings, 1-based labels, test lists without labels), so the demo uses the same loader as
real UCF101. Split ``k`` tests groups ``2k-1`` and ``2k``, as UCF101's splits hold out
whole groups.
"""

from __future__ import annotations

import contextlib
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

__all__ = ["SyntheticSpec", "CLASSES", "generate", "ensure_synthetic", "default_root", "ImageSpec",
           "generate_images", "ensure_synthetic_images"]

log = logging.getLogger(__name__)

CLASSES = (
    "TranslateLeft", "TranslateRight", "TranslateUp", "TranslateDown",
    "RotateClockwise", "RotateCounterClockwise", "Expand", "Contract",
    "OscillateHorizontal", "OscillateVertical",
)
SHAPES = ("ellipse", "rectangle", "triangle", "cross")
TEXTURES = ("solid", "stripes", "checks")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "brick", "coins", "hubble_deep_field")
FORMAT_VERSION = 4
BACKGROUND_CONTRAST = 0.5  # of the image set's photographs
GRATINGS = (0.3, 0.1)  # contrast of each sinusoidal luminance grating of a video scene's plaid backdrop
GRATING_PERIOD = (0.25, 0.5)  # grating period range, in frame sides (2-4 patches of the demo)
NOISE = 0.002  # sensor noise (standard deviation, in [0, 1] intensity), half a grey level
CANVAS = 2.0  # scene side in frame sides: room for the camera's travel, roll and zoom
OBJECTS = 2  # outlined, shaded shapes placed in each video scene (zero to two in view)
RADIUS = (0.2, 0.35)  # object radius range, in frame sides
TEXTURE_FREQ = (0.6, 1.5)  # stripe / check frequency range, in cycles per object radius
RIM = 0.15  # width of the object's dark or light outline, in object radii


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
    return _cache_dir() / f"synthetic_ucf-s{spec.seed}-g{spec.groups}x{spec.clips}-f{spec.frames}-{spec.size}px"


def _cache_dir() -> Path:
    """``$VISUALPATH_DATA`` or ``~/.cache/visualpath``: where the built-in sets are generated."""
    return Path(os.environ.get("VISUALPATH_DATA") or Path.home() / ".cache" / "visualpath")


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


def _background(photos: list[np.ndarray], side: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of a photograph, flipped half the time, ``side`` pixels wide, with
    its contrast muted so the image's object stands out."""
    from skimage import transform

    photo = photos[rng.integers(len(photos))]
    H, W = photo.shape[:2]
    crop_side = int(rng.integers(min(H, W) // 2, min(H, W) + 1))
    top, left = int(rng.integers(0, H - crop_side + 1)), int(rng.integers(0, W - crop_side + 1))
    crop = photo[top:top + crop_side, left:left + crop_side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = transform.resize(crop, (side, side), anti_aliasing=True).astype(np.float32)
    mean = crop.mean(axis=(0, 1), keepdims=True)
    return mean + BACKGROUND_CONTRAST * (crop - mean)


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
    """The fill at canonical coordinates ``u, v``, lit as a dome from ``rng_params["light"]``:
    shading varies smoothly across every patch of an object, so no patch of it is flat."""
    lx, ly = rng_params["light"]
    light = np.clip(0.75 + 0.25 * (lx * u + ly * v) - 0.2 * (u**2 + v**2), 0.3, 1.0)[..., None]
    if kind == "solid":
        return np.clip(color * light, 0, 1)
    if kind == "stripes":
        a = rng_params["angle"]
        phase = np.cos(2 * np.pi * rng_params["freq"] * (u * np.cos(a) + v * np.sin(a)))
    else:
        f = rng_params["freq"]
        phase = np.sign(np.sin(2 * np.pi * f * u) * np.sin(2 * np.pi * f * v))
    shade = 0.65 + 0.35 * phase[..., None]
    return np.clip(color * shade * light, 0, 1)


def _draw_object(canvas: np.ndarray, shape: str, size: int, rng: np.random.Generator,
                 centre: tuple[float, float] | None = None) -> np.ndarray:
    """``canvas`` with one textured, outlined ``shape`` of radius ``RADIUS`` times ``size`` on it."""
    side = canvas.shape[0]
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    color = rng.uniform(0.15, 1.0, 3).astype(np.float32)
    rim = np.float32(0.0 if color.mean() > 0.5 else 1.0)  # an outline that contrasts with the fill
    light = rng.uniform(0, 2 * np.pi)
    tex = {"angle": rng.uniform(0, np.pi), "freq": rng.uniform(*TEXTURE_FREQ), "light": (np.cos(light), np.sin(light))}
    radius = size * rng.uniform(*RADIUS)
    cx, cy = centre if centre is not None else rng.uniform(0.2 * side, 0.8 * side, 2)
    theta = rng.uniform(0, 2 * np.pi)
    dx, dy = xs - cx, ys - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / radius
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / radius
    inside = _shape_mask(shape, u, v)[..., None]
    core = _shape_mask(shape, u / (1 - RIM), v / (1 - RIM))[..., None]
    return np.where(core, _texture(texture, u, v, color, tex), np.where(inside, rim, canvas))


def _plaid(side: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side``-pixel backdrop of one colour whose luminance is modulated by sinusoidal
    gratings, one per entry of ``GRATINGS`` (its contrast), with periods ``GRATING_PERIOD``
    times the frame ``size``, random phases, and each at least 45 degrees from the one before:
    a plaid, the stimulus with which V1 and MT tuning is mapped. A single grating would hide any
    motion along its stripes (the aperture problem); the faint second one shows it. The
    contrasts add to less than 1 and no channel exceeds 0.7 before modulation, so no pixel
    clips."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    colour = rng.uniform(0.25, 0.7, 3).astype(np.float32)
    angle = rng.uniform(0, np.pi)
    modulation = np.ones((side, side), dtype=np.float32)
    for contrast in GRATINGS:
        period = size * rng.uniform(*GRATING_PERIOD)
        along = xs * np.cos(angle) + ys * np.sin(angle)
        modulation += contrast * np.cos(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        angle += rng.uniform(np.pi / 4, 3 * np.pi / 4)
    return colour * modulation[..., None]


def _scene(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """The static world a group's clips film: a plaid (``_plaid``) with ``OBJECTS`` textured,
    outlined shapes on it, ``CANVAS`` times the frame's side so the camera never leaves it."""
    side = int(round(CANVAS * spec.size))
    canvas = _plaid(side, spec.size, rng)
    for _ in range(OBJECTS):
        canvas = _draw_object(canvas, SHAPES[rng.integers(len(SHAPES))], spec.size, rng)
    return canvas.astype(np.float32)


def _camera(label: str, N: int, S: int, rng: np.random.Generator):
    """Per-frame view of the scene for a class, as the scene appears to move on screen:
    ``shift`` ``(N, 2)`` (x, y pixels, y down), ``roll`` (radians, positive turns the scene
    clockwise on screen) and ``zoom`` (> 1 magnifies)."""
    t = np.arange(N, dtype=np.float64)
    shift = np.zeros((N, 2))
    roll = np.zeros(N)
    zoom = np.ones(N)
    if label.startswith("Translate"):
        speed = S * rng.uniform(0.35, 0.5) / N  # the scene travels 35-50% of the frame
        axis, sign = {"Left": (0, -1), "Right": (0, 1), "Up": (1, -1), "Down": (1, 1)}[label[len("Translate"):]]
        shift[:, axis] = sign * speed * (t - (N - 1) / 2)
    elif label.startswith("Rotate"):
        omega = np.deg2rad(rng.uniform(2.5, 5.0))
        roll = (1 if label == "RotateClockwise" else -1) * omega * (t - (N - 1) / 2)
    elif label in ("Expand", "Contract"):
        growth = rng.uniform(1.5, 1.9) ** (1 / (N - 1))
        zoom = growth ** (t if label == "Expand" else (N - 1 - t))
    elif label.startswith("Oscillate"):
        amplitude = S * rng.uniform(0.08, 0.14)
        period = rng.uniform(14, 24)
        axis = 0 if label == "OscillateHorizontal" else 1
        shift[:, axis] = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown synthetic class {label!r}")
    return shift, roll, zoom


def _render(label: str, spec: SyntheticSpec, scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One video, ``(frames, size, size, 3)`` uint8: the camera moves over ``scene`` (shared by
    every class of a (group, clip), as a UCF101 group shares actor and scene) as ``label``
    says; ``rng`` draws this video's speed, phase, start pose and sensor noise."""
    from scipy import ndimage

    S, N = spec.size, spec.frames
    shift, roll, zoom = _camera(label, N, S, rng)
    start = rng.uniform(-0.12, 0.12, 2) * S  # where the camera points at mid-clip
    centre = scene.shape[0] / 2
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5 - S / 2  # frame coordinates about its centre
    noise = rng.normal(0, NOISE, (N, S, S, 3)).astype(np.float32)
    video = np.empty((N, S, S, 3), dtype=np.uint8)
    for i in range(N):
        # screen point p shows scene point centre + start + R(-roll) (p - shift) / zoom
        px, py = xs - shift[i, 0], ys - shift[i, 1]
        c, s = np.cos(-roll[i]), np.sin(-roll[i])
        sx = centre + start[0] + (c * px - s * py) / zoom[i] - 0.5
        sy = centre + start[1] + (s * px + c * py) / zoom[i] - 0.5
        frame = np.stack([ndimage.map_coordinates(scene[..., ch], [sy, sx], order=1, mode="reflect")
                          for ch in range(3)], axis=-1)
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


def test_groups(split: int) -> set[int]:
    """The groups split ``split`` tests (``2k-1`` and ``2k``): UCF101's splits hold out whole groups."""
    return {2 * split - 1, 2 * split}


def train_videos(spec: SyntheticSpec, split: int = 1) -> int:
    """How many videos split ``split`` of the set ``spec`` describes trains on (known before
    the set is generated)."""
    groups = sum(g not in test_groups(split) for g in range(1, spec.groups + 1))
    return len(CLASSES) * groups * spec.clips


def generate(root: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the set under ``root`` (``UCF-101/`` and ``ucfTrainTestlist/``); returns ``root``.

    Writes into a temporary folder beside ``root`` and renames it into place, so an
    interrupted generation never leaves a half-written set.
    """
    def fill(tmp: Path) -> None:
        videos = tmp / "UCF-101"
        lists = tmp / "ucfTrainTestlist"
        lists.mkdir(parents=True)
        names: dict[str, list[str]] = {c: [] for c in CLASSES}
        for label in CLASSES:
            (videos / label).mkdir(parents=True)
        for g in range(1, spec.groups + 1):
            for k in range(1, spec.clips + 1):
                scene = _scene(spec, np.random.default_rng([spec.seed, g, k]))
                for ci, label in enumerate(CLASSES):
                    rng = np.random.default_rng([spec.seed, g, k, ci + 1])
                    name = _video_name(label, g, k)
                    _write_avi(videos / name, _render(label, spec, scene, rng), spec.fps)
                    names[label].append(name)
        crlf = "\r\n"
        (lists / "classInd.txt").write_bytes(
            "".join(f"{i + 1} {c}{crlf}" for i, c in enumerate(CLASSES)).encode()
        )
        for split in (1, 2, 3):
            train, test = [], []
            for ci, label in enumerate(CLASSES):
                for name in names[label]:
                    group = int(name.split("_g")[1][:2])
                    (test if group in test_groups(split) else train).append((name, ci + 1))
            (lists / f"trainlist0{split}.txt").write_bytes("".join(f"{n} {c}{crlf}" for n, c in train).encode())
            (lists / f"testlist0{split}.txt").write_bytes("".join(f"{n}{crlf}" for n, _ in test).encode())

    return _write_set(Path(root), spec, CLASSES, fill)


def _is_current(root: Path, spec) -> bool:
    manifest = root / "visualpath_synthetic.json"
    if not manifest.is_file():
        return False
    found = json.loads(manifest.read_text())
    return found.get("format") == FORMAT_VERSION and found.get("spec") == attrs.asdict(spec)


def _write_set(root: Path, spec, classes, fill) -> Path:
    """Run ``fill(tmp)`` in a temporary folder beside ``root``, add the manifest and rename it
    into place, so an interrupted generation never leaves a half-written set."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        fill(tmp)
        manifest = {"format": FORMAT_VERSION, "spec": attrs.asdict(spec), "classes": list(classes)}
        (tmp / "visualpath_synthetic.json").write_text(json.dumps(manifest, indent=2))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


@contextlib.contextmanager
def _one_writer(root: Path):
    """Hold an exclusive lock beside ``root`` (``.<name>.lock``) while a set is checked and
    generated: the processes of a ``torchrun`` job (one per GPU, on every node) all ask for the
    set, and one generates it while the others wait, then find it current. Where the
    filesystem has no ``flock`` the set is generated without it (each writer renames a
    complete folder into place)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(root.parent / f".{root.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # no flock here (some NFS or Lustre mounts)
            log.warning("cannot lock %s (%s): generating without a lock", root, err.strerror)
        yield
    finally:
        os.close(fd)


def ensure_synthetic(root: str | os.PathLike | None = None, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Return the set's root, generating it first if absent or made with another spec (one
    process at a time, :func:`_one_writer`)."""
    root = Path(root) if root is not None else default_root(spec)
    if _is_current(root, spec):
        return root
    with _one_writer(root):
        if not _is_current(root, spec):  # another process may have made it while this one waited
            log.info("generating the built-in synthetic action set in %s", root)
            generate(root, spec)
    return root


# --------------------------------------------------------------------------- still images


@attrs.frozen(kw_only=True)
class ImageSpec:
    """Size of the built-in image set (the ventral stream's stand-in for ImageNet).

    One outlined, textured object on a muted photograph per image; the class is the object's
    shape (``SHAPES``), so colour, texture, size, pose and background carry no class.

    Attributes:
        seed: generation seed.
        train: training images per class.
        val: validation images per class.
        size: image side in pixels.
    """

    seed: int = 0
    train: int = attrs.field(default=100, validator=positive)
    val: int = attrs.field(default=25, validator=positive)
    size: int = attrs.field(default=96, validator=positive)


def default_image_root(spec: ImageSpec | None = None) -> Path:
    """``$VISUALPATH_DATA`` or ``~/.cache/visualpath``, one folder per spec."""
    spec = spec or ImageSpec()
    return _cache_dir() / f"synthetic_shapes-s{spec.seed}-{spec.train}x{spec.val}-{spec.size}px"


def generate_images(root: str | os.PathLike, spec: ImageSpec = ImageSpec()) -> Path:
    """Write ``train/<shape>/*.png`` and ``val/<shape>/*.png`` under ``root`` (atomically)."""
    from PIL import Image

    def fill(tmp: Path) -> None:
        photos = _backgrounds(spec.size)
        for part, count in (("train", spec.train), ("val", spec.val)):
            for ci, shape in enumerate(SHAPES):
                folder = tmp / part / shape
                folder.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([spec.seed, part == "val", ci, i])
                    canvas = _background(photos, spec.size, rng)
                    centre = tuple(rng.uniform(0.3 * spec.size, 0.7 * spec.size, 2))
                    image = _draw_object(canvas, shape, spec.size * 2, rng, centre)
                    image = image + rng.normal(0, 0.015, image.shape)
                    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{shape}_{i:04d}.png")

    return _write_set(Path(root), spec, SHAPES, fill)


def ensure_synthetic_images(root: str | os.PathLike | None = None, spec: ImageSpec = ImageSpec()) -> Path:
    """Return the image set's root, generating it first if absent or made with another spec
    (one process at a time)."""
    root = Path(root) if root is not None else default_image_root(spec)
    if _is_current(root, spec):
        return root
    with _one_writer(root):
        if not _is_current(root, spec):
            log.info("generating the built-in synthetic image set in %s", root)
            generate_images(root, spec)
    return root
