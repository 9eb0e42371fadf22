"""Shared pieces of the performance benchmarks: the machine's description, result files, test data.

Every benchmark prints a table and appends rows to ``benchmarks/perf/results/<name>.csv``; each row
carries the hardware (CPU, cores, GPU, driver), the software (python, torch, torchvision, open_clip,
oodbench commit), the exact command line (with ``OMP_NUM_THREADS`` when set) and the machine's load
average when it started, since a shared machine is noisy.

Test data: ``make_jpegs`` writes JPEGs of ImageNet's typical size (500 x 375, smooth content plus
fine texture, quality 90, about the bytes of an ImageNet image). ``perf-vit-b-16-random``, an
open_clip ViT-B/16 with random weights (the real architecture and cost, no download), and
``perf-jpeg``, a protocol over a folder of those JPEGs (ID images in K classes, OOD images), are
registered by :func:`register`.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from oodbench.backbones.base import Backbone, BackboneDef, finish, preprocess_for
from oodbench.data.images import Preprocess
from oodbench.data.manifest import Manifest
from oodbench.protocols.base import ImageSet, Protocol, ProtocolDef
from oodbench.registry import BACKBONES, PROTOCOLS

RESULTS = Path(__file__).resolve().parent / "results"
JPEG_SIZE = (500, 375)
VIT_RANDOM = "perf-vit-b-16-random"
PERF_PROTOCOL = "perf-jpeg"


def toy_weights_exist() -> bool:
    """True once the toy CLIP's trained weights ship in the package."""
    from oodbench.toy.model import WEIGHTS_PATH

    return WEIGHTS_PATH.is_file()


def warm_imports() -> None:
    """Import the heavy packages both sides of a comparison use, so neither pays for it."""
    import open_clip  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torchvision.transforms  # noqa: F401

    from oodbench.runner import environment

    environment(torch.device("cpu"))


def machine() -> dict:
    """Hardware and software of this run, for every result row."""
    import open_clip
    import torchvision

    from oodbench.runner import git_commit

    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(), "cores": _cores(), "load1": round(os.getloadavg()[0], 2),
        "gpu": "", "driver": "", "cuda": "",
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "open_clip": open_clip.__version__,
        "oodbench_commit": git_commit() or "", "torch_threads": torch.get_num_threads(),
        "command": command(),
    }
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda or "",
                    driver=_nvidia_driver())
    return info


