"""Choose the trained detectors' toy presets on the validation protocol ``toy-val`` only.

Usage: python benchmarks/toy/select_presets.py [--jobs 2] [--cache-dir DIR] [--work-dir DIR]
       [--detector lapt,locoop] [--dry-run]

For every detector in ``GRID`` it runs each point of a small grid (the swept fields) on top of the
detector's fixed toy budget (``FIXED``: shots, epochs, views, batch: cost, not choice), seed 0,
one torch thread per run, on ``toy-val`` (the ``id_val`` images against OOD kinds that no toy test
set holds: octagon / trapezoid shapes, zigzag / ring textures). The chosen point has the lowest
validation average FPR95 (ties: higher average AUROC, then the earlier grid point). It writes

- ``benchmarks/toy/presets/sweep.csv``: every grid point's validation numbers and run time;
- ``oodbench/toy/weights/toy_presets.json``: per detector, FIXED plus the chosen point; the
  detectors' toy presets are read from this file (``oodbench.training.presets.toy_preset``), so
  this script is its only writer. The file also names the toy CLIP weights (sha256) it was chosen
  for.

Every field is passed with ``--param``, so a run never depends on the presets file it rewrites:
rerunning gives the same presets (same torch build, one thread per run). About 20 minutes on
2 cores with --jobs 2 (the sweep's total run time is printed and kept in the CSV).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP_CSV = ROOT / "benchmarks" / "toy" / "presets" / "sweep.csv"
PRESETS_JSON = ROOT / "oodbench" / "toy" / "weights" / "toy_presets.json"
WEIGHTS_JSON = ROOT / "oodbench" / "toy" / "weights" / "toy_clip.json"
PROTOCOL = "toy-val"
SEED = 0

# The fixed toy budget of each detector (kept small so the whole toy suite runs in CPU minutes).
FIXED: dict[str, dict] = {
    "locoop": {"augment": "views:8"},
    "local-prompt": {"shots": 16, "n_ctx": 4, "topk_train": 16, "topk_test": 3, "epochs": 5.0,
                     "batch_size": 16, "warmup_epochs": 0.0, "views": 8, "num_pos": 4},
    "krnft": {"shots": 16, "n_crops": 64, "n_pos_crops": 16, "n_neg_crops": 16, "n_neg": 120,
              "epochs": 20.0, "batch_size": 8},
    "lapt": {"n_neg_train": 60, "n_neg_test": 120, "test_groups": 10, "batch_size": 16,
             "shots": 8},
    "clipn": {"toy_batch": 256},
    "adaneg": {},
}
# The swept fields: two values each, the paper's (or the old toy preset's) and one other.
GRID: dict[str, dict[str, list]] = {
    "locoop": {"top_k": [2, 8], "lambda_en": [0.25, 1.0]},
    "local-prompt": {"n_neg_prompts": [30, 100], "lr": [0.01, 0.002]},
    "krnft": {"lambda_kd": [300.0, 3000.0], "lr": [1e-3, 3e-4]},
    "lapt": {"epochs": [10.0, 20.0]},
    "clipn": {"toy_steps": [25, 50]},
    # the toy corpus has about 500 words: the paper's 10,000 negatives would be all of them
    "adaneg": {"n_neg": [60, 120]},
}
# Preset keys that are not detector fields, and the field each one is passed as
RUN_FIELD = {("clipn", "toy_batch"): "batch_size"}


def grid_points(detector: str) -> list[dict]:
    """Every point of a detector's grid, in a fixed order."""
    fields = GRID[detector]
    return [dict(zip(fields, vals, strict=True)) for vals in itertools.product(*fields.values())]


