"""Extraction throughput: the full pipeline from JPEG files vs the model forward alone.

For each model, on the same generated ImageNet-sized JPEGs, batch size and device:

- ``pipeline``: ``oodbench.features.extract`` into an empty cache (read, decode, resize, collate,
  copy, normalise, encode, write), with CPU decoding in loader workers and, with ``--decode``,
  decoding on the device (nvJPEG on a GPU; torchvision's decoder in the main process on a CPU);
- ``forward``: the same batches already decoded and resized in memory, through ``encode_image``.

The ratio pipeline / forward says how close the data path is to the model's own limit (1.0 = the
data path costs nothing). ``cpu_decode_img_s_per_core`` is the CPU reader alone (PIL decode, resize,
crop) on one core: loader workers can at best multiply it by their number, so it says how many
workers a device needs to be fed. Rows go to ``results/extraction.csv``.

    python benchmarks/perf/extraction_throughput.py                      # CPU defaults
    python benchmarks/perf/extraction_throughput.py --models perf-vit-b-16-random \\
        --images 5000 --batch-size 256 --workers 16 --decode cpu,device --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import common
import torch

from oodbench.backbones import load_backbone
from oodbench.data.images import ImageListDataset, collate_uint8
from oodbench.data.manifest import Manifest
from oodbench.features.cache import Cache
from oodbench.features.extract import ExtractStats, default_workers, extract
from oodbench.runner import resolve_device


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated backbones (default: toy or tiny-random, and "
                   f"{common.VIT_RANDOM})")
    p.add_argument("--images", type=int, default=64, help="JPEGs per model (default 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: machine)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--decode", default="cpu", help="comma-separated: cpu, device")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "oodbench-perf")
    p.add_argument("--no-save", action="store_true", help="print only; do not append to results")
    return p.parse_args()


def forward_alone(bb, manifest: Manifest, batch_size: int,
                  decode_sample: int = 512) -> tuple[float, float]:
    """(seconds to encode every image from ready uint8 tensors, decoding excluded; the CPU
    reader's images/s on one core: decode, resize and crop, one image after the other, timed on
    the first ``decode_sample`` images). The images themselves are decoded by all cores."""
    ds = ImageListDataset(manifest, bb.preprocess)
    n_sample = min(decode_sample, len(ds))
    t_sample, _ = common.timed(lambda: [ds[i] for i in range(n_sample)])
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=[list(range(lo, min(len(ds), lo + batch_size)))
                           for lo in range(0, len(ds), batch_size)],
        num_workers=min(len(ds) // batch_size + 1, common._cores()), collate_fn=collate_uint8)
    batches = [b for b, _ in loader]
    if bb.device.type == "cuda":
        batches = [b.pin_memory() for b in batches]

    def run():
        with torch.inference_mode():
            for b in batches:
                bb.encode_image(b)

    return common.timed(run, bb.device)[0], n_sample / t_sample


def pipeline(bb, manifest: Manifest, batch_size: int, workers: int, decode: str) -> tuple:
    """(seconds, stats) of a cold extraction into a throw-away cache."""
    tmp = Path(tempfile.mkdtemp(prefix="oodbench-perf-cache-"))
    try:
        st = ExtractStats()
        secs, _ = common.timed(lambda: extract(bb, manifest, ["global"], Cache(tmp),
                                               batch_size=batch_size, workers=workers,
                                               stats=st, decode=decode), bb.device)
        return secs, st
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    common.register()
    models = (args.models.split(",") if args.models else
              ["toy" if common.toy_weights_exist() else "tiny-random", common.VIT_RANDOM])
    device = resolve_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    names = common.make_jpegs(args.data_dir / "jpegs", args.images)  # every core writes them
    manifest = Manifest("jpegs", args.data_dir / "jpegs", tuple(f"{n}" for n in names),
                        tuple([-1] * len(names)))
    env = common.machine()
    rows = []
    for model in models:
        bb = load_backbone(model, device=str(device), precision=args.precision)
        warm = collate_uint8([ImageListDataset(manifest, bb.preprocess)[0]])[0]
        with torch.inference_mode():
            bb.encode_image(warm)  # first-call costs (allocations, kernel selection) excluded
        t_fwd, decode_rate = forward_alone(bb, manifest, args.batch_size)
        for decode in args.decode.split(","):
            t_pipe, st = pipeline(bb, manifest, args.batch_size, workers, decode)
            n = len(manifest)
            rows.append({
                "model": model, "device": str(device), "precision": args.precision,
                "decode": st.decode, "images": n, "batch_size": args.batch_size,
                "workers": workers, "pipeline_img_s": n / t_pipe, "forward_img_s": n / t_fwd,
                "pipeline_over_forward": t_fwd / t_pipe, "pipeline_s": t_pipe, "forward_s": t_fwd,
                "cpu_decode_img_s_per_core": decode_rate,
                "decode_check_min_cos": (st.decode_check or {}).get("min_cosine", ""),
                "decode_fallbacks": st.decode_fallbacks, "image_size": "x".join(
                    map(str, common.JPEG_SIZE)), **env,
            })
    common.print_table(rows, ["model", "device", "decode", "images", "batch_size", "workers",
                              "pipeline_img_s", "forward_img_s", "pipeline_over_forward",
                              "cpu_decode_img_s_per_core"])
    print(f"\n{env['cpu']} ({env['cores']} cores, load {env['load1']}) {env['gpu']} "
          f"torch {env['torch']} threads {env['torch_threads']}")
    if not args.no_save:
        print(f"appended to {common.append_rows('extraction', rows)}")


if __name__ == "__main__":
    main()
