"""Shared fixtures: tiny pathways and real photographs bundled with scikit-image."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from skimage import data, transform

from areas import MTMotion, V1Gabor, V2Contour, V4Color
from visualpath import DecoderSpec, Pathway, RandomMask, Stream, TubeMask, vit_tiny

TINY_DECODER = DecoderSpec(width=64, depth=1, heads=2)

# The reader's trust store (visualpath.trust) of the whole test session, never the user's own:
# set before any test runs, so that commands the tests start in subprocesses share it.
_TRUST_DIR = tempfile.mkdtemp(prefix="visualpath-trust-")
atexit.register(shutil.rmtree, _TRUST_DIR, ignore_errors=True)  # the session's store goes with the session
os.environ["VISUALPATH_TRUST_FILE"] = os.path.join(_TRUST_DIR, "trusted_code.json")


def tiny_pathway(share="partial", depth_split=(1, 1, 2), **encoder) -> Pathway:
    """The paper's graph at test size: ViT-Ti width, 4 blocks, 64-wide decoders."""
    a, b, c = depth_split
    v1 = V1Gabor(blocks=a, decoder=TINY_DECODER)
    v2 = V2Contour(blocks=b, decoder=TINY_DECODER)
    return Pathway(
        encoder=vit_tiny(depth=a + b + c, **encoder),
        streams=[
            Stream("ventral", "image", [v1, v2, V4Color(blocks=c, decoder=TINY_DECODER)],
                   mask=RandomMask(0.75)),
            Stream("dorsal", "video", [v1, v2, MTMotion(blocks=c, decoder=TINY_DECODER)],
                   mask=TubeMask(0.75)),
        ],
        share=share,
    )


@pytest.fixture(scope="session")
def tiny_ucf101_run(tmp_path_factory):
    """One finished run of ``python -m recipes.bimm_ucf101 --variant tiny`` (every stage), shared
    by the tests that only read a run: exporting it, extracting and predicting with it, and
    finetuning another recipe from it. A test that changes a run makes its own."""
    import attrs

    from recipes import bimm_ucf101

    run = tmp_path_factory.mktemp("shared") / "run"
    bimm_ucf101.run(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(run), device="cpu"))
    return run


def accuracy_over(results: dict, key: str = "top1", count_key: str = "test_items") -> bool:
    """Whether ``results[key]`` is an accuracy over ``results[count_key]`` items: k / N for a
    whole k (an average over views, batches or classes would not be), and top-1 <= top-5."""
    value, count = results[key], results[count_key]
    whole = count > 0 and 0 <= value <= 1 and abs(value * count - round(value * count)) < 1e-4  # float32 accuracies
    return whole and results.get("top5", 1.0) >= value


def random_batch(b: int = 2, t: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "video": torch.randint(0, 256, (b, 3, t, size, size), dtype=torch.uint8, generator=g),
    }


def photo(name: str, size: int | None = None) -> np.ndarray:
    """A real RGB photograph from skimage.data as float64 in [0, 1], optionally resized."""
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float64) / 255.0
    if size is not None:
        img = transform.resize(img, (size, size), anti_aliasing=True)
    return img


@pytest.fixture
def photos() -> torch.Tensor:
    """Three real photographs, (3, 3, 64, 64) float32 in [0, 1]."""
    imgs = [photo(n, 64) for n in ("astronaut", "coffee", "chelsea")]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
