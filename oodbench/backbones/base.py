"""The Backbone object every detector and the feature extractor use, and its registry base class.

A backbone is an open_clip model (image and text towers), its tokenizer, the preprocessing that
belongs to its weights, a precision, and an identity (architecture, weights, their hash) that goes
into every cache key and result record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from oodbench.data.images import Preprocess, normalize
from oodbench.errors import BackboneError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Backbone:
    """A loaded image-text model ready to encode; ``identity`` names exactly which weights."""

    name: str
    model: Any
    tokenizer: Any
    preprocess: Preprocess
    precision: str
    identity: dict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the towers run in."""
        return DTYPES[self.precision]

    def key(self) -> dict:
        """Everything about the model that changes the bytes of an embedding."""
        return {**self.identity, "precision": self.precision}

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text space."""
        return int(self.model.text_projection.shape[1])

    @torch.inference_mode()
    def encode_text(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised float32 text embeddings (N, D) on the backbone's device."""
        outs = []
        for i in range(0, len(prompts), batch_size):
            tokens = self.tokenizer(prompts[i : i + batch_size]).to(self.device)
            with _autocast(self.device, self.dtype):
                f = encode_tokens(self.model, tokens)
            outs.append(F.normalize(f.float(), dim=-1))
        if not outs:
            return torch.empty(0, self.embed_dim, device=self.device)
        return torch.cat(outs)

    def prepare_images(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW (any device) -> normalised tensor in the model's dtype on its device."""
        x = images_uint8.to(self.device, non_blocking=True)
        return normalize(x, self.preprocess, dtype=self.dtype)

    @torch.inference_mode()
    def encode_image(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 global image embeddings (N, D)."""
        x = self.prepare_images(images_uint8)
        with _autocast(self.device, self.dtype):
            f = self.model.encode_image(x)
        return F.normalize(f.float(), dim=-1)

    def to(self, device: torch.device | str) -> Backbone:
        """Move the model to ``device`` (in place) and return self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self


def encode_tokens(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, run only up to the batch's last end-of-text token.

    With a causal mask and end-of-text pooling, the padding after that token cannot change the
    pooled feature, so the result is the same (to rounding) at a fraction of the cost: CLIP
    prompts are ~10 of 77 tokens. Models without a causal mask or EOT pooling (HF towers, SigLIP)
    get the full forward.
    """
    pool = getattr(model, "text_pool_type", None)
    parts = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if (getattr(model, "attn_mask", None) is None or pool not in ("argmax", "eos")
            or not all(hasattr(model, a) for a in parts) or tokens.ndim != 2):
        return model.encode_text(tokens)
    if pool == "argmax":
        eot = tokens.argmax(dim=-1)
    else:
        eot = (tokens == model.text_eos_id).int().argmax(dim=-1)
    n = int(eot.max()) + 1
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :n]).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _autocast(device: torch.device, dtype: torch.dtype):
    """Autocast for reduced precision on CUDA; a no-op in fp32 or on CPU (weights cast instead)."""
    enabled = device.type == "cuda" and dtype != torch.float32
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


class BackboneDef:
    """Registry base: knows how to load one named backbone (or family of specs)."""

    description: ClassVar[str] = ""

    def load(
        self,
        spec: str,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        preprocess: dict | None = None,
    ) -> Backbone:
        """Load the backbone named ``spec``."""
        raise NotImplementedError

    def check(self, spec: str) -> None:
        """Refuse ``spec`` before any data work when it cannot load (unknown architecture or tag,
        weights absent offline), saying what to do; cheap, builds no model. Default: accept."""


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read weights safely (safetensors, or torch.load with weights_only=True; never a pickle).

    Unwraps training checkpoints ({'state_dict': ...}) and strips DataParallel 'module.' prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # SafetensorError for a damaged or foreign file
            raise BackboneError(
                f"cannot read weights {path} ({type(e).__name__}: {e}); the file is damaged or "
                "not a safetensors file. Download or save it again"
            ) from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BackboneError(
                f"cannot read weights {path} safely ({type(e).__name__}: {e}). oodbench loads with "
                "weights_only=True and never unpickles code; re-save the state dict with "
                "torch.save(model.state_dict(), ...) or as .safetensors"
            ) from None
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
            break
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {path} does not hold a state dict")
    odd = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise BackboneError(f"weights file {path} is not a state dict of tensors: "
                            f"{', '.join(odd[:10])}{' ...' if len(odd) > 10 else ''} "
                            "hold other values")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def apply_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` strictly, reporting missing and unexpected keys one by one."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shape:
        lines = [f"weights {source} do not match the architecture:"]
        lines += [f"  missing key: {k}" for k in missing[:20]]
        lines += [f"  unexpected key: {k}" for k in unexpected[:20]]
        lines += [f"  shape mismatch: {s}" for s in shape[:20]]
        more = (
            len(missing)
            + len(unexpected)
            + len(shape)
            - min(20, len(missing))
            - min(20, len(unexpected))
            - min(20, len(shape))
        )
        if more > 0:
            lines.append(f"  ... and {more} more")
        raise BackboneError("\n".join(lines))
    model.load_state_dict(sd, strict=True)


def finish(model: torch.nn.Module, device: str | torch.device, precision: str) -> torch.nn.Module:
    """Eval mode, requested precision, device."""
    if precision not in DTYPES:
        raise BackboneError(f"precision {precision!r} unknown; use one of {sorted(DTYPES)}")
    model.eval()
    dev = torch.device(device)
    model.to(dev)
    if precision != "fp32" and dev.type != "cuda":
        model.to(DTYPES[precision])
    return model


def preprocess_for(default: Preprocess, overrides: dict | None) -> Preprocess:
    """The weights' own preprocessing with the user's overrides applied (unknown keys refused)."""
    if not overrides:
        return default
    allowed = set(default.to_dict())
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise BackboneError(f"unknown preprocessing field(s) {bad}; allowed: {sorted(allowed)}")
    d = default.to_dict() | {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()
    }
    return Preprocess(**d)
