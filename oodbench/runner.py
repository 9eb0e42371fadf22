"""Extract once, score many: resolve a run spec, get features, set up and score each detector.

Each detector runs at the run's precision or, when it does not tolerate that, at its own declared
one (``Detector.precision``), and preprocesses images by its official recipe (``Detector.recipe``:
e.g. MCM's bilinear ``Resize(224)``, KR-NFT's bicubic resize 256 / crop 224) unless the user
overrides preprocessing for the whole run. Detectors are grouped by (precision, recipe): one model
load per precision, one feature set per group. Per group the union of the detectors' feature kinds
is extracted first, in one pass over each set, so an image is decoded and encoded once however many
detectors, and of which kinds, the group holds.

For each (detector, seed) the runner writes a :class:`~oodbench.record.ResultRecord` to
``<results>/runs/<protocol>/<backbone>[@precision]/<detector>/seed<k>[_<variant>].json`` with the
per-image scores beside it (``.npz``); a ``--limit`` or ``--skip-unreadable`` run has a variant
(:func:`measurement_suffix`), so it never replaces a full run's record. Image features are shared
by every detector of the run and, through the cache, of later runs; scores are cached too, so a
rerun that changes nothing recomputes nothing.

The runner only orchestrates: features, their locks and the Context a detector is set up with
come from ``features/provider.py``; scoring a set and the score cache from ``features/scores.py``.
It reads as: resolve the spec -> group detectors by precision and recipe -> per detector and seed,
setup (or cached scores), score, metrics, record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from oodbench import metrics as M
from oodbench.backbones import check_backbone, load_backbone
from oodbench.data.images import readable_manifests
from oodbench.detectors.base import (
    Detector,
    Recipe,
    check_precision,
    resolve_precision,
)
from oodbench.errors import ConfigError, short_repr
from oodbench.features import distributed
from oodbench.features import scores as scoring
from oodbench.features import stream as streaming
from oodbench.features.cache import Cache, default_cache_dir, spec_key
from oodbench.features.provider import Features, feature_kinds
from oodbench.io import atomic_save_npz
from oodbench.logs import quieted
from oodbench.progress import phase, progress, say
from oodbench.protocols import check_protocol_name, protocol_class
from oodbench.protocols.base import Protocol
from oodbench.record import ResultRecord
from oodbench.registry import BACKBONES, DETECTORS, PROTOCOLS


@dataclass
class RunSpec:
    """What to run: detectors x protocol x backbone x seeds, and where to read and write."""

    detectors: list[str]
    protocol: str
    backbone: str
    seeds: list[int] = field(default_factory=lambda: [0])
    params: dict[str, dict] = field(default_factory=dict)
    data_root: str | None = None
    cache_dir: str | None = None
    results_dir: str = "results"
    device: str = "auto"
    precision: str = "fp32"
    preprocess: dict = field(default_factory=dict)
    batch_size: int = 128
    workers: int | None = None
    limit: int | None = None
    chunk_size: int = 4096
    quiet: bool = False
    skip_unreadable: bool = False  # drop unreadable images (counted in the record), not fail
    decode: str = "cpu"  # or "device": JPEG decoding on the GPU (checked first)

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ConfigError("no detector given: pass --detector NAME[,NAME...]")
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in self.seeds):
            raise ConfigError(
                f"seeds must be integers like [0, 1, 2], got {short_repr(self.seeds)}")
        if not all(0 <= x < 2**63 for x in self.seeds):
            raise ConfigError(
                f"seeds must be between 0 and 2**63 - 1, got {short_repr(self.seeds)}")
        if not all(isinstance(x, str) for x in self.detectors):
            raise ConfigError(
                f"detectors must be names like [mcm, energy], got {short_repr(self.detectors)}")
        for what, items in (("seed", self.seeds), ("detector", self.detectors)):
            twice = sorted({str(x) for x in items if items.count(x) > 1})
            if twice:
                raise ConfigError(f"{what} {', '.join(twice)} is given twice; each {what} runs "
                                  "once (its record would be written twice)")
        for det, values in self.params.items():
            if not isinstance(values, dict):
                raise ConfigError(f"params.{det} must map FIELD: VALUE, got {short_repr(values)}")
        for name in self.detectors:
            DETECTORS.describe(name)  # unknown -> suggestions
        check_protocol_name(self.protocol)  # unknown -> suggestions; a YAML file is read
        unknown = sorted(set(self.params) - set(self.detectors))
        if unknown:
            raise ConfigError(
                f"params given for {unknown}, which are not among the detectors {self.detectors}"
            )
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.chunk_size <= 0:
            raise ConfigError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be 0 (load in the main process) or more, got "
                              f"{self.workers}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit must be a positive number of images, got {self.limit}")
        check_precision(self.precision)

    @classmethod
    def from_dict(cls, d: dict, where: str = "run spec") -> RunSpec:
        """Build from a YAML/JSON mapping, naming any unknown or ill-typed field."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping of fields, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; valid: {sorted(fields)}")
        d = dict(d)
        if isinstance(d.get("detectors"), str):
            d["detectors"] = [s.strip() for s in d["detectors"].split(",") if s.strip()]
        for name, kind in (
            ("detectors", list),
            ("seeds", (list, int)),
            ("params", dict),
            ("protocol", str),
            ("backbone", str),
            ("batch_size", int),
            ("chunk_size", int),
            ("limit", (int, type(None))),
            ("workers", (int, type(None))),
            ("skip_unreadable", bool),
            ("data_root", (str, type(None))),
            ("results_dir", str),
            ("cache_dir", (str, type(None))),
            ("device", str),
            ("precision", str),
            ("decode", str),
            ("quiet", bool),
            ("preprocess", dict),
        ):
            if name in d and (
                not isinstance(d[name], kind) or isinstance(d[name], bool) and kind is not bool
            ):
                raise ConfigError(
                    f"{where}: field {name!r} has the wrong type ({type(d[name]).__name__})"
                )
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # mps, meta, ...: not supported
        raise ConfigError(f"device {short_repr(name)} unknown or unsupported; use auto, cpu, cuda "
                          "or cuda:N")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def environment(device: torch.device) -> dict:
    """Package versions, git commit and device, for the record."""
    import open_clip
    import sklearn

    import oodbench

    env = {
        "oodbench": oodbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "git_commit": git_commit(),
        "device": str(device),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def plugin_origins(spec: RunSpec) -> dict:
    """``{"detector:NAME" | "protocol:NAME" | "backbone:NAME": {distribution, version, module}}``
    for what the run uses from outside oodbench (plugins), so that a record names their release."""
    out = {}
    uses = [("detector", DETECTORS, n) for n in spec.detectors]
    if spec.protocol in PROTOCOLS:
        uses.append(("protocol", PROTOCOLS, spec.protocol))
    if spec.backbone in BACKBONES:
        uses.append(("backbone", BACKBONES, spec.backbone))
    for kind, reg, name in uses:
        if origin := reg.origin(name):
            out[f"{kind}:{name}"] = origin
    return out


def git_commit() -> str | None:
    """The commit of the oodbench checkout, if it is one (with '+dirty' for local changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) or None


def slug(text: str) -> str:
    """A file-system safe name for a backbone spec or path."""
    if "/" in text or "\\" in text:
        arch, _, path = text.partition(":")
        text = f"{arch}:{Path(path).stem}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def backbone_dir(backbone_spec: str, precision: str = "fp32",
                 preprocess: dict | None = None) -> str:
    """Record folder of a backbone: its slug, with ``@<precision>`` unless fp32 and
    ``+pp-<fields>`` when the user overrode the detectors' official preprocessing, so that such
    runs never replace the official ones."""
    name = slug(backbone_spec) + ("" if precision == "fp32" else f"@{precision}")
    if preprocess:
        short = [f"{preprocess[k]}" for k in ("interpolation", "resize", "crop") if k in preprocess]
        if set(preprocess) - {"interpolation", "resize", "crop"}:
            short.append(spec_key(preprocess)[:8])
        name += "+pp-" + slug("-".join(short))
    return name


def record_stem(spec_dir: Path, detector: Detector, seed: int) -> Path:
    """runs/<protocol>/<backbone>/<detector>[@params-hash]/seed<k> (hash when params differ, or
    when some were set to their default by hand, which keeps a toy preset off them)."""
    default = type(detector).Params().to_dict()
    params = detector.params.to_dict()
    name = detector.name
    if explicit := detector.params.explicit_defaults():
        name += "@" + spec_key({**params, "explicit_defaults": explicit})[:8]
    elif params != default:
        name += "@" + spec_key(params)[:8]
    return spec_dir / name / f"seed{seed}"


def measurement_suffix(limit: int | None, skipped: dict[str, int], digests: dict[str, str]) -> str:
    """'' for a full run; else ``_limit<N>``/``_skip<M>`` and 8 hex of the sets' manifest hashes,
    so that a smoke run or a run without unreadable images never replaces a full run's record
    (``seed0_limit100_1a2b3c4d``)."""
    n_skipped = sum(int(v) for v in skipped.values())
    if not limit and not n_skipped:
        return ""
    tags = ([f"limit{limit}"] if limit else []) + ([f"skip{n_skipped}"] if n_skipped else [])
    return "_" + "_".join(tags) + "_" + spec_key(dict(sorted(digests.items())))[:8]


def precision_groups(spec: RunSpec) -> dict[str, list[int]]:
    """Precision -> indices of ``spec.detectors`` that run at it, in order of first use."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(spec.detectors):
        used, _ = resolve_precision(spec.precision, DETECTORS.get(name))
        groups.setdefault(used, []).append(i)
    return groups


def recipe_groups(base, spec: RunSpec, indices: list[int]) -> list[tuple[object, list[int]]]:
    """(backbone with a group's preprocessing, indices of its detectors): the detectors of one
    precision grouped by the preprocessing their recipes resolve to on ``base``."""
    groups: dict = {}
    for i in indices:
        bb = recipe_backbone(base, DETECTORS.get(spec.detectors[i]).recipe, bool(spec.preprocess))
        groups.setdefault(bb.preprocess, (bb, []))[1].append(i)
    return list(groups.values())


def recipe_backbone(base, recipe: Recipe, overridden: bool):
    """``base`` with the preprocessing of ``recipe`` (the same model; the user's overrides, already
    in ``base``, win over every recipe)."""
    if overridden:
        return base
    fields = recipe.preprocess_overrides(base.preprocess.crop)
    if not fields:
        return base
    return dataclasses.replace(base, preprocess=dataclasses.replace(base.preprocess, **fields))


def recipe_record(det: Detector, spec: RunSpec) -> dict:
    """What the record says about the detector's official recipe and whether the run kept it."""
    return {"official": not spec.preprocess, "overrides": dict(spec.preprocess) or None,
            **det.recipe.to_dict()}


def make_detector(name: str, params: dict | None) -> Detector:
    """A fresh detector instance by registered name (its ``name`` set to the registered one)."""
    det = DETECTORS.get(name)(params)
    det.name = name
    return det


def run(spec: RunSpec) -> list[ResultRecord]:
    """Execute a run spec; returns the records written."""
    with quieted(spec.quiet):
        return _run(spec)


def _run(spec: RunSpec) -> list[ResultRecord]:
    t_run = time.perf_counter()
    check_backbone(spec.backbone)  # architecture, tag, weights present: before any data work
    cache = Cache(spec.cache_dir or default_cache_dir())
    data_root = spec.data_root or os.environ.get("OODBENCH_DATA")
    protocol = protocol_class(spec.protocol)().build(
        Path(data_root) if data_root else None, cache.root
    ).limit_training(spec.limit)  # --limit bounds the training split too
    for n in spec.detectors:  # fail on bad hyperparameters or protocols before any work
        make_detector(n, spec.params.get(n)).check_protocol(protocol)
    sets = {s.name: s.manifest.limit(spec.limit) for s in protocol.sets()}
    with phase(f"checking that the {sum(map(len, sets.values())):,} images of "
               f"{len(sets)} sets read", spec.quiet):
        checked, skipped = readable_manifests(  # fail on unreadable images before any work
            sets, spec.skip_unreadable, cache)
    device = distributed.init_from_env(resolve_device(spec.device))  # torchrun: this rank's
    if not distributed.is_main():
        spec = dataclasses.replace(spec, quiet=True)
    env = environment(device)
    if plugins := plugin_origins(spec):
        env["plugins"] = plugins
    say(
        f"[bold]oodbench[/] {protocol.name} v{protocol.version} | backbone {spec.backbone} | "
        f"{', '.join(spec.detectors)} | seeds {spec.seeds} | {device}",
        spec.quiet,
    )
    done: dict[tuple[int, int], ResultRecord] = {}
    with progress(spec.quiet) as bar:
        for precision, by_precision in precision_groups(spec).items():
            names = [spec.detectors[i] for i in by_precision]
            if precision != spec.precision:
                say(f"  {', '.join(names)} at {precision} (declared; {spec.precision} requested)",
                    spec.quiet)
            with phase(f"loading backbone {spec.backbone} ({precision}, {device})", spec.quiet):
                model = load_backbone(
                    spec.backbone,
                    device=str(device),
                    precision=precision,
                    preprocess=spec.preprocess or None,
                )
            subgroups = recipe_groups(model, spec, by_precision)
            for backbone, indices in subgroups:
                names = [spec.detectors[i] for i in indices]
                if len(subgroups) > 1:
                    pp = backbone.preprocess
                    say(f"  {', '.join(names)}: {pp.interpolation} resize {pp.resize} crop "
                        f"{pp.crop} (official recipe)", spec.quiet)
                _run_group(spec, protocol, backbone, cache, bar, checked, skipped, env,
                           indices, done)
            del model  # the next precision group loads its own
    say(
        f"done in {time.perf_counter() - t_run:.1f}s; records under "
        f"{Path(spec.results_dir) / 'runs' / protocol.name}",
        spec.quiet,
    )
    return [done[key] for key in sorted(done)]


def _run_group(spec: RunSpec, protocol: Protocol, backbone, cache: Cache, bar, checked: dict,
               skipped: dict, env: dict, indices: list[int],
               done: dict[tuple[int, int], ResultRecord]) -> None:
    """Detectors sharing one backbone and preprocessing: their features in one pass, then each
    detector and seed (records into ``done``)."""
    names = [spec.detectors[i] for i in indices]
    feats = Features(backbone, protocol, cache, spec, bar, checked, skipped)
    # every kind any detector of the group needs, in one pass over each set
    kinds = feature_kinds(frozenset().union(*(DETECTORS.get(n).needs for n in names)))
    feats.prefetch(protocol.sets(), kinds)
    for i, name in zip(indices, names, strict=True):
        for j, seed in enumerate(run_seeds(name, spec.seeds, spec.quiet)):
            det = make_detector(name, spec.params.get(name))
            rec = run_one(det, seed, protocol, backbone, feats, cache, spec, env)
            done[i, j] = rec
            g = rec.groups.get("average", {})
            say(
                f"  {det.name} seed {seed}: "
                f"AUROC {100 * g.get('auroc', float('nan')):.2f} "
                f"FPR95 {100 * g.get('fpr95', float('nan')):.2f} "
                f"ID acc {100 * (rec.id_accuracy or 0):.2f} "
                f"({rec.timings['total']:.1f}s)",
                spec.quiet,
            )


def run_seeds(name: str, seeds: list[int], quiet: bool = True) -> list[int]:
    """The seeds a detector runs with: all of them, or only the first for a detector declaring
    itself deterministic (``stochastic = False``), whose other seeds would repeat its record."""
    if DETECTORS.get(name).stochastic or len(seeds) < 2:
        return list(seeds)
    say(f"  {name} is deterministic: run once, with seed {seeds[0]} (seeds {seeds[1:]} would "
        "repeat it)", quiet)
    return list(seeds[:1])


def run_one(
    det: Detector,
    seed: int,
    protocol: Protocol,
    backbone,
    feats: Features,
    cache: Cache,
    spec: RunSpec,
    env: dict,
) -> ResultRecord:
    """Set up and score one detector with one seed; write its record and scores."""
    kinds = feature_kinds(det.needs)
    sets = protocol.sets()
    image_log: dict = {}
    arrays = {s.name: feats.get(s, kinds, image_log) for s in sets}
    # a streaming detector's scores depend on the whole seeded stream: no score cache at all
    stored = None if det.streaming else scoring.StoredScores(
        cache, det, seed, protocol, backbone, {s.name: feats.manifest(s) for s in sets}, kinds,
        spec.decode)
    hit = stored is not None and stored.hit
    t_setup = time.perf_counter()
    text_stats: dict = {"text_hits": 0, "text_misses": 0}
    if hit:  # what setup reported (training split, checkpoint) when the scores were made
        info = stored.setup_info()
    else:
        info = {}
        seed_everything(seed)
        det.setup(feats.context(seed, info, text_stats))
        if det.feature_backbone is not None:
            arrays = {s.name: feats.extract_with(det.feature_backbone, s, kinds) for s in sets}
            info["feature_backbone"] = det.feature_backbone.key()
    t_score = time.perf_counter()
    orders: dict = {}
    if stored is None:
        scores, preds, orders = _score_streaming(det, protocol, feats, arrays, seed,
                                                 backbone.device, info)
    else:
        scores, preds = stored.get_or_score(det, arrays, backbone.device, info)
    t_metrics = time.perf_counter()
    labels = {s.name: np.asarray(feats.manifest(s).labels) for s in sets}
    per_set, groups, acc, shifted = evaluate(protocol, scores, preds, labels)
    t_end = time.perf_counter()
    extract_s = feats.take_seconds()
    _, precision_why = resolve_precision(spec.precision, det)
    stem = record_stem(
        Path(spec.results_dir) / "runs" / protocol.name
        / backbone_dir(spec.backbone, backbone.precision, spec.preprocess), det, seed
    )
    suffix = measurement_suffix(spec.limit, feats.skipped,
                                {s.name: feats.manifest(s).digest() for s in sets})
    stem = stem.with_name(stem.name + suffix)
    if distributed.is_main():  # under torchrun only rank 0 writes records
        atomic_save_npz(
            stem.with_suffix(".npz"),
            **{f"scores/{n}": v for n, v in scores.items()},
            **{f"preds/{n}": v for n, v in preds.items()},
            **{f"labels/{n}": v for n, v in labels.items()},
            **{f"order/{n}": v for n, v in orders.items()},
        )
    rec = ResultRecord(
        detector={**det.describe(), "stochastic": type(det).stochastic},
        protocol=protocol_info(protocol, feats),
        backbone={
            "spec": spec.backbone,
            "identity": backbone.identity,
            "precision": backbone.precision,
            "precision_requested": spec.precision,
            "precision_reason": precision_why,
            "preprocess": backbone.preprocess.to_dict(),
            "recipe": recipe_record(det, spec),
        },
        seed=seed,
        metrics=per_set,
        groups=groups,
        id_accuracy=acc,
        metrics_schema=M.METRICS_SCHEMA_VERSION,
        timings={
            "extract": extract_s,
            "setup": t_score - t_setup,
            "score": t_metrics - t_score,
            "metrics": t_end - t_metrics,
            "total": extract_s + (t_end - t_setup),
        },
        cache={"images": image_log, "scores_hit": hit, **text_stats},
        environment=env,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        scores_file=stem.with_suffix(".npz").name,
        shifted=shifted,
        limit=spec.limit,
        train=info.pop("train", None),
        info=info,
        skipped_unreadable=dict(feats.skipped),
    )
    if distributed.is_main():
        rec.write(stem.with_suffix(".json"))
    return rec


def _score_streaming(det: Detector, protocol: Protocol, feats: Features, arrays: dict,
                     seed: int, device, info: dict) -> tuple[dict, dict, dict]:
    """A streaming detector's (scores, predictions, stream orders) over the seeded test streams
    (``features/stream.py``); the stream's description goes to ``info["stream"]``."""
    manifests = {s.name: feats.manifest(s) for s in protocol.sets()}
    out = streaming.score_protocol(
        det, protocol.id_test.name, [x.name for x in protocol.extra_id],
        [o.name for o in protocol.ood], arrays, device, seed,
        check=lambda key, name, sc: scoring.check_scores(det.name, key, sc, manifests[name]))
    info["stream"] = out.record
    return out.scores, out.preds, out.orders


def evaluate(protocol: Protocol, scores: dict[str, np.ndarray], preds: dict[str, np.ndarray],
             labels: dict[str, np.ndarray]) -> tuple[dict, dict, float | None, dict]:
    """(metrics per OOD set, their group means, ID accuracy, shifted-ID results) of one run."""
    paired = streaming.paired_scores
    per_set = {o.name: M.ood_metrics(paired(scores, protocol.id_test.name, o.name), scores[o.name])
               for o in protocol.ood}
    groups = M.summarize(per_set, protocol.groups())
    acc = M.id_accuracy(preds[protocol.id_test.name], labels[protocol.id_test.name])
    shifted = {}
    for x in protocol.extra_id:
        sm = {o.name: M.ood_metrics(paired(scores, x.name, o.name), scores[o.name])
              for o in protocol.ood}
        shifted[x.name] = {
            "id_accuracy": M.id_accuracy(preds[x.name], labels[x.name]),
            "metrics": sm,
            "groups": M.summarize(sm, protocol.groups()),
        }
    return per_set, groups, acc, shifted


def protocol_info(protocol: Protocol, feats: Features) -> dict:
    """Protocol name, version, class list hash and each set's size and manifest hash."""
    sets = {}
    for role, group_sets in (
        ("id", [protocol.id_test]),
        ("shifted-id", protocol.extra_id),
        ("ood", protocol.ood),
    ):
        for s in group_sets:
            m = feats.manifest(s)
            sets[s.name] = {
                "role": role,
                "group": s.group,
                "n": len(m),
                "manifest_sha256": m.digest(),
            }
    return {
        "name": protocol.name,
        "version": protocol.version,
        "n_classes": len(protocol.classnames),
        "classnames_sha256": _sha(protocol.classnames),
        "sets": sets,
        **({"templates": list(protocol.templates)} if protocol.templates else {}),
    }


def _sha(names: list[str]) -> str:
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()[:16]
