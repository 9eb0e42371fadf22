"""open_clip backbones: ``ARCH:TAG`` (a pretrained tag), ``ARCH:/path/to/weights``, ``ARCH:random``.

Nothing is downloaded unless the user allows it: with ``HF_HUB_OFFLINE=1`` (or no network) a
missing pretrained tag fails at once with instructions for supplying the weights.

``ARCH:random`` builds the architecture with open_clip's own initialisation under a fixed seed: the
real code path (image size, patch grid, tokenizer, towers) at full cost with no weights at all, for
smoke runs on machines without them. Its numbers mean nothing; the record's backbone identity says
``random_weights: true`` so that leaderboards can leave such runs out.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import torch

from oodbench.backbones.base import (
    Backbone,
    BackboneDef,
    apply_state_dict,
    file_sha256,
    finish,
    load_state_dict_file,
    preprocess_for,
)
from oodbench.data.images import Preprocess
from oodbench.errors import BackboneError
from oodbench.registry import UnknownNameError


def split_spec(spec: str) -> tuple[str, str]:
    """'ViT-B-16:openai' -> ('ViT-B-16', 'openai'); the weights part may be a path with colons."""
    if ":" not in spec:
        raise BackboneError(f"backbone {spec!r} must be ARCH:WEIGHTS, e.g. ViT-B-16:openai")
    arch, weights = spec.split(":", 1)
    return arch, weights


def looks_like_path(weights: str) -> bool:
    """True for a local checkpoint file rather than a pretrained tag."""
    return (
        "/" in weights
        or "\\" in weights
        or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )


def weights_preprocess(model: torch.nn.Module) -> Preprocess:
    """The preprocessing that travels with open_clip weights (size, interpolation, mean/std)."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return Preprocess(
        resize=size,
        crop=size,
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", Preprocess().mean)),
        std=tuple(cfg.get("std", Preprocess().std)),
    )


RANDOM = "random"
RANDOM_SEED = 0


class OpenClipBackbone(BackboneDef):
    """Any open_clip architecture with a pretrained tag, a local checkpoint, or random weights."""

    description = ("open_clip ARCH:TAG, ARCH:/path/to/weights, or ARCH:random (smoke runs; never "
                   "ranked), e.g. ViT-B-16:openai")

    def check(self, spec: str) -> None:
        """Architecture known to open_clip; a path that is a file; a tag open_clip knows for the
        architecture whose weights are in the local cache (or may be downloaded: online)."""
        import open_clip

        arch, weights = split_spec(spec)
        if arch not in open_clip.list_models():
            err = UnknownNameError("open_clip architecture", arch, open_clip.list_models())
            err.message = err.message.replace("`oodbench list open_clip architectures` describes "
                                              "each", "`oodbench list backbones` lists their tags")
            raise err
        if weights == RANDOM:
            return
        if looks_like_path(weights):
            path = Path(weights).expanduser()
            if not path.is_file():
                raise BackboneError(f"weights file {path} does not exist (backbone {spec}); pass "
                                    f"the checkpoint's path, or {arch}:{RANDOM} for a smoke run")
            return
        tags = list(open_clip.list_pretrained_tags_by_model(arch))
        if weights not in tags:
            raise unknown_tag(arch, weights, tags)
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not weights_present(arch, weights):
            raise missing_weights(arch, weights, "the weights are not in the local cache "
                                  "(Hugging Face hub or ~/.cache/clip)")

    def load(self, spec, device="cpu", precision="fp32", preprocess=None) -> Backbone:
        import open_clip

        arch, weights = split_spec(spec)
        if arch not in open_clip.list_models():
            raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
        if weights == RANDOM:
            with torch.random.fork_rng(devices=[]), quiet_open_clip():
                torch.manual_seed(RANDOM_SEED)
                model = open_clip.create_model(arch, pretrained=None)
            identity = {"arch": arch, "weights": RANDOM, "init_seed": RANDOM_SEED,
                        "random_weights": True}
        elif looks_like_path(weights):
            path = Path(weights).expanduser()
            sd = load_state_dict_file(path)  # refuse a bad file before building the model
            with quiet_open_clip():  # its "initialized randomly" is untrue once the file loads
                model = open_clip.create_model(arch, pretrained=None)
            apply_state_dict(model, sd, str(path))
            identity = {"arch": arch, "weights": str(path.resolve()), "sha256": file_sha256(path)}
        else:
            tags = list(open_clip.list_pretrained_tags_by_model(arch))
            if weights not in tags:
                raise unknown_tag(arch, weights, tags)
            model = _create_pretrained(open_clip, arch, weights)
            identity = {"arch": arch, "weights": weights}
        model = finish(model, device, precision)
        pp = preprocess_for(weights_preprocess(model), preprocess)
        return Backbone(
            spec,
            model,
            open_clip.get_tokenizer(arch),
            pp,
            precision,
            identity,
            torch.device(device),
        )