def run_point(detector: str, point: dict, work: Path, cache: Path) -> dict:
    """One validation run of ``detector`` with FIXED plus ``point``; its validation numbers."""
    tag = "_".join(f"{k}={v}" for k, v in point.items()).replace("/", "-").replace(":", "-")
    out = work / detector / tag
    params = {**FIXED[detector], **point}
    args = [sys.executable, "-m", "oodbench", "run", "--detector", detector, "--protocol",
            PROTOCOL, "--backbone", "toy", "--seeds", str(SEED), "--results-dir", str(out),
            "--cache-dir", str(cache), "--quiet"]
    for k, v in params.items():
        args += ["--param", f"{detector}.{RUN_FIELD.get((detector, k), k)}={v}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"validation run failed: {' '.join(args)}\n{r.stderr[-3000:]}")
    (rec_path,) = out.glob(f"runs/{PROTOCOL}/*/*/seed{SEED}.json")
    rec = json.loads(rec_path.read_text())
    groups = rec["groups"]
    row = {"detector": detector, **{f"param:{k}": v for k, v in point.items()}}
    for g in ("near", "far"):
        row[f"{g}_fpr95"] = round(100 * groups[g]["fpr95"], 2)
        row[f"{g}_auroc"] = round(100 * groups[g]["auroc"], 2)
    row["avg_fpr95"] = round((row["near_fpr95"] + row["far_fpr95"]) / 2, 2)
    row["avg_auroc"] = round((row["near_auroc"] + row["far_auroc"]) / 2, 2)
    row["id_acc"] = round(100 * rec["id_accuracy"], 2) if rec["id_accuracy"] is not None else ""
    row["seconds"] = round(seconds, 1)
    print(f"{detector} {point}: val avg FPR95 {row['avg_fpr95']} AUROC {row['avg_auroc']} "
          f"({seconds:.0f}s)", flush=True)
    return {"point": point, "row": row}


def choose(results: list[dict]) -> dict:
    """The grid point with the lowest val avg FPR95 (ties: higher AUROC, then grid order)."""
    best = min(range(len(results)), key=lambda i: (results[i]["row"]["avg_fpr95"],
                                                   -results[i]["row"]["avg_auroc"], i))
    return results[best]["point"]


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and write the sweep table and the presets file."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temp dir")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the val records go")
    ap.add_argument("--detector", default=",".join(GRID), help="subset (others keep their row)")
    ap.add_argument("--dry-run", action="store_true", help="print the grid, run nothing")
    args = ap.parse_args(argv)
    detectors = [d.strip() for d in args.detector.split(",") if d.strip()]
    unknown = sorted(set(detectors) - set(GRID))
    if unknown:
        raise SystemExit(f"no toy grid for {unknown}; choose from {sorted(GRID)}")
    jobs = [(d, p) for d in detectors for p in grid_points(d)]
    if args.dry_run:
        for d, p in jobs:
            print(d, {**FIXED[d], **p})
        return
    tmp = Path(tempfile.mkdtemp(prefix="toy-presets-"))
    cache, work = args.cache_dir or tmp / "cache", args.work_dir or tmp / "runs"
    t0 = time.perf_counter()
    # the heaviest runs first, so that the two job slots finish together
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {(d, json.dumps(p)): pool.submit(run_point, d, p, work, cache)
                   for d, p in sorted(jobs, key=lambda j: ("lapt", "clipn").count(j[0]) == 0)}
    total = time.perf_counter() - t0
    results = {d: [futures[(d, json.dumps(p))].result() for p in grid_points(d)] for d in detectors}

    old = json.loads(PRESETS_JSON.read_text()) if PRESETS_JSON.is_file() else {"presets": {}}
    presets = dict(old.get("presets", {}))
    old_rows = []
    if SWEEP_CSV.is_file():
        with open(SWEEP_CSV, newline="") as f:
            old_rows = [r for r in csv.DictReader(f) if r["detector"] not in detectors]
    rows = list(old_rows)
    for d in detectors:
        chosen = choose(results[d])
        presets[d] = {**FIXED[d], **chosen}
        for r in results[d]:
            rows.append({**r["row"], "chosen": r["point"] == chosen})
    fields = ["detector", *sorted({k for r in rows for k in r if k.startswith("param:")}),
              "near_fpr95", "near_auroc", "far_fpr95", "far_auroc", "avg_fpr95", "avg_auroc",
              "id_acc", "seconds", "chosen"]
    order = list(GRID)
    rows.sort(key=lambda r: order.index(r["detector"]) if r["detector"] in order else len(order))
    with tempfile.NamedTemporaryFile("w", delete=False, newline="", dir=tmp) as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    SWEEP_CSV.parent.mkdir(parents=True, exist_ok=True)
    os.replace(f.name, SWEEP_CSV)
    weights = json.loads(WEIGHTS_JSON.read_text())
    doc = {
        "note": "written by benchmarks/toy/select_presets.py (its only writer): FIXED budget "
                "plus the grid point with the lowest avg FPR95 on protocol toy-val, seed 0",
        "protocol": PROTOCOL,
        "seed": SEED,
        "toy_clip_sha256": weights.get("sha256"),
        "world_version": weights.get("world_version"),
        "presets": {d: presets[d] for d in sorted(presets)},
    }
    write_atomic(PRESETS_JSON, json.dumps(doc, indent=1) + "\n")
    print(f"sweep: {len(jobs)} runs in {total / 60:.1f} min (jobs {args.jobs}); wrote "
          f"{SWEEP_CSV.relative_to(ROOT)} and {PRESETS_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
