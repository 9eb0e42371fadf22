"""Several detectors on the same images: an "official-style" loop vs one oodbench run.

The official-style loop does what the MCM and OpenOOD evaluation scripts do: for every detector,
read and decode every test image again through torchvision transforms (float normalisation on the
CPU), encode it, and for zero-shot classifiers re-encode the class prompts for every batch
(MCM's ``get_ood_scores_clip`` tokenises and encodes them inside its batch loop, over all the
context tokens); detectors that prepare text once (NegLabel's mining) do it once per detector.
GL-MCM's pass computes the global and the local (v-path patch) features of each batch in one
forward, as the official GL-MCM script does, with the function behind oodbench's ``local`` kind.
oodbench runs the same detectors in one ``oodbench run`` on an empty cache: features extracted
once (all kinds in one pass), text encoded once.

Both run on the same protocol, model, batch size, loader workers and threads, in one process,
one after the other; the speed-up is official seconds / oodbench seconds, and the largest score
difference between the two shows they computed the same thing. Then the warm-cache cost: a first
detector on an empty cache vs a second detector on the cache the first left. Rows go to
``results/official_vs_oodbench.csv``.

    python benchmarks/perf/official_vs_oodbench.py                     # toy protocol (or perf-jpeg)
    python benchmarks/perf/official_vs_oodbench.py --protocol perf-jpeg --images 64 \\
        --backbone perf-vit-b-16-random --classes 10
    python benchmarks/perf/official_vs_oodbench.py \\
        --detectors mcm,gl-mcm,msp,maxlogit,energy,neglabel          # the six zero-shot detectors
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch
import torch.nn.functional as F

from oodbench import metrics as M
from oodbench.backbones import load_backbone
from oodbench.cli import _param
from oodbench.data.images import INTERPOLATIONS, load_rgb
from oodbench.detectors.base import GLOBAL, LOCAL, Context, ZeroShotDetector
from oodbench.features.extract import default_workers
from oodbench.features.local import global_and_local
from oodbench.features.provider import feature_kinds
from oodbench.registry import DETECTORS, PROTOCOLS
from oodbench.runner import (
    RunSpec,
    backbone_dir,
    make_detector,
    recipe_backbone,
    record_stem,
    resolve_device,
    run,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", help="default: toy when its weights exist, else perf-jpeg")
    p.add_argument("--backbone", help="default: toy, or perf-vit-b-16-random for perf-jpeg")
    p.add_argument("--detectors", help="default: mcm,msp,maxlogit,energy (+neglabel on toy)")
    p.add_argument("--param", action="append", type=_param, default=[],
                   help="DETECTOR.FIELD=VALUE for both sides, e.g. neglabel.corpus=toy (WordNet "
                        "mining encodes 70,794 prompts: hours on one CPU core with ViT-B/16)")
    p.add_argument("--images", type=int, default=64, help="perf-jpeg: JPEGs in all")
    p.add_argument("--classes", type=int, default=10, help="perf-jpeg: ID classes (prompts)")
    p.add_argument("--limit", type=int, help="at most N images per set")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="oodbench's precision (default fp32)")
    p.add_argument("--decode", default="cpu", choices=["cpu", "device"],
                   help="oodbench's JPEG decoding (the official-style loop always uses PIL)")
    p.add_argument("--official-precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="the official-style loop's precision (default fp32)")
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "oodbench-perf")
    p.add_argument("--no-save", action="store_true")
    return p.parse_args()


class TransformDataset(torch.utils.data.Dataset):
    """A manifest read through a torchvision transform, as the official scripts' ImageFolder."""

    def __init__(self, manifest, transform):
        self.manifest, self.transform = manifest, transform

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i):
        return self.transform(load_rgb(self.manifest.absolute(i))), i


