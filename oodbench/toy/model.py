"""The toy CLIP: a small open_clip CLIP (ViT image tower, text transformer) for the toy world."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from oodbench.errors import BackboneError

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "toy_clip.safetensors"
CONTEXT_LENGTH = 32

# Written like an open_clip model config json: open_clip.CLIP(**TOY_MODEL_CONFIG) builds the model.
TOY_MODEL_CONFIG: dict = {
    "embed_dim": 128,
    "quick_gelu": False,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 8,
        "width": 128,
        "layers": 2,
        "head_width": 32,
        "mlp_ratio": 4.0,
    },
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": 49408,
        "width": 128,
        "heads": 4,
        "layers": 4,
    },
}

# The ViT's patch embedding `visual.conv1` is replaced by a ConvStem (6 GroupNorm 3x3 convs + 1x1)
# with the same 8x8 token grid; everything else (blocks, class token, attention, projection) is
# stock open_clip.
TOY_CONV_STEM = True

# Test-time preprocessing the harness must use:
# PNG -> RGB -> resize 64 -> center-crop 64 -> ToTensor -> normalise.
TOY_PREPROCESS: dict = {
    "image_size": 64,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


class ConvStem(nn.Module):
    """Convolutional patch embedding: per stage two 3x3 convs (the first strided), GroupNorm, GELU.

    Same 8x8 token grid as an 8-pixel patch embedding, but with a conv net's locality prior: on
    2 CPU cores the plain patch-embedding ViT learned the toy shapes several times slower.
    """

    def __init__(
        self, width: int, patch_size: int, channels: tuple[int, ...] = (32, 64, 128)
    ) -> None:
        super().__init__()
        if 2 ** len(channels) != patch_size:
            stride = 2 ** len(channels)
            raise ValueError(f"a {len(channels)}-stage stem has stride {stride}, not {patch_size}")
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            for stride in (2, 1):
                layers += [
                    nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False),
                    nn.GroupNorm(8, c),
                    nn.GELU(),
                ]
                c_in = c
        layers.append(nn.Conv2d(c_in, width, 1, bias=False))
        self.stem = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """Weight of the last convolution, for code that reads `visual.conv1.weight.dtype`."""
        return self.stem[-1].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, width, H / patch, W / patch) patch embeddings."""
        return self.stem(x)


def build_toy_clip(config: dict | None = None) -> open_clip.CLIP:
    """Randomly initialised toy CLIP (deterministic given the torch seed), conv stem included."""
    cfg = copy.deepcopy(config or TOY_MODEL_CONFIG)
    model = open_clip.CLIP(**cfg)
    if TOY_CONV_STEM:
        vis = cfg["vision_cfg"]
        model.visual.conv1 = ConvStem(vis["width"], vis["patch_size"])
    return model


def toy_tokenizer() -> SimpleTokenizer:
    """open_clip's standard BPE tokenizer (vocab 49408), toy context length; works offline."""
    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def check_weights_sha256(path: Path) -> None:
    """Refuse weights whose sha256 differs from the one recorded beside them (``sha256`` in the
    ``.json`` that training writes): a flipped bit loads silently and gives NaN features."""
    try:
        want = json.loads(Path(path).with_suffix(".json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        want = None
    if not want:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    if h.hexdigest() != want:
        raise BackboneError(
            f"toy CLIP weights {path} are damaged: their sha256 is {h.hexdigest()}, not the "
            f"recorded {want}. Reinstall oodbench (pip install --force-reinstall oodbench, or "
            "git checkout the file) or retrain them: python -m oodbench.toy.train")


def load_toy_clip(path: Path | None = None) -> open_clip.CLIP:
    """Toy CLIP in eval mode with the shipped weights (fp16 on disk, fp32 in memory)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise BackboneError(
            f"toy CLIP weights not found at {path}; run: python -m oodbench.toy.train"
        )
    check_weights_sha256(path)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model = build_toy_clip()
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess_array(images: torch.Tensor) -> torch.Tensor:
    """Normalise a uint8 batch (N, H, W, 3) exactly as the test-time transform does."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(TOY_PREPROCESS["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(TOY_PREPROCESS["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def toy_transform():
    """Test-time torchvision transform for toy PNGs (resize, center-crop, ToTensor, normalise)."""
    from torchvision import transforms as T

    size = TOY_PREPROCESS["image_size"]
    return T.Compose(
        [
            T.Lambda(lambda im: im.convert("RGB")),
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(TOY_PREPROCESS["mean"], TOY_PREPROCESS["std"]),
        ]
    )