def weights_present(arch: str, tag: str) -> bool:
    """Whether open_clip would find the weights of ``arch:tag`` without a download: in the Hugging
    Face hub cache (the safetensors file or the pickle open_clip falls back to) or, for a URL, in
    ``~/.cache/clip``."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if cfg.get("file"):
        return Path(cfg["file"]).expanduser().is_file()
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        repo, filename = os.path.split(hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    url = cfg.get("url", "")
    return bool(url) and (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file()


def pretrained_table() -> list[tuple[str, str, bool]]:
    """(architecture, tag, weights present locally) for every pretrained weight open_clip knows."""
    import open_clip

    return [(arch, tag, weights_present(arch, tag)) for arch, tag in open_clip.list_pretrained()]


def missing_weights(arch: str, tag: str, cause: str) -> BackboneError:
    """The error for weights that cannot be loaded: why, and the three ways to go on."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    make = _via_make()
    if offline and make:
        why = ("HF_HUB_OFFLINE=1 is set (the Makefile sets it unless you run make with "
               "HF_HUB_OFFLINE=0), so nothing is downloaded.\n")
    elif offline:
        why = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded.\n"
    else:
        why = ""
    use = (f"make bench ... BACKBONE={arch}:/path/to/weights.safetensors" if make
           else f"--backbone {arch}:/path/to/weights.safetensors")
    return BackboneError(
        f"could not load weights {arch}:{tag} ({cause}).\n"
        + why
        + "To supply them: on a machine with network run\n"
        f"  python -c \"import open_clip; "
        f"open_clip.create_model('{arch}', pretrained='{tag}')\"\n"
        "and copy the Hugging Face cache (~/.cache/huggingface) here, "
        f"or download the checkpoint file and pass it as a path: {use}. For a smoke run of "
        f"the same architecture without weights: {arch}:{RANDOM} (`oodbench list backbones` "
        "marks the weights present here)")


def unknown_tag(arch: str, tag: str, tags: list[str]) -> UnknownNameError:
    """The error for a tag open_clip does not know for ``arch``, with the close ones and the
    command that lists them (there is no ``oodbench list`` for tags)."""
    known = [*tags, RANDOM]
    close = difflib.get_close_matches(tag, known, n=3, cutoff=0.5)
    err = UnknownNameError(f"pretrained tag of {arch}", tag, known)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    err.message = (
        f"open_clip has no pretrained tag {tag!r} for {arch}.{hint} Its tags: "
        f"{', '.join(tags) or 'none'}; or {arch}:{RANDOM} for random weights (smoke runs), or "
        f"{arch}:/path/to/weights for a local file. `python -c \"import open_clip; "
        f"print(open_clip.list_pretrained_tags_by_model('{arch}'))\"` lists the tags; `oodbench "
        "list backbones` the papers' presets.")
    return err


_OPEN_CLIP_NOISE = ("No pretrained weights loaded", "Failed to download weights",
                    "Pretrained tag or path")


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's root-logger lines that oodbench replaces with its own message.

    open_clip logs "No pretrained weights loaded ... initialized randomly" whenever it builds a
    model without a tag, although oodbench then loads every tensor of a local checkpoint (or
    wants random weights), and it logs an ``ERROR:root:`` line before raising on a failed
    download, which oodbench reports in full. Other log lines pass.
    """
    def drop(record: logging.LogRecord) -> bool:
        return not (record.pathname.replace("\\", "/").endswith("open_clip/factory.py")
                    and str(record.msg).startswith(_OPEN_CLIP_NOISE))

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _via_make() -> bool:
    """True when oodbench runs under ``make`` (which exports MAKELEVEL to its commands)."""
    return "MAKELEVEL" in os.environ


def _create_pretrained(open_clip, arch: str, tag: str):
    try:
        with quiet_open_clip():
            return open_clip.create_model(arch, pretrained=tag)
    except Exception as e:
        cause = " ".join(str(e).split())
        prefix = f"Failed to download weights for tag '{tag}': "
        cause = textwrap.shorten(cause.removeprefix(prefix), 400, placeholder=" ...")
        raise missing_weights(arch, tag, f"{type(e).__name__}: {cause}") from None