def official_transform(pp):
    """Resize / CenterCrop / ToTensor / Normalize: the official scripts' preprocess."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(pp.resize, interpolation=_tv_interp(pp.interpolation)),
                      T.CenterCrop(pp.crop), T.ToTensor(), T.Normalize(pp.mean, pp.std)])


def _tv_interp(name: str):
    from torchvision.transforms import InterpolationMode

    assert name in INTERPOLATIONS
    return {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
            "nearest": InterpolationMode.NEAREST}[name]


def official_loop(spec: RunSpec, protocol, device, precision: str = "fp32"
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Scores per detector and set, computed the way the official evaluation scripts do."""
    bb = load_backbone(spec.backbone, device=str(device), precision=precision)
    autocast = device.type == "cuda" and bb.dtype != torch.float32  # CPU: weights cast instead
    in_dtype = bb.dtype if device.type != "cuda" else torch.float32
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name in spec.detectors:
        det = make_detector(name, spec.params.get(name))
        # each official script's own transform (MCM's bilinear Resize(224), ...), as oodbench's
        transform = official_transform(recipe_backbone(bb, det.recipe, False).preprocess)
        if not det.needs <= {GLOBAL, LOCAL}:
            raise SystemExit(f"{name} needs {sorted(det.needs)}; the official-style loop has "
                             "zero-shot detectors only (global and local features)")
        local = LOCAL in det.needs  # GL-MCM: global and local features from one forward
        ctx = Context(backbone=bb, protocol=protocol, seed=0, device=device,
                      encode_text=lambda prompts: full_length_text(bb, prompts),
                      split_features=None,
                      artifact_dir=Path(tempfile.mkdtemp(prefix="oodbench-perf-art-")))
        det.setup(ctx)
        per_batch_text = isinstance(det, ZeroShotDetector)
        scores[name] = {}
        for s in protocol.sets():
            loader = torch.utils.data.DataLoader(
                TransformDataset(s.manifest.limit(spec.limit), transform),
                batch_size=spec.batch_size, shuffle=False, num_workers=spec.workers)
            out = []
            with torch.no_grad():
                for images, _ in loader:
                    x = images.to(device, in_dtype)
                    with torch.autocast(device.type, dtype=bb.dtype, enabled=autocast):
                        if local:
                            g, loc = global_and_local(bb.model.visual, x)
                        else:
                            g, loc = bb.model.encode_image(x), None
                    feats = {GLOBAL: F.normalize(g.float(), dim=-1)}
                    if local:
                        feats[LOCAL] = F.normalize(loc.float(), dim=-1)
                    if per_batch_text:
                        det.setup(ctx)  # class prompts tokenised and encoded again, every batch
                    out.append(det.score(feats).double().cpu().numpy())
            scores[name][s.name] = np.concatenate(out)
    return scores