def command() -> str:
    """The command line that produced this run, as it would be typed again (with thread limits)."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
           if k in os.environ]
    return " ".join([*env, "python", shlex.join(sys.argv)])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def append_rows(name: str, rows: list[dict]) -> Path:
    """Append ``rows`` to ``results/<name>.csv`` (header written when the file is new).

    When this version of a benchmark writes columns the file lacks (or lacks some it has), the
    file is rewritten with the union of both headers, older rows left blank in the new columns,
    so a finished run is never lost to a header mismatch.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    fields = list(rows[0])
    old: list[dict] = []
    header = fields
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if header != fields:
                old = list(reader)
        if header != fields:
            header = header + [c for c in fields if c not in header]
    if not path.exists() or old or header != fields:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header, restval="")
            w.writeheader()
            w.writerows(old)
            w.writerows(rows)
        os.replace(tmp, path)
        return path
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields).writerows(rows)
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned table of ``columns`` of ``rows``."""
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for x in cells:
        print("  ".join(v.rjust(w) for v, w in zip(x, widths, strict=True)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def timed(fn: Callable, sync: torch.device | None = None) -> tuple[float, object]:
    """(seconds, result) of ``fn()``, synchronising CUDA before and after."""
    if sync is not None and sync.type == "cuda":
        torch.cuda.synchronize(sync)
    t = time.perf_counter()
    out = fn()
    if sync is not None and sync.type == "cuda":
        torch.cuda.synchronize(sync)
    return time.perf_counter() - t, out


def make_jpegs(folder: Path, n: int, size: tuple[int, int] = JPEG_SIZE, seed: int = 0,
               workers: int | None = None) -> list[str]:
    """``n`` JPEGs of ``size`` under ``folder`` (kept between runs); returns their names.

    Image ``i`` is drawn from its own generator (``seed``, ``i``), so the files are the same
    whether they are written by one process or by ``workers`` processes (default: every core;
    10,000 images take minutes on one core).
    """
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img_{i:06d}.jpg" for i in range(n)]
    todo = [(folder / name, size, seed, i) for i, name in enumerate(names)
            if not (folder / name).exists()]
    workers = min(workers or _cores(), max(1, len(todo) // 64))
    if workers <= 1:
        for job in todo:
            _write_jpeg(*job)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_jpeg, *zip(*todo, strict=True), chunksize=64))
    return names


def _write_jpeg(path: Path, size: tuple[int, int], seed: int, i: int) -> None:
    """One generated JPEG: smooth random colours plus fine noise, quality 90, written atomically."""
    from PIL import Image

    rng = np.random.default_rng((seed, i))
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    fine = rng.normal(0, 12, (size[1], size[0], 3))
    arr = np.clip(np.asarray(im, dtype=np.float64) + fine, 0, 255).astype(np.uint8)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    Image.fromarray(arr).save(tmp, format="JPEG", quality=90)
    os.replace(tmp, path)


class RandomViTB16(BackboneDef):
    """open_clip ViT-B/16 with random weights (seed 0): the real architecture and cost, offline."""

    description = "open_clip ViT-B/16, random init (benchmarks only; numbers mean nothing)"

    def load(self, spec, device="cpu", precision="fp32", preprocess=None) -> Backbone:
        import open_clip

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.create_model("ViT-B-16", pretrained=None)
        model = finish(model, device, precision)
        pp = preprocess_for(Preprocess(resize=224, crop=224), preprocess)
        identity = {"arch": "ViT-B-16", "weights": "random-init-seed0"}
        return Backbone(spec, model, open_clip.get_tokenizer("ViT-B-16"), pp, precision,
                        identity, torch.device(device))


class PerfJpegProtocol(ProtocolDef):
    """Generated JPEGs: ``id/`` labelled round-robin into K ImageNet classes, ``ood/`` as OOD.

    The data root's ``classes.txt`` holds K (written by :func:`make_perf_root`).
    """

    name = PERF_PROTOCOL
    description = "generated 500x375 JPEGs, for performance benchmarks only"

    def build(self, data_root: Path | None, cache_dir: Path) -> Protocol:
        from oodbench.data.classnames import imagenet1k_classnames

        root = Path(data_root)
        k = int((root / "classes.txt").read_text())

        def image_set(sub: str, ood: bool) -> ImageSet:
            names = sorted(p.name for p in (root / sub).glob("*.jpg"))
            labels = tuple(-1 if ood else i % k for i in range(len(names)))
            return ImageSet(sub.upper(), Manifest(sub.upper(), root,
                                                  tuple(f"{sub}/{n}" for n in names), labels),
                            "far" if ood else "")

        return Protocol(self.name, "1", self.description, imagenet1k_classnames()[:k],
                        image_set("id", False), [image_set("ood", True)])


def make_perf_root(root: Path, n: int, classes: int) -> Path:
    """A ``perf-jpeg`` data root with n JPEGs, half ID (in ``classes`` classes), half OOD."""
    make_jpegs(root / "id", n - n // 2, seed=1)
    make_jpegs(root / "ood", n // 2, seed=2)
    (root / "classes.txt").write_text(str(classes))
    return root


def run_inputs(protocol: str, backbone: str | None, images: int, classes: int, data_dir: Path,
               param: list[tuple[str, str, object]]) -> tuple[Path | None, str, dict[str, dict]]:
    """(data root, backbone, params) of a benchmark run: perf-jpeg's JPEGs written once under
    ``data_dir``, the toy backbone on toy protocols (else the random ViT-B/16), and the
    ``--param`` triples as a run spec's per-detector dicts."""
    root = None
    if protocol == PERF_PROTOCOL:
        root = make_perf_root(data_dir / f"perf-jpeg-n{images}-k{classes}", images, classes)
    backbone = backbone or ("toy" if protocol.startswith("toy") else VIT_RANDOM)
    params: dict[str, dict] = {}
    for det, field, value in param:
        params.setdefault(det, {})[field] = value
    return root, backbone, params


def register() -> None:
    """Make the benchmark backbone and protocol known to the runner (idempotent)."""
    if VIT_RANDOM not in BACKBONES:
        BACKBONES.register(VIT_RANDOM)(RandomViTB16)
    if PERF_PROTOCOL not in PROTOCOLS:
        PROTOCOLS.register(PERF_PROTOCOL)(PerfJpegProtocol)
