"""Scoring cost of each zero-shot detector on cached features vs one matmul of the same shape.

85,640 features of dimension 512 (the size of ImageNet-1k + the MOS four with ViT-B/16) are scored
by each detector through the runner's own path (``features.scores.score_arrays``: 4,096-row chunks,
so memory stays bounded whatever the number of text embeddings), and compared with a single matrix
product features @ text.T of the same shape (K = the detector's text embeddings: 1,000 ID prompts,
plus 10,000 negative labels for NegLabel). The ratio detector / matmul is the price of everything
but the product. Embeddings are random unit vectors (the cost does not depend on their values);
text is "encoded" by a stand-in that returns them, so only scoring is timed. Rows go to
``results/scoring.csv``.

    python benchmarks/perf/scoring.py                 # all zero-shot detectors, CPU, 1 thread
    python benchmarks/perf/scoring.py --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path
from types import SimpleNamespace

import common
import torch

from oodbench.data.classnames import imagenet1k_classnames
from oodbench.detectors.base import Context
from oodbench.features.scores import SCORE_BATCH, score_arrays
from oodbench.runner import make_detector, resolve_device

DEFAULT_DETECTORS = "mcm,msp,maxlogit,energy,neglabel"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectors", default=DEFAULT_DETECTORS)
    p.add_argument("--n", type=int, default=85_640, help="cached features (default 85,640)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--negatives", type=int, default=10_000, help="NegLabel's negative labels")
    p.add_argument("--repeats", type=int, default=2, help="timings per case; the minimum is kept")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-save", action="store_true")
    return p.parse_args()


def unit_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    """``n`` random L2-normalised float32 rows (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return x / x.norm(dim=1, keepdim=True)


def stand_in_context(dim: int, device: torch.device, tmp: Path) -> Context:
    """A setup context whose text encoder returns random unit vectors (one per prompt)."""
    calls = iter(range(10**6))

    def encode_text(prompts: list[str]) -> torch.Tensor:
        return unit_rows(len(prompts), dim, 1000 + next(calls)).to(device)

    protocol = SimpleNamespace(name="imagenet1k-mos4", classnames=imagenet1k_classnames())
    return Context(backbone=None, protocol=protocol, seed=0, device=device,
                   encode_text=encode_text, split_features=None, artifact_dir=tmp)


def text_rows(det) -> int:
    """How many text embeddings the detector scores against."""
    n = 0
    for attr in ("text", "id_text"):
        if isinstance(getattr(det, attr, None), torch.Tensor):
            n += len(getattr(det, attr))
    negatives = getattr(det, "negatives", None)
    if negatives is not None:
        n += len(negatives.features)
    return n


def best_of(repeats: int, fn, device: torch.device) -> float:
    """The fastest of ``repeats`` timings of ``fn`` (least disturbed by other processes)."""
    return min(common.timed(fn, device)[0] for _ in range(repeats))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="oodbench-perf-score-"))
    negatives_file = tmp / "negatives.txt"
    negatives_file.write_text("".join(f"the nice word{i}\n" for i in range(args.negatives)))
    feats = unit_rows(args.n, args.dim, 0).numpy()  # as memory-mapped from the cache
    on_device = torch.from_numpy(feats).to(device)
    env = common.machine()
    rows = []
    for name in args.detectors.split(","):
        params = ({"negatives_file": str(negatives_file)} if name == "neglabel" else
                  {"logit_scale": 100.0} if name == "msp" else None)  # no backbone here
        det = make_detector(name, params)
        det.setup(stand_in_context(args.dim, device, tmp))
        k = text_rows(det)
        text = unit_rows(k, args.dim, 7).to(device)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t_det = best_of(args.repeats, lambda det=det: score_arrays(det, {"global": feats}, device),
                        device)
        rss_det = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        t_mm = best_of(args.repeats, lambda text=text: on_device @ text.T, device)
        rows.append({
            "detector": name, "device": str(device), "n": args.n, "dim": args.dim,
            "text_rows": k, "chunk_rows": SCORE_BATCH, "detector_s": t_det, "matmul_s": t_mm,
            "detector_over_matmul": t_det / t_mm, "us_per_image": 1e6 * t_det / args.n,
            "peak_rss_growth_mb": rss_det / 1024, **env,
        })
        print(f"  {name}: {t_det:.2f}s vs matmul {t_mm:.2f}s", flush=True)
    common.print_table(rows, ["detector", "device", "n", "text_rows", "detector_s", "matmul_s",
                              "detector_over_matmul", "us_per_image"])
    print(f"\n{env['cpu']} ({env['cores']} cores, load {env['load1']}) {env['gpu']} "
          f"torch {env['torch']} threads {env['torch_threads']}")
    if not args.no_save:
        print(f"appended to {common.append_rows('scoring', rows)}")


if __name__ == "__main__":
    main()