@torch.inference_mode()
def full_length_text(bb, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Text features as the official scripts get them: ``encode_text`` over all context tokens.

    (oodbench's own ``Backbone.encode_text`` stops at the last end-of-text token.)
    """
    autocast = bb.device.type == "cuda" and bb.dtype != torch.float32
    out = []
    for i in range(0, len(prompts), batch_size):
        tokens = bb.tokenizer(prompts[i : i + batch_size]).to(bb.device)
        with torch.autocast(bb.device.type, dtype=bb.dtype, enabled=autocast):
            out.append(F.normalize(bb.model.encode_text(tokens).float(), dim=-1))
    return torch.cat(out) if out else torch.empty(0, bb.embed_dim, device=bb.device)


def oodbench_run(spec: RunSpec) -> tuple[float, list]:
    """(seconds, records) of one ``oodbench run`` of ``spec``."""
    t = time.perf_counter()
    records = run(spec)
    return time.perf_counter() - t, records


def record_scores(spec: RunSpec, rec) -> dict[str, np.ndarray]:
    """Per-set scores saved next to a record."""
    det = make_detector(rec.detector["name"], rec.detector["params"])  # "@hash" when not default
    stem = record_stem(Path(spec.results_dir) / "runs" / rec.protocol["name"] /
                       backbone_dir(spec.backbone, rec.backbone["precision"], spec.preprocess),
                       det, rec.seed)
    z = np.load(stem.parent / rec.scores_file)  # a --limit run's stem has a suffix
    return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("scores/")}


def empty_cache(path: Path, data_dir: Path) -> Path:
    """An empty feature cache whose ``toy-world`` (rendered images) is shared between runs."""
    world = data_dir / "toy-cache" / "toy-world"
    world.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True)
    (path / "toy-world").symlink_to(world, target_is_directory=True)
    return path


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    common.register()
    common.warm_imports()
    toy = common.toy_weights_exist()
    protocol_name = args.protocol or ("toy" if toy else common.PERF_PROTOCOL)
    data_root, backbone, params = common.run_inputs(protocol_name, args.backbone, args.images,
                                                    args.classes, args.data_dir, args.param)
    detectors = (args.detectors.split(",") if args.detectors else
                 ["mcm", "msp", "maxlogit", "energy"] + (["neglabel"] if toy and
                                                        protocol_name.startswith("toy") else []))
    device = resolve_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    tmp = Path(tempfile.mkdtemp(prefix="oodbench-perf-"))
    base = dict(protocol=protocol_name, backbone=backbone, batch_size=args.batch_size,
                workers=workers, limit=args.limit, quiet=True, device=str(device),
                precision=args.precision, decode=args.decode,
                data_root=str(data_root) if data_root else None)
    env = common.machine()  # load average before the timings
    try:
        caches = [empty_cache(tmp / name, args.data_dir) for name in ("cold", "warm")]
        # the toy world renders its images on first use: that happens here, outside the timings
        protocol = PROTOCOLS.get(protocol_name)().build(data_root, caches[0])
        spec = RunSpec(detectors=detectors, cache_dir=str(caches[0]), params=params,
                       results_dir=str(tmp / "res"), **base)
        t_official, official = common.timed(
            lambda: official_loop(spec, protocol, device, args.official_precision))
        t_ours, records = oodbench_run(spec)
        diffs = {r.detector["name"]: max(
            float(np.max(np.abs(official[r.detector["name"]][k] - v)))
            for k, v in record_scores(spec, r).items()) for r in records}
        auroc_diffs = {r.detector["name"]: max(
            abs(M.ood_metrics(official[r.detector["name"]][protocol.id_test.name],
                              official[r.detector["name"]][o])["auroc"] - r.metrics[o]["auroc"])
            for o in r.metrics) for r in records}
        n_images = sum(len(s.manifest.limit(args.limit)) for s in protocol.sets())
        # warm cache: a first detector on an empty feature cache, then a second one on its cache
        # (one that needs no feature kind the first did not, and whose official recipe gives the
        # same preprocessing: GL-MCM's local features, or MSP's bicubic images after MCM's
        # bilinear ones, would be a cold extraction)
        first = detectors[0]

        def reuses_first(d: str) -> bool:
            same_kinds = (feature_kinds(DETECTORS.get(d).needs)
                          == feature_kinds(DETECTORS.get(first).needs))
            return same_kinds and DETECTORS.get(d).recipe.preprocess_overrides(224) == \
                DETECTORS.get(first).recipe.preprocess_overrides(224)

        second = next((d for d in detectors[1:] if reuses_first(d)), detectors[1])
        warm = dict(base, cache_dir=str(caches[1]), results_dir=str(tmp / "res2"))
        t_first, (r1,) = oodbench_run(RunSpec(detectors=[first], params=_only(params, first),
                                              **warm))
        t_second, (r2,) = oodbench_run(RunSpec(detectors=[second], params=_only(params, second),
                                               **warm))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {
        "protocol": protocol_name, "backbone": backbone, "device": str(device),
        "detectors": "+".join(detectors), "images": n_images, "batch_size": args.batch_size,
        "workers": workers, "official_precision": args.official_precision,
        "oodbench_precision": args.precision, "oodbench_decode": args.decode,
        "official_s": t_official, "oodbench_s": t_ours,
        "speedup": t_official / t_ours, "max_abs_score_diff": max(diffs.values()),
        "max_abs_auroc_diff": max(auroc_diffs.values()),
        "first_detector": first, "first_run_s": t_first,
        "first_detector_s": r1.timings["total"], "second_detector": second,
        "second_run_s": t_second, "second_detector_s": r2.timings["total"],
        "second_over_first_run": t_second / t_first,
        "second_over_first_detector": r2.timings["total"] / r1.timings["total"],
        "params": ";".join(f"{d}.{k}={v}" for d, kv in params.items() for k, v in kv.items()),
        "oodbench_precision_used": "+".join(sorted({r.backbone["precision"] for r in records})),
        "score_diff_by_detector": ";".join(f"{d}={v:.3g}" for d, v in diffs.items()),
        "auroc_diff_by_detector": ";".join(f"{d}={v:.3g}" for d, v in auroc_diffs.items()),
        **env,
    }
    common.print_table([row], ["protocol", "backbone", "detectors", "images",
                               "official_precision", "oodbench_precision", "official_s",
                               "oodbench_s", "speedup", "max_abs_score_diff",
                               "max_abs_auroc_diff"])
    print()
    print(f"max |score diff| per detector: {row['score_diff_by_detector']}")
    print(f"max |AUROC diff| per detector: {row['auroc_diff_by_detector']}\n")
    common.print_table([row], ["first_detector", "first_run_s", "first_detector_s",
                               "second_detector", "second_run_s", "second_detector_s",
                               "second_over_first_run", "second_over_first_detector"])
    print(f"\n{env['cpu']} ({env['cores']} cores, load {env['load1']}) {env['gpu']} "
          f"torch {env['torch']} threads {env['torch_threads']} workers {workers}")
    if not args.no_save:
        print(f"appended to {common.append_rows('official_vs_oodbench', [row])}")


def _only(params: dict[str, dict], name: str) -> dict[str, dict]:
    """The hyperparameters of ``name`` alone (a run spec refuses those of absent detectors)."""
    return {name: params[name]} if name in params else {}


if __name__ == "__main__":
    main()
