"""Image-feature extraction: once per (backbone, preprocessing, manifest, kind), chunked, resumable.

The data path, from disk to features:

- loader workers (sized to the machine's cores, shared between ``torchrun`` ranks) decode and
  resize on the CPU and collate uint8 batches (4x less to pin and copy than float);
- on CUDA the batches are pinned, and a :class:`Prefetcher` copies batch k+1 to the device on a
  side stream while batch k is encoded; scaling and mean/std normalisation happen on the device;
- encoding runs under ``torch.inference_mode``; a CUDA out-of-memory error halves the batch and
  retries (:class:`BatchBackoff`), and the smaller size is kept for the rest of the run;
- kinds that one forward pass can give together (``global`` and ``local``: see
  :func:`register_joint`) are encoded by one pass when they are extracted together, after a check
  on the first batch that the joint pass gives the very bytes of the kinds' own encoders;
- optionally (``decode="device"``) JPEG files are decoded by ``torchvision.io.decode_jpeg`` on the
  backbone's device (nvJPEG on a GPU) and resized there; a file it cannot decode falls back to the
  CPU reader. Before use this path is checked against the reference one on a sample of the set
  (per-image cosine of the embeddings), and the decoder is part of the cache key.

Each chunk of ``chunk_size`` images is saved atomically as soon as it is done, so a killed
extraction resumes from the finished chunks; when all are done they are joined into one cache
entry. Under ``torchrun`` the missing chunks are shared between the ranks (see
:mod:`oodbench.features.distributed`) and rank 0 joins them into the same entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from oodbench.data.images import (
    BOXED_ASPECT,
    ImageListDataset,
    Preprocess,
    collate_uint8,
    load_rgb,
    resize_crop,
)
from oodbench.data.manifest import Manifest
from oodbench.errors import BackboneError, ConfigError, DataError
from oodbench.features import distributed
from oodbench.features.cache import Cache
from oodbench.io import atomic_save_npy
from oodbench.progress import say

EXTRACTOR_VERSION = "1"
DEFAULT_CHUNK = 4096
DECODES = ("cpu", "device")
DECODE_CHECK_SAMPLE = 16
DECODE_MIN_COSINE = 0.99
JPEG_MAGIC = b"\xff\xd8\xff"

# kind -> (encoder(backbone, uint8 batch) -> tensor, storage dtype)
KIND_ENCODERS: dict[str, tuple[Callable, np.dtype]] = {
    "global": (lambda bb, x: bb.encode_image(x), np.dtype(np.float32)),
}

# kinds -> encoder(backbone, uint8 batch) -> one tensor per kind, from one forward pass
JOINT_ENCODERS: dict[tuple[str, ...], Callable] = {}

# (backbone key, manifest digest, device type) -> did the device decoder pass its check?
_DECODE_VERDICTS: dict[tuple[str, str, str], bool] = {}

# (backbone key, device type, kinds) -> does the joint encoder give the kinds' own bytes?
_JOINT_VERDICTS: dict[tuple[str, str, tuple[str, ...]], bool] = {}


def register_kind(kind: str, encoder: Callable, dtype: np.dtype) -> None:
    """Add a feature kind (e.g. ``local`` patch embeddings) the runner can extract and cache."""
    KIND_ENCODERS[kind] = (encoder, np.dtype(dtype))


def register_joint(kinds: tuple[str, ...], encoder: Callable) -> None:
    """An encoder giving several kinds from one forward pass: ``encoder(backbone, uint8 batch)``
    returns one tensor per kind, in the order of ``kinds``.

    It is used when all of ``kinds`` are extracted together. Its output must equal, byte for byte,
    what each kind's own encoder gives (the cache key does not say how a kind was computed); this
    is checked on two images of the first batch for each backbone, and where it does not hold the
    kinds' own encoders are used instead.
    """
    JOINT_ENCODERS[tuple(kinds)] = encoder


def feature_spec(backbone, manifest: Manifest, kind: str, decode: str = "cpu") -> dict:
    """Everything that changes the bytes of one feature array (its cache key).

    ``decode="device"`` adds the device decoder to the key, unless that decoder failed its check
    for this set, in which case the CPU reference path was used and the key says so.
    """
    spec = {
        "backbone": backbone.key(),
        "preprocess": backbone.preprocess.to_dict(),
        "manifest": manifest.digest(),
        "root": str(manifest.root.resolve()),
        "n": len(manifest),
        "kind": kind,
        "dtype": str(KIND_ENCODERS[kind][1]),
        "extractor": EXTRACTOR_VERSION,
    }
    if effective_decode(backbone, manifest, decode) == "device":
        spec["decode"] = device_decoder_id(backbone.device)
    return spec


def device_decoder_id(device: torch.device) -> dict:
    """Which decoder and resizer the device path uses (their output differs from PIL's slightly)."""
    import torchvision

    return {"mode": "device", "decoder": "nvjpeg" if device.type == "cuda" else "libjpeg",
            "resize": "torch-antialias", "torchvision": torchvision.__version__}


def effective_decode(backbone, manifest: Manifest, decode: str) -> str:
    """``decode``, or ``cpu`` when the device decoder failed its check on this set."""
    if decode not in DECODES:
        raise ConfigError(f"decode {decode!r} unknown; use one of {list(DECODES)}")
    if decode == "device" and _DECODE_VERDICTS.get(_verdict_key(backbone, manifest)) is False:
        return "cpu"
    return decode


def _verdict_key(backbone, manifest: Manifest) -> tuple[str, str, str]:
    return (repr(sorted(backbone.key().items())), manifest.digest(), backbone.device.type)


@dataclass
class ExtractStats:
    """What one extraction did, for the result record."""

    hits: dict[str, bool] = field(default_factory=dict)
    images_encoded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    decode: str = "cpu"
    decode_check: dict | None = None
    decode_fallbacks: int = 0
    batch_size: int | None = None


def default_workers(local_ranks: int | None = None) -> int:
    """Loader workers sized to the machine: its usable cores shared between the local ranks,
    one per rank left for the process that drives the device (at most 16 per rank)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    ranks = local_ranks or distributed.local_world_size()
    return max(0, min(16, cores // ranks - 1))


def loader_workers(requested: int | None, n_batches: int) -> int:
    """Workers for one loader: as requested, else the machine's share, never more than useful.

    With a single batch a worker only adds its start-up time, so none is started.
    """
    if requested is not None:
        if requested < 0:
            raise ConfigError(f"workers must be >= 0, got {requested}")
        return requested
    return min(default_workers(), max(0, n_batches - 1))


def extract(
    backbone,
    manifest: Manifest,
    kinds: list[str],
    cache: Cache,
    batch_size: int = 128,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress=None,
    stats: ExtractStats | None = None,
    decode: str = "cpu",
) -> dict[str, np.ndarray]:
    """Features of every image in ``manifest`` for each kind, from the cache or freshly encoded.

    ``decode="device"`` decodes JPEG files on the backbone's device after checking that path
    against the CPU reference on a sample (see the module docstring).
    """
    stats = stats if stats is not None else ExtractStats()
    for kind in kinds:
        if kind not in KIND_ENCODERS:
            raise KeyError(f"unknown feature kind {kind!r}; known: {sorted(KIND_ENCODERS)}")
    out, missing = _load_cached(backbone, manifest, kinds, cache, decode, stats)
    if missing and decode == "device" and _verdict_key(backbone, manifest) not in _DECODE_VERDICTS:
        check = check_device_decode(backbone, manifest)
        stats.decode_check = check
        _DECODE_VERDICTS[_verdict_key(backbone, manifest)] = check["ok"]
        if not check["ok"]:
            say(f"[yellow]device JPEG decoding disagrees with the CPU reader on {manifest.name} "
                f"(min cosine {check['min_cosine']:.4f} < {DECODE_MIN_COSINE}); "
                "decoding on the CPU instead[/]")
            out, missing = _load_cached(backbone, manifest, kinds, cache, "cpu", stats)
    stats.decode = effective_decode(backbone, manifest, decode)
    if missing:
        out.update(_extract_missing(backbone, manifest, missing, cache, batch_size, workers,
                                    chunk_size, progress, stats))
    return out


def _load_cached(backbone, manifest, kinds, cache, decode, stats):
    """(cached arrays, kinds still missing) under the key of decode mode ``decode``."""
    out, missing = {}, []
    for kind in kinds:
        arr = cache.load("images", feature_spec(backbone, manifest, kind, decode))
        stats.hits[kind] = arr is not None
        if arr is not None:
            out[kind] = arr
        else:
            missing.append(kind)
    return out, missing


def _chunk_name(lo: int, hi: int) -> str:
    return f"{lo:09d}-{hi:09d}.npy"


def _extract_missing(backbone, manifest, kinds, cache, batch_size, workers, chunk_size,
                     progress, stats) -> dict[str, np.ndarray]:
    n = len(manifest)
    decode = stats.decode
    specs = {k: feature_spec(backbone, manifest, k, decode) for k in kinds}
    dirs = {k: cache.chunk_dir("images", specs[k]) for k in kinds}
    world = distributed.world_size()
    chunk_size = distributed.balanced_chunk_size(n, chunk_size, batch_size, world)
    ranges = [(lo, min(n, lo + chunk_size)) for lo in range(0, n, chunk_size)]
    todo = [r for r in ranges if not all((dirs[k] / _chunk_name(*r)).is_file() for k in kinds)]
    stats.chunks_reused += len(ranges) - len(todo)
    distributed.barrier()  # every rank has listed the same finished chunks before any writes
    mine = distributed.shard(todo)
    if mine:
        task = progress.add_task(f"extract {manifest.name}", total=n, extra=backbone.name) \
            if progress is not None else None
        if task is not None:
            progress.update(task, completed=n - sum(hi - lo for lo, hi in todo))
        for (lo, hi), feats in _encode_chunks(backbone, manifest, kinds, mine, batch_size,
                                              workers, progress, task, stats):
            for k in kinds:
                check_finite(feats[k], manifest, k, lo)
                atomic_save_npy(dirs[k] / _chunk_name(lo, hi), feats[k])
            stats.images_encoded += hi - lo
    distributed.barrier()
    if distributed.is_main():
        _join_chunks(cache, manifest, specs, dirs, ranges)
    distributed.barrier()
    out = {}
    for k in kinds:
        out[k] = cache.load("images", specs[k])
        if out[k] is None:
            raise DataError(f"features of {manifest.name} ({k}) missing from the cache "
                            f"{cache.root} after extraction; under torchrun every rank must see "
                            "the same cache folder (pass a shared --cache-dir)")
    return out


def check_finite(feats: np.ndarray, manifest: Manifest, kind: str, lo: int = 0) -> None:
    """Refuse features with NaN or inf (rows ``lo``.. of ``manifest``), naming the set and the
    images, before they are saved: nothing downstream could score them."""
    bad = np.flatnonzero(~np.isfinite(feats.reshape(len(feats), -1)).all(1)) if feats.size else []
    if len(bad) == 0:
        return
    shown = ", ".join(str(manifest.absolute(lo + int(i))) for i in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    raise DataError(
        f"the backbone gave non-finite (NaN or inf) {kind} features for {len(bad)} image(s) of "
        f"set {manifest.name!r}: {shown}{more}; they were not cached. Check the backbone's "
        "weights (a damaged checkpoint gives NaN), try --precision fp32 (fp16 can overflow), "
        "and look at these images")


def _join_chunks(cache, manifest, specs, dirs, ranges) -> None:
    """Concatenate the chunk files of each kind into its cache entry, then drop the chunks."""
    for k, spec in specs.items():
        files = [dirs[k] / _chunk_name(*r) for r in ranges]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise DataError(f"chunks {absent[:3]} of {manifest.name} ({k}) are missing in "
                            f"{dirs[k]}: under torchrun every rank must write to the same cache "
                            "folder (pass a shared --cache-dir)")
        parts = [np.load(f) for f in files]
        arr = np.concatenate(parts) if parts else np.zeros((0,), KIND_ENCODERS[k][1])
        cache.save("images", spec, arr, source=manifest.name)
        shutil.rmtree(dirs[k], ignore_errors=True)


def _encode_chunks(backbone, manifest, kinds, ranges, batch_size, workers, progress, task,
                   stats) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    """Yield ((lo, hi), {kind: array}) for each image range in ``ranges``, in order."""
    batches = [(r, list(range(i, min(r[1], i + batch_size))))
               for r in ranges for i in range(r[0], r[1], batch_size)]
    device = backbone.device
    loader = make_loader(manifest, backbone.preprocess, [b for _, b in batches],
                         loader_workers(workers, len(batches)), device, stats.decode)
    if stats.decode == "device":
        def transfer(batch):
            return decode_on_device(batch, manifest, backbone.preprocess, device, stats)
    else:
        def transfer(batch):
            return batch[0].to(device, non_blocking=True), batch[1]
    backoff = BatchBackoff(batch_size)
    plan = encoder_plan(backbone, kinds)
    current, acc = None, {k: [] for k in kinds}
    with torch.inference_mode():
        for (r, _), (images, _) in zip(batches, Prefetcher(loader, device, transfer),
                                           strict=True):
            if current is not None and r != current:
                yield current, _to_numpy(acc, kinds)
                acc = {k: [] for k in kinds}
            current = r
            checked = False
            for group, enc in plan:
                if len(group) > 1 and _joint_key(backbone, group) not in _JOINT_VERDICTS:
                    checked = True
                    if not _check_joint(backbone, group, enc, images):
                        enc = _separately(group)
                feats = backoff(lambda x, enc=enc: enc(backbone, x), images)
                for k, f in zip(group, feats, strict=True):
                    acc[k].append(f.to("cpu", non_blocking=True))
            if checked:
                plan = encoder_plan(backbone, kinds)  # a failed check switches to single passes
            if task is not None:
                progress.advance(task, len(images))
    stats.batch_size = backoff.size
    if current is not None:
        yield current, _to_numpy(acc, kinds)


def encoder_plan(backbone, kinds: list[str]) -> list[tuple[tuple[str, ...], Callable]]:
    """How to encode ``kinds``: (kinds of one pass, encoder returning a tuple of tensors) pairs.

    A joint encoder covers its kinds when all of them are asked for and it has not failed its
    check for this backbone; every other kind gets a pass of its own encoder.
    """
    plan, left = [], list(kinds)
    for group, enc in JOINT_ENCODERS.items():
        if all(k in left for k in group) and \
                _JOINT_VERDICTS.get(_joint_key(backbone, group)) is not False:
            plan.append((group, enc))
            left = [k for k in left if k not in group]
    for k in left:
        single = KIND_ENCODERS[k][0]
        plan.append(((k,), lambda bb, x, single=single: (single(bb, x),)))
    return plan


def _joint_key(backbone, group) -> tuple[str, str, tuple[str, ...]]:
    return (repr(sorted(backbone.key().items())), backbone.device.type, tuple(group))


def _check_joint(backbone, group, enc, images, sample: int = 2) -> bool:
    """Whether the joint pass equals the kinds' own encoders on the batch's first ``sample``
    images (a few forwards, not a batch's worth); the verdict is remembered for the backbone."""
    x = images[:sample]
    own = tuple(KIND_ENCODERS[k][0](backbone, x) for k in group)
    same = all(torch.equal(a, b) for a, b in zip(enc(backbone, x), own, strict=True))
    _JOINT_VERDICTS[_joint_key(backbone, group)] = same
    if not same:
        say(f"[yellow]the joint encoder of {'+'.join(group)} differs from the kinds' own "
            f"encoders on {backbone.name}; encoding them in separate passes[/]")
    return same


def _separately(group) -> Callable:
    """An encoder giving ``group``'s kinds from their own encoders, one pass each."""
    return lambda bb, x: tuple(KIND_ENCODERS[k][0](bb, x) for k in group)


def _to_numpy(acc: dict[str, list[torch.Tensor]], kinds) -> dict[str, np.ndarray]:
    """Join one chunk's batches (waiting for their asynchronous device-to-host copies)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return {k: torch.cat(acc[k]).numpy().astype(KIND_ENCODERS[k][1], copy=False) for k in kinds}


def make_loader(manifest: Manifest, pp: Preprocess, batches: list[list[int]], workers: int,
                device: torch.device, decode: str = "cpu") -> torch.utils.data.DataLoader:
    """A DataLoader over ``batches`` of manifest indices: uint8 batches, pinned for CUDA.

    With ``decode="device"`` it yields the raw bytes of JPEG files (decoded later on the device)
    and CPU-decoded uint8 images for every other format.
    """
    if decode == "device":
        dataset, collate = EncodedImageDataset(manifest, pp), collate_encoded
    else:
        dataset, collate = ImageListDataset(manifest, pp), collate_uint8
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


class Prefetcher:
    """Iterate a loader one batch ahead, moving batch k+1 to the device while batch k is used.

    On CUDA, ``transfer`` (copy, and optionally decode) runs on a side stream and the consumer's
    stream waits for it only when it takes the batch, so copies overlap compute. On other devices
    the same look-ahead runs without streams.
    """

    def __init__(self, loader: Iterable, device: torch.device, transfer: Callable):
        self.loader, self.device, self.transfer = loader, torch.device(device), transfer

    def __iter__(self) -> Iterator:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        pending = None
        for batch in self.loader:
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                ready = self.transfer(batch)
            if pending is not None:
                yield pending
            if cuda:
                main = torch.cuda.current_stream(self.device)
                main.wait_stream(stream)
                for t in ready:
                    if isinstance(t, torch.Tensor) and t.is_cuda:
                        t.record_stream(main)
            pending = ready
        if pending is not None:
            yield pending


class BatchBackoff:
    """Apply ``fn`` to a batch in sub-batches of ``size``, halving ``size`` on out-of-memory.

    The reduced size is kept for later batches, so one OOM costs one retry, not one per batch.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``fn(x)`` computed in sub-batches that fit in memory, concatenated (element by element
        when ``fn`` returns a tuple of tensors)."""
        outs, i = [], 0
        while i < len(x):
            n = min(self.size, len(x) - i)
            try:
                outs.append(fn(x[i : i + n]))
                i += n
            except torch.OutOfMemoryError:
                if n == 1:
                    raise BackboneError("out of device memory even with one image per batch; "
                                        "use --precision fp16/bf16 or a device with more "
                                        "memory") from None
                self.size = max(1, n // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                say(f"[yellow]out of memory: batch size halved to {self.size}[/]")
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
        return torch.cat(outs)


class EncodedImageDataset:
    """A map-style dataset yielding the raw bytes of JPEG files, decoded images otherwise.

    Items are (1-D uint8 tensor of file bytes, index) for JPEGs and (CHW uint8 tensor, index),
    already resized and cropped by the CPU reader, for every other format.
    """

    def __init__(self, manifest: Manifest, pp: Preprocess):
        self.manifest, self.pp = manifest, pp

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.manifest.absolute(i)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"image {path} does not exist") from None
        if data[:3] == JPEG_MAGIC:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), i
        return _cpu_image(path, self.pp), i


def collate_encoded(batch: list[tuple[torch.Tensor, int]]):
    """Keep the variable-length items as a list (they are decoded one by one or in a batch)."""
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch], dtype=torch.long)


def _cpu_image(path: Path, pp: Preprocess) -> torch.Tensor:
    """The reference path: PIL decode, resize and crop, as a CHW uint8 tensor."""
    arr = resize_crop(load_rgb(path), pp)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def decode_jpegs(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG byte tensors to RGB CHW uint8 on ``device``; None for a file it cannot decode.

    One batched call first (fast with nvJPEG); when it fails, file by file to find the bad ones.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 marks its decoders deprecated
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        out: list[torch.Tensor | None] = []
        for d in datas:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def resize_crop_tensor(img: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """On-device twin of :func:`oodbench.data.images.resize_crop`: CHW uint8 -> 3 x crop x crop.

    Same output size and crop box as the PIL path; antialiased interpolation makes the pixels
    agree with PIL's to within rounding for downscaling.
    """
    _, h, w = img.shape
    if w <= h:  # the same sizes as the CPU path (torchvision Resize(int) semantics)
        nw, nh = pp.resize, int(pp.resize * h / w)
    else:
        nw, nh = int(pp.resize * w / h), pp.resize
    if max(nw, nh) > BOXED_ASPECT * pp.resize:  # thin: the CPU path's bounded resize
        arr = resize_crop(Image.fromarray(img.permute(1, 2, 0).cpu().numpy()), pp)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()).to(img.device)
    if (nw, nh) != (w, h):
        x = img.unsqueeze(0).float()
        if pp.interpolation == "nearest":
            x = F.interpolate(x, size=(nh, nw), mode="nearest-exact")
        else:
            x = F.interpolate(x, size=(nh, nw), mode=pp.interpolation, antialias=True,
                              align_corners=False)
        img = x.round_().clamp_(0, 255).to(torch.uint8)[0]
    left = int(round((nw - pp.crop) / 2.0))
    top = int(round((nh - pp.crop) / 2.0))
    return img[:, top : top + pp.crop, left : left + pp.crop]


def decode_on_device(batch, manifest: Manifest, pp: Preprocess, device: torch.device,
                     stats: ExtractStats | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated ``EncodedImageDataset`` batch -> (uint8 N x 3 x crop x crop on device, index).

    JPEGs the device decoder rejects are read by the CPU reference path instead (counted in
    ``stats.decode_fallbacks``); a file neither can read raises DataError naming it.
    """
    items, index = batch
    jpeg = [j for j, t in enumerate(items) if t.dim() == 1]
    decoded = dict(zip(jpeg, decode_jpegs([items[j] for j in jpeg], device), strict=True))
    out = []
    for j, t in enumerate(items):
        if j not in decoded:
            out.append(t.to(device, non_blocking=True))
        elif decoded[j] is None:
            if stats is not None:
                stats.decode_fallbacks += 1
            out.append(_cpu_image(manifest.absolute(int(index[j])), pp).to(device))
        else:
            out.append(resize_crop_tensor(decoded[j], pp))
    return torch.stack(out), index


def check_device_decode(backbone, manifest: Manifest, sample: int = DECODE_CHECK_SAMPLE,
                        min_cosine: float = DECODE_MIN_COSINE) -> dict:
    """Compare device decoding with the CPU reference on an evenly spaced sample of ``manifest``.

    Returns ``{"ok", "min_cosine", "mean_cosine", "n"}``: the per-image cosine between the global
    embeddings of the two paths, and whether its minimum reaches ``min_cosine``.
    """
    part = manifest.limit(sample)
    idx = list(range(len(part)))
    if not idx:
        return {"ok": True, "min_cosine": 1.0, "mean_cosine": 1.0, "n": 0}
    enc = KIND_ENCODERS["global"][0]
    dev = backbone.device
    ref_batch = collate_uint8([ImageListDataset(part, backbone.preprocess)[i] for i in idx])
    dev_batch = collate_encoded([EncodedImageDataset(part, backbone.preprocess)[i] for i in idx])
    with torch.inference_mode():
        a = enc(backbone, ref_batch[0].to(dev)).float()
        b = enc(backbone, decode_on_device(dev_batch, part, backbone.preprocess, dev)[0]).float()
        cos = F.cosine_similarity(a, b, dim=1)
    lo, mean = float(cos.min()), float(cos.mean())
    return {"ok": lo >= min_cosine, "min_cosine": lo, "mean_cosine": mean, "n": len(idx)}
