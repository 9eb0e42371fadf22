"""Where one ``oodbench run`` on an empty cache spends its time: cProfile's top entries.

The oodbench side of ``official_vs_oodbench.py``, alone and under the profiler (which slows the
Python-heavy parts a little): the run's total, each record's timings, and the functions with the
largest cumulative time. Nothing is appended to a results file; the figures quoted from it are
in README.md with this command.

    python benchmarks/perf/profile_run.py --detectors mcm,gl-mcm,msp,maxlogit,energy,neglabel
    python benchmarks/perf/profile_run.py --protocol perf-jpeg --backbone perf-vit-b-16-random \\
        --images 128 --classes 10 --batch-size 32 --param neglabel.corpus=toy
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import common
import torch
from official_vs_oodbench import empty_cache

from oodbench.cli import _param
from oodbench.registry import PROTOCOLS
from oodbench.runner import RunSpec, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="toy")
    p.add_argument("--backbone", help="default: toy, or perf-vit-b-16-random for perf-jpeg")
    p.add_argument("--detectors", default="mcm,gl-mcm,msp,maxlogit,energy,neglabel")
    p.add_argument("--param", action="append", type=_param, default=[],
                   help="DET.FIELD=VALUE, as oodbench run's --param")
    p.add_argument("--images", type=int, default=128, help="perf-jpeg: JPEGs in all")
    p.add_argument("--classes", type=int, default=10, help="perf-jpeg: ID classes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=40, help="profile entries to print")
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "oodbench-perf")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    common.register()
    common.warm_imports()
    data_root, backbone, params = common.run_inputs(args.protocol, args.backbone, args.images,
                                                    args.classes, args.data_dir, args.param)
    tmp = Path(tempfile.mkdtemp(prefix="oodbench-prof-"))
    try:
        cache = empty_cache(tmp / "cache", args.data_dir)
        # the toy world renders its images on first use: that happens here, outside the profile
        PROTOCOLS.get(args.protocol)().build(data_root, cache)
        spec = RunSpec(detectors=args.detectors.split(","), protocol=args.protocol,
                       backbone=backbone, params=params, batch_size=args.batch_size,
                       workers=args.workers, quiet=True, device="cpu",
                       data_root=str(data_root) if data_root else None,
                       cache_dir=str(cache),
                       results_dir=str(tmp / "results"))
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        records = run(spec)
        prof.disable()
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"run total {total:.2f} s ({common.machine()['cpu']}, threads {args.threads}, "
          f"workers {args.workers})")
    for r in records:
        print(f"  {r.detector['name']:>12}: " +
              ", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items()))
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
