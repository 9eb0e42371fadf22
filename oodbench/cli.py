"""The ``oodbench`` command line: run, list, leaderboard, data, cache.

User errors (unknown names, bad configs, missing data) print one message and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import yaml

from oodbench.errors import ConfigError, OodbenchError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers like 0,1,2; got {text!r}"
        ) from None


def _param(text: str) -> tuple[str, str, object]:
    """'mcm.temperature=0.5' -> ('mcm', 'temperature', 0.5) (value parsed as YAML)."""
    key, eq, value = text.partition("=")
    det, dot, field = key.partition(".")
    if not eq or not dot or not det or not field:
        raise argparse.ArgumentTypeError(f"--param expects DETECTOR.FIELD=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return det, field, parsed


CACHE_HELP = ("feature cache (default $OODBENCH_CACHE, else $XDG_CACHE_HOME/oodbench, else "
              "~/.cache/oodbench; an empty value counts as unset)")
RESULTS_HELP = "where records and leaderboards go (default: results/ under the current folder)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from oodbench import __version__

    p = argparse.ArgumentParser(prog="oodbench", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"oodbench {__version__}")
    p.add_argument("-q", "--quiet", dest="global_quiet", action="store_true",
                   help="warnings and errors only (for scripts); also accepted after the command")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="extract features once, score detectors, write result records")
    r.add_argument("--spec", type=Path, help="YAML run spec (command-line flags override it)")
    r.add_argument(
        "--detector",
        "--detectors",
        dest="detectors",
        type=_csv,
        help="detector name(s), comma-separated, e.g. mcm,energy",
    )
    r.add_argument("--protocol", help="protocol name (oodbench list protocols) or a protocol "
                   "file, path/to/protocol.yaml (README: Your own data)")
    r.add_argument("--backbone", help="backbone name or open_clip ARCH:TAG, ARCH:/path or "
                   "ARCH:random (oodbench list backbones; default: toy)")
    r.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default 0)")
    r.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        help="hyperparameter override DETECTOR.FIELD=VALUE (repeatable)",
    )
    r.add_argument("--data-root", help="data root (default $OODBENCH_DATA)")
    r.add_argument("--cache-dir", help=CACHE_HELP)
    r.add_argument("--results-dir", help=RESULTS_HELP)
    r.add_argument("--device", help="auto | cpu | cuda[:N] (default auto)")
    r.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        help="backbone precision; a detector that does not tolerate it runs at its declared one "
        "(fp32 for the trained detectors)",
    )
    r.add_argument(
        "--interpolation",
        choices=["bicubic", "bilinear", "nearest"],
        help="override the weights' resize interpolation",
    )
    r.add_argument("--resize", type=int, help="override the resize size (shorter side)")
    r.add_argument("--crop", type=int, help="override the center-crop size")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--workers", type=int, help="data loader workers (default: cores - 1)")
    r.add_argument(
        "--decode",
        choices=["cpu", "device"],
        help="JPEG decoding: cpu (reference) or device (GPU, checked on a sample first)",
    )
    r.add_argument("--limit", type=int, help="at most N images per set, the training split "
                   "included (whole classes of up to 16 images; smoke runs, records say so)")
    r.add_argument(
        "--chunk-size", type=int, help="images per resumable extraction chunk (default 4096)"
    )
    r.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="score without missing/corrupt images (the record counts them per set) "
        "instead of stopping with their list",
    )
    r.add_argument("-q", "--quiet", action="store_true",
                   help="no progress or status lines; warnings and errors only")

    b = sub.add_parser(
        "bench",
        help="what `make bench` runs: real protocol if data is set up, "
        "else the toy protocols; then the leaderboards",
    )
    b.add_argument("--detector", "--detectors", dest="detectors", type=_csv, default=["mcm"])
    b.add_argument(
        "--protocol",
        type=_csv,
        help="protocol name(s) or YAML protocol file(s); default: imagenet1k-mos4 when "
        "OODBENCH_DATA is set, else toy,toy-unseen,toy-shift",
    )
    b.add_argument("--backbone", help="default: ViT-B-16:openai with real data, toy otherwise")
    b.add_argument("--seeds", type=_seeds, default=[0])
    b.add_argument("--data-root", help="data root (default $OODBENCH_DATA; make bench DATA=DIR)")
    b.add_argument("--limit", type=int, help="at most N images per set, training included "
                   "(smoke runs; make bench LIMIT=N)")
    b.add_argument("--param", action="append", type=_param, default=[],
                   help="hyperparameter override DETECTOR.FIELD=VALUE (repeatable; make bench "
                   "PARAM='mcm.temperature=1 ...')")
    b.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="backbone precision (make bench PRECISION=fp16)")
    b.add_argument("--results-dir", default="results", help=RESULTS_HELP)
    b.add_argument("--cache-dir", help=CACHE_HELP)
    b.add_argument("--device", default="auto")
    b.add_argument("-q", "--quiet", action="store_true",
                   help="no progress or status lines; warnings and errors only")

    ls = sub.add_parser("list", help="list registered detectors, protocols or backbones "
                        "(backbones: also every open_clip ARCH:TAG, marking the weights present)")
    ls.add_argument("what", choices=["detectors", "protocols", "backbones"])
    ls.add_argument("--local", action="store_true",
                    help="backbones: only open_clip weights present in the local cache")

    lb = sub.add_parser("leaderboard", help="build CSV + markdown (+ LaTeX) leaderboards from "
                        "result records and print them")
    lb.add_argument("--results-dir", default="results")
    lb.add_argument("--out", help="output folder (default <results-dir>/leaderboard)")
    lb.add_argument("--format", default="md,csv",
                    help="tables to write, comma-separated: md, csv, tex (default md,csv)")
    lb.add_argument("--plots", action="store_true",
                    help="also write ROC curves, score histograms and a ROC overlay per protocol")
    lb.add_argument("--include-limited", action="store_true",
                    help="also tabulate smoke runs (--limit), as rows of their own")
    lb.add_argument("-q", "--quiet", action="store_true")

    d = sub.add_parser("data", help="check a data root for a protocol, index it, or prepare it")
    dsub = d.add_subparsers(dest="data_command", required=True)
    layout_help = ("how the data root is laid out: oodbench (docs/data.md), mcm, openood-vlm "
                   "(default: $OODBENCH_LAYOUT, else detected)")
    dc = dsub.add_parser("check", help="verify layout and counts; say what is missing and where")
    dc.add_argument("protocol", help="protocol name or YAML protocol file")
    dc.add_argument("--data-root")
    dc.add_argument("--cache-dir", help=CACHE_HELP)
    dc.add_argument("--layout", help=layout_help)
    dc.add_argument("--deep", action="store_true", help="also decode every image (slow)")
    di = dsub.add_parser("index", help="write sha256 checksum tables of a protocol's sets")
    di.add_argument("protocol")
    di.add_argument("--data-root")
    di.add_argument("--layout", help=layout_help)
    dp = dsub.add_parser(
        "prepare",
        help="label a flat ImageNet val folder (as ILSVRC2012_img_val.tar unpacks) from the "
        "official ground truth: writes an image list under <data root>/.oodbench/lists/, never "
        "moves files")
    dp.add_argument("what", choices=["imagenet-val"])
    dp.add_argument("--ground-truth", required=True, type=Path,
                    help="LOC_val_solution.csv (Kaggle), or the devkit's "
                    "ILSVRC2012_validation_ground_truth.txt with --meta")
    dp.add_argument("--meta", type=Path, help="the devkit's data/meta.mat (ILSVRC2012_ID -> WNID)")
    dp.add_argument("--data-root")
    dp.add_argument("--layout", help=layout_help)

    c = sub.add_parser("cache", help="inspect and maintain the feature cache")
    csub = c.add_subparsers(dest="cache_command", required=True)
    for name, text in (
        ("ls", "list entries"),
        ("verify", "check every entry's checksum"),
        ("gc", "remove damaged entries and stale chunks"),
    ):
        cp = csub.add_parser(name, help=text)
        cp.add_argument("--cache-dir", help=CACHE_HELP)
        if name == "gc":
            cp.add_argument("--older-than-days", type=float)
            cp.add_argument("--dry-run", action="store_true")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from oodbench.runner import RunSpec, run

    base: dict = {}
    if args.spec:
        base = load_yaml(args.spec)
    flags = {
        "detectors": args.detectors,
        "protocol": args.protocol,
        "backbone": args.backbone,
        "seeds": args.seeds,
        "data_root": args.data_root,
        "cache_dir": args.cache_dir,
        "results_dir": args.results_dir,
        "device": args.device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "limit": args.limit,
        "decode": args.decode,
        "chunk_size": args.chunk_size,
    }
    spec = {**base, **{k: v for k, v in flags.items() if v is not None}}
    if args.quiet:
        spec["quiet"] = True
    if args.skip_unreadable:
        spec["skip_unreadable"] = True
    pp = {
        k: v
        for k, v in (
            ("interpolation", args.interpolation),
            ("resize", args.resize),
            ("crop", args.crop),
        )
        if v is not None
    }
    if pp:
        spec["preprocess"] = {**spec.get("preprocess", {}), **pp}
    for det, field, value in args.param:
        spec.setdefault("params", {}).setdefault(det, {})[field] = value
    spec.setdefault("backbone", "toy")
    if "protocol" not in spec:
        raise ConfigError("no protocol given: pass --protocol NAME (oodbench list protocols)")
    run(RunSpec.from_dict(spec, where=str(args.spec) if args.spec else "command line"))
    return 0


TOY_PROTOCOLS = ["toy", "toy-unseen", "toy-shift"]


def cmd_bench(args: argparse.Namespace) -> int:
    from oodbench.leaderboard import build_leaderboards
    from oodbench.progress import say
    from oodbench.runner import RunSpec, run

    data_root = args.data_root or os.environ.get("OODBENCH_DATA")
    protocols = args.protocol or (["imagenet1k-mos4"] if data_root else TOY_PROTOCOLS)
    params: dict[str, dict] = {}
    for det, field, value in args.param:
        params.setdefault(det, {})[field] = value
    extra = {k: v for k, v in (("limit", args.limit), ("precision", args.precision))
             if v is not None}
    real = any(not p.startswith("toy") for p in protocols)
    backbone = args.backbone or ("ViT-B-16:openai" if real else "toy")
    from oodbench.backbones import check_backbone

    check_backbone(backbone)  # before any protocol is built or scanned
    if not args.protocol and not data_root:
        say(
            "[yellow]No real data configured (OODBENCH_DATA is unset): running the built-in toy "
            "protocols with the toy backbone.[/] For ImageNet-1k vs the MOS four, prepare the data "
            "as docs/data.md says and run: OODBENCH_DATA=/path/to/data make bench "
            f"DETECTOR={','.join(args.detectors)}",
            args.quiet,
        )
    for protocol in protocols:
        detectors = _detectors_for(protocol, args.detectors, params, data_root, args.cache_dir,
                                   args.quiet) if len(protocols) > 1 else args.detectors
        if not detectors:
            continue
        run(
            RunSpec(
                detectors=detectors,
                protocol=protocol,
                backbone=backbone,
                seeds=args.seeds,
                params={k: v for k, v in params.items() if k in detectors},
                data_root=data_root,
                cache_dir=args.cache_dir,
                results_dir=args.results_dir,
                device=args.device,
                quiet=args.quiet,
                **extra,
            )
        )
    # plots too, so that a rebuild keeps the links (and PNGs) that `leaderboard --plots` made
    # a bench with --limit tabulates its smoke rows (marked as such), else it would have none
    written = build_leaderboards(Path(args.results_dir), None, plots=True,
                                 include_limited=bool(args.limit))
    for path in written:
        say(f"leaderboard: {path}", args.quiet)
    return 0


def _detectors_for(protocol: str, detectors: list[str], params: dict, data_root, cache_dir,
                   quiet: bool) -> list[str]:
    """The detectors that can run on ``protocol``: over several protocols a bench skips (and says)
    a detector that refuses one, e.g. Local-Prompt on toy-unseen, instead of stopping."""
    from oodbench.features.cache import Cache, default_cache_dir
    from oodbench.progress import say
    from oodbench.protocols import protocol_class
    from oodbench.runner import make_detector

    built = protocol_class(protocol)().build(Path(data_root) if data_root else None,
                                            Cache(cache_dir or default_cache_dir()).root)
    keep = []
    for name in detectors:
        try:
            make_detector(name, params.get(name)).check_protocol(built)
            keep.append(name)
        except ConfigError as e:
            say(f"[yellow]skipping {name} on {protocol}:[/] {e}", quiet)
    return keep


def load_yaml(path: Path) -> dict:
    """Read a YAML run spec safely, with the file named in any error."""
    if not Path(path).is_file():
        raise ConfigError(f"run spec {path} does not exist")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"run spec {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"run spec {path} must be a mapping of fields")
    return data


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import oodbench

    reg = {
        "detectors": oodbench.DETECTORS,
        "protocols": oodbench.PROTOCOLS,
        "backbones": oodbench.BACKBONES,
    }[args.what]
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column(args.what[:-1])
    table.add_column("description")
    here = _local_weights() if args.what == "backbones" else {}
    for name in reg.names():
        mark = {True: " (weights in the local cache)", False: " (weights not in the local "
                "cache)"}.get(here.get(name), "")
        table.add_row(name, reg.describe(name) + mark)
    out = Console(width=200)
    if not (args.what == "backbones" and args.local):
        out.print(table)
    if args.what == "backbones":
        _list_open_clip(out, args.local)
    return 0


def _local_weights() -> dict[str, bool]:
    """``ARCH:TAG`` -> whether its weights are in the local cache, for every open_clip tag."""
    from oodbench.backbones.openclip import pretrained_table

    return {f"{arch}:{tag}": here for arch, tag, here in pretrained_table()}


def _list_open_clip(out, local_only: bool) -> None:
    """Every open_clip ARCH:TAG, one line per architecture, its tags marked * when the weights
    are in the local cache (Hugging Face hub or ~/.cache/clip), so they load offline."""
    from rich.table import Table

    from oodbench.backbones.openclip import pretrained_table

    rows = pretrained_table()
    by_arch: dict[str, list[str]] = {}
    for arch, tag, here in rows:
        if here or not local_only:
            by_arch.setdefault(arch, []).append(f"{tag}*" if here else tag)
    n_here = sum(here for *_, here in rows)
    out.print(f"\n[bold]open_clip weights[/] (--backbone ARCH:TAG; * = present in the local cache, "
              f"loads offline: {n_here} of {len(rows)}). Any ARCH also takes ARCH:random (seeded "
              "random weights: smoke runs of the real path, never ranked) and "
              "ARCH:/path/to/weights.{pt,safetensors}.", highlight=False)
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("architecture")
    table.add_column("pretrained tags")
    for arch, tags in by_arch.items():
        table.add_row(arch, ", ".join(tags))
    out.print(table)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from oodbench.leaderboard import build_leaderboards, terminal_table

    def show(layout, rows) -> None:
        from rich.console import Console

        Console(width=max(Console().width, 150)).print(terminal_table(layout, rows))

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    written = build_leaderboards(
        Path(args.results_dir), Path(args.out) if args.out else None, plots=args.plots,
        include_limited=args.include_limited, formats=formats,
        show=None if args.quiet else show,
    )
    if not args.quiet:
        for path in written:
            print(path)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from oodbench.features.cache import default_cache_dir
    from oodbench.protocols import protocol_class
    from oodbench.protocols.folders import FolderProtocol

    root = args.data_root or os.environ.get("OODBENCH_DATA")
    if args.data_command == "prepare":
        return cmd_data_prepare(args, root)
    proto = protocol_class(args.protocol)()
    if root is None and getattr(proto, "default_root", None) is not None:
        root = str(proto.default_root)  # a YAML protocol's own data_root
    if isinstance(proto, FolderProtocol):
        proto = type(proto)(layout=args.layout)
    elif args.layout:
        raise ConfigError(f"protocol {args.protocol} reads no data root, so --layout does not "
                          "apply to it")
    if args.data_command == "index":
        from oodbench.data.prepare import index_protocol
        from oodbench.protocols.folders import FolderProtocol

        if not isinstance(proto, FolderProtocol) or not root:
            raise ConfigError(
                f"data index needs a protocol read from a data root and --data-root "
                f"(or OODBENCH_DATA); {args.protocol} with root {root!r} has neither"
            )
        index_protocol(proto, Path(root))
        return 0
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()  # "" is unset
    kw = {"deep": True} if args.deep else {}
    problems = proto.check(Path(root) if root else None, cache, **kw)
    note = proto.layout_note(Path(root)) if isinstance(proto, FolderProtocol) and root else ""
    layout = f" ({note})" if note else ""
    # count warnings whatever the verdict: a user fixing one set wants to know about the others
    for w in getattr(proto, "count_warnings", lambda r: [])(Path(root)) if root else []:
        print(f"  warning: {w}", file=sys.stderr)
    if problems:
        print(f"data root {root}{layout} is not ready for {args.protocol}:", file=sys.stderr)
        for pr in problems:
            print(f"  - {pr}", file=sys.stderr)
        return 2
    for n in getattr(proto, "link_notes", lambda r: [])(Path(root)) if root else []:
        print(f"  note: {n}", file=sys.stderr)
    shallow = " (folders, lists and counts; --deep also decodes every image)" if (
        root and not args.deep) else ""
    print(f"{args.protocol}: data root {root or '(built-in)'}{layout} is ready{shallow}")
    return 0


def cmd_data_prepare(args: argparse.Namespace, root: str | None) -> int:
    """``data prepare imagenet-val``: label a flat val folder through an image list."""
    from oodbench.data.imagenet_val import flat_val_files, read_ground_truth, write_val_list
    from oodbench.protocols.imagenet import ImageNet1kMOS4

    if not root:
        raise ConfigError("data prepare needs --data-root (or OODBENCH_DATA): the root that "
                          "holds the flat ImageNet val folder")
    base = Path(root).expanduser()
    proto = ImageNet1kMOS4(layout=args.layout)
    spec = next(s for s in proto.specs(base) if s.role == "id")
    if spec.imglist:
        raise ConfigError(f"layout {proto.resolve_layout(base)[0].name} reads ImageNet val "
                          f"through {spec.imglist}, which carries labels; nothing to prepare")
    folder = base / spec.path
    if not folder.is_dir():
        raise ConfigError(f"no ImageNet val folder at {folder} ({proto.layout_note(base)}); put "
                          "the files of ILSVRC2012_img_val.tar there, or pass --layout")
    if not flat_val_files(folder):
        raise ConfigError(f"{folder} holds no ILSVRC2012_val_*.JPEG files at its top (sorted into "
                          "class folders already?); nothing to prepare")
    truth = read_ground_truth(args.ground_truth, args.meta)
    out, m = write_val_list(base, spec.path, truth)
    print(f"labelled {len(m):,} images of {folder} ({len(set(m.labels))} classes) -> {out}; the "
          "images were not moved. Next: oodbench data check imagenet1k-mos4 "
          f"--data-root {root}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from oodbench.features.cache import Cache

    cache = Cache(args.cache_dir)
    cache.require_marker(args.cache_command)  # nothing but an oodbench cache is touched
    strangers = cache.strangers()
    if args.cache_command == "ls":
        entries = cache.entries()
        for e in entries:
            print(f"{e.level:7s} {e.key[:12]}  {e.bytes / 1e6:9.2f} MB  {e.describe()}")
        derived = cache.derived()
        for what, folder, size in derived:
            print(f"{folder.name:20s}  {size / 1e6:9.2f} MB  {what}")
        total = sum(e.bytes for e in entries) + sum(size for *_, size in derived)
        print(
            f"{len(entries)} entries, {total / 1e6:.1f} MB in {cache.root}"
            + (" (toy world and artifacts included)" if derived else "")
            + (f"; {len(strangers)} item(s) that are not the cache's (`cache verify` lists them)"
               if strangers else "")
        )
        return 0
    for p in strangers:
        print(f"not the cache's, left alone: {p}")
    if args.cache_command == "verify":
        bad = cache.verify()
        for d, why in bad:
            print(f"damaged: {d}: {why}")
        print(
            f"{len(cache.entries())} entries checked, {len(bad)} damaged"
            + (" (run `oodbench cache gc` to remove them)" if bad else "")
        )
        return 1 if bad else 0
    removed = cache.gc(args.older_than_days, dry_run=args.dry_run)
    for p in removed:
        print(("would remove " if args.dry_run else "removed ") + str(p))
    return 0


def user_message(e: OodbenchError) -> str:
    """The error's message, without the worker traceback that torch's DataLoader puts in front of
    an error raised in a loader worker (e.g. an image that became unreadable after the check)."""
    text = str(e)
    if "\nOriginal Traceback" not in text:
        return text
    head = f"\n{type(e).__module__}.{type(e).__qualname__}: "
    at = text.rfind(head)
    return text[at + len(head):].strip() if at >= 0 else text.splitlines()[-1]


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run unwinds like a Ctrl-C (locks released,
    finished chunks kept) and says so."""


def _on_signal(signum: int, frame: object) -> None:
    """First Ctrl-C or SIGTERM: unwind. A second one while unwinding (the DataLoader shutting its
    workers down) exits at once, without the traceback it would print from a destructor."""
    def again(signum: int, frame: object) -> None:
        print("oodbench: interrupted again; exiting now (finished chunks and records are kept)",
              file=sys.stderr, flush=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, again)
    signal.signal(signal.SIGTERM, again)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def _signals():
    """Install :func:`_on_signal` for SIGINT and SIGTERM (main thread only), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``oodbench`` console script."""
    args = build_parser().parse_args(argv)
    from oodbench.logs import cli_logging

    args.quiet = args.global_quiet or getattr(args, "quiet", False)
    handlers = {
        "run": cmd_run,
        "bench": cmd_bench,
        "list": cmd_list,
        "leaderboard": cmd_leaderboard,
        "data": cmd_data,
        "cache": cmd_cache,
    }
    # signals held until the unwound frames (and their DataLoader workers) are freed
    with _signals(), cli_logging(args.quiet):
        try:
            return handlers[args.command](args)
        except OodbenchError as e:
            print(f"oodbench: error: {user_message(e)}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `oodbench cache ls | head`: the reader left; so do we, quietly
            with contextlib.suppress(OSError, ValueError):  # no second error at exit's flush
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            print(
                f"oodbench: {what}; finished chunks and records are kept, rerun to resume",
                file=sys.stderr,
            )
            return 143 if isinstance(e, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
