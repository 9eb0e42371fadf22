"""Leaderboards: result records -> one CSV, markdown (and LaTeX) table per protocol, and plots.

Records are read from ``<results>/runs/<protocol>/<backbone>/<detector>/seed<k>.json`` into the
tidy DataFrame of :mod:`oodbench.frames`. A row is one detector directory (``mcm``, or
``mcm@1a2b3c4d`` for non-default hyperparameters: a distinct row) x backbone x detector version;
its cells are the mean and sample standard deviation (ddof=1) over seeds, one ``groupby``/``agg``
over the records' cells (:func:`row_stats`). Values are percentages with two decimals; costs are
seconds per run (the record's total, its feature extraction, and the detector's own setup +
scoring). A deterministic detector (``stochastic = False``) shows no ``± 0.00``: its seeds repeat
one measurement. Rows are sorted by average FPR95, best first.

A table never mixes protocol versions or metrics-schema versions: such records raise
:class:`LeaderboardError`, naming them. The paper numbers of ``results/reported.csv`` are set
under each reproduced row with the difference, comparing FPR95 only within one convention: an
OOD-positive (OpenOOD) reported FPR95 is compared with our ``fpr95_openood``, and the table says so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from oodbench.errors import OodbenchError
from oodbench.frames import COST_CELLS, cell_frame, run_fields, tidy_frame
from oodbench.io import atomic_write_text
from oodbench.metrics import METRIC_KEYS
from oodbench.record import ResultRecord

FORMATS = ("md", "csv", "tex")
"""Table formats ``build_leaderboards`` writes (markdown and CSV by default)."""

TOLERANCE = {"fpr95": 2.0, "fpr95_openood": 2.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
             "id_accuracy": 1.0}
"""Percentage points a reproduction may differ from the reported number before it is flagged."""

CONVENTIONS = ("id", "ood")
REPORTED_COLUMNS = ("detector", "protocol", "backbone", "ood_set", "metric", "value",
                    "fpr95_convention", "source")
FLAG = "⚠"

FPR95_CONVENTION_TEXT = (
    "FPR95 is the paper convention (MCM / NegLabel rule): ID is the positive class, and FPR95 is "
    "the share of OOD images accepted at the threshold that accepts 95% of ID images. "
    "The OpenOOD v1.5 convention (OOD positive: share of ID images rejected when 95% of OOD is "
    "caught) is a different quantity; it is in the CSV as `*_fpr95_openood` and is used here only "
    "where a reported number was computed that way, on a line that says so."
)


class LeaderboardError(OodbenchError):
    """Result records cannot be put in one table (mixed versions, unreadable or missing records)."""


@dataclass(frozen=True)
class Run:
    """One result record and where it was read from."""

    path: Path
    record: ResultRecord

    @property
    def label(self) -> str:
        """The detector directory name: the registered name, plus '@hash' for non-default params."""
        return self.path.parent.name

    @property
    def variant(self) -> str:
        """What the file name says makes it another measurement ('limit100_1a2b3c4d'; '' for a
        full run)."""
        m = RECORD_NAME.fullmatch(self.path.name)
        return (m.group(2) or "") if m else ""


@dataclass
class Row:
    """One leaderboard row: a detector (with its params and version) on a backbone, over seeds."""

    label: str
    detector: str
    version: str
    params: dict
    backbone: str
    runs: list[Run] = field(default_factory=list)
    explicit: tuple[str, ...] = ()  # params set by hand to their default (kept off toy presets)
    variant: str = ""  # a --limit / --skip-unreadable measurement, kept apart from full runs
    stats: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    declared_stochastic: bool | None = None  # a row built from a frame says it; else the records
    seed_list: list[int] | None = None  # a row built from a frame (no records) lists its seeds

    @property
    def seeds(self) -> list[int]:
        """The seeds of the row's runs, sorted."""
        if self.seed_list is not None:
            return list(self.seed_list)
        return sorted(r.record.seed for r in self.runs)

    @property
    def limit(self) -> int | None:
        """The --limit of the runs (smoke runs on a subset), if any."""
        limits = {r.record.limit for r in self.runs}
        return max((x for x in limits if x is not None), default=None)

    @property
    def data(self) -> str:
        """Short fingerprint of the image lists the runs used ('mixed' when seeds differ)."""
        keys = {data_key(r.record) for r in self.runs}
        return keys.pop() if len(keys) == 1 else "mixed" if keys else ""

    @property
    def skipped(self) -> dict[str, int]:
        """Unreadable images left out per set (``--skip-unreadable``), the most over seeds."""
        out: dict[str, int] = {}
        for r in self.runs:
            for name, n in (r.record.skipped_unreadable or {}).items():
                out[name] = max(out.get(name, 0), int(n))
        return {k: v for k, v in out.items() if v}

    @property
    def stochastic(self) -> bool:
        """Whether the detector's scores depend on the seed: what its records say, else what the
        registered class declares (True for a detector no longer installed)."""
        if self.declared_stochastic is not None:
            return self.declared_stochastic
        said = {r.record.detector.get("stochastic") for r in self.runs} - {None}
        if said:
            return any(said)
        try:
            from oodbench.registry import DETECTORS

            return bool(DETECTORS.get(self.detector).stochastic)
        except Exception:  # not installed any more: assume the seeds matter
            return True

    def mean_std(self, key: str) -> tuple[float | None, float | None]:
        """Mean and sample std over seeds of one cell (:func:`row_stats`; None when missing)."""
        return self.stats.get(key, (None, None))

    def mean(self, key: str) -> float | None:
        """Mean over seeds of one cell (None when no run has it)."""
        return self.mean_std(key)[0]


@dataclass(frozen=True)
class Layout:
    """The columns of one protocol's table: OOD sets, group averages, shifted-ID sets, set sizes."""

    protocol: str
    version: str
    metrics_schema: str
    ood_sets: list[str]
    groups: list[str]
    shifted: list[str]
    id_set: str
    set_sizes: dict[str, int]


@dataclass(frozen=True)
class Reported:
    """One paper-reported number (a row of results/reported.csv), in %."""

    detector: str
    protocol: str
    backbone: str
    ood_set: str
    metric: str
    value: float
    convention: str
    source: str

    @property
    def key(self) -> str:
        """The cell key of the reproduced number it is compared with."""
        openood = self.metric == "fpr95" and self.convention == "ood"
        metric = "fpr95_openood" if openood else self.metric
        return "id_accuracy" if metric == "id_accuracy" else f"{self.ood_set}/{metric}"


# ----------------------------------------------------------------------------- reading records

RECORD_NAME = re.compile(r"seed(\d+)(?:_([a-z0-9_]+))?\.json")
"""A record's file name: ``seed<k>.json``, or ``seed<k>_<variant>.json`` for a limited run."""


def load_runs(results_dir: Path) -> list[Run]:
    """Every result record under ``<results_dir>/runs``, each with its path.

    A file not named like a record (``seed0 (copy).json``) is left out with a warning, so that a
    copy never counts as another seed; a record that cannot be read, or whose seed differs from
    its name, stops the build naming the file.
    """
    runs_dir = Path(results_dir) / "runs"
    paths = sorted(runs_dir.glob("*/*/*/seed*.json"))
    if not paths:
        raise LeaderboardError(
            f"no result records under {runs_dir} (expected runs/<protocol>/<backbone>/<detector>/"
            "seed<k>.json); run `oodbench run ...` first, or pass --results-dir")
    out = []
    for p in paths:
        m = RECORD_NAME.fullmatch(p.name)
        if m is None:
            print(f"oodbench: warning: {p} is not named like a result record "
                  "(seed<k>.json); left out of the leaderboard", file=sys.stderr)
            continue
        try:
            rec = ResultRecord.read(p)
            problem = record_problem(rec)
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
            problem = f"{type(e).__name__}: {e}"
        if problem is None and rec.seed != int(m.group(1)):
            problem = f"it says seed {rec.seed!r} but is named {p.name}"
        if problem is not None:
            raise LeaderboardError(f"result record {p} cannot be read ({problem}); rerun that "
                                   "run or move the file out of the results folder")
        out.append(Run(p, rec))
    return out


def record_problem(rec: ResultRecord) -> str | None:
    """What in a record's shape the leaderboard cannot use, or None (checked before any table)."""
    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    checks = [
        (isinstance(rec.seed, int) and not isinstance(rec.seed, bool), "seed is not an integer"),
        (isinstance(rec.detector, dict) and isinstance(rec.detector.get("name"), str),
         "detector has no name"),
        (isinstance(rec.backbone, dict) and isinstance(rec.backbone.get("spec"), str),
         "backbone has no spec"),
        (isinstance(rec.protocol, dict) and isinstance(rec.protocol.get("name"), str)
         and isinstance(rec.protocol.get("sets", {}), dict), "protocol has no name or sets"),
        (isinstance(rec.metrics, dict) and all(
            isinstance(v, dict) and all(number(x) or x is None for x in v.values())
            for v in rec.metrics.values()), "metrics are not numbers per OOD set"),
        (isinstance(rec.groups, dict) and all(isinstance(v, dict) for v in rec.groups.values()),
         "groups are not metrics per group"),
        (rec.id_accuracy is None or number(rec.id_accuracy), "id_accuracy is not a number"),
        (isinstance(rec.timings, dict), "timings is not a mapping"),
        (isinstance(rec.shifted, dict), "shifted is not a mapping"),
        (rec.limit is None or isinstance(rec.limit, int), "limit is not an integer"),
        (isinstance(rec.skipped_unreadable or {}, dict), "skipped_unreadable is not a mapping"),
    ]
    return next((why for ok, why in checks if not ok), None)


def by_protocol(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by protocol name (as the records say)."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.record.protocol["name"], []).append(r)
    return dict(sorted(out.items()))


def check_versions(protocol: str, runs: Sequence[Run]) -> None:
    """Refuse records of one protocol that differ in protocol or metrics-schema version."""
    for what, get in (("protocol version", lambda r: str(r.record.protocol.get("version"))),
                      ("metrics-schema version", lambda r: str(r.record.metrics_schema))):
        seen: dict[str, list[Path]] = {}
        for r in runs:
            seen.setdefault(get(r), []).append(r.path)
        if len(seen) > 1:
            lines = [f"  {what} {v!r}: " + ", ".join(str(p) for p in ps[:5])
                     + (f" and {len(ps) - 5} more" if len(ps) > 5 else "")
                     for v, ps in sorted(seen.items())]
            raise LeaderboardError(
                f"protocol {protocol}: records of different {what}s cannot share one table:\n"
                + "\n".join(lines)
                + "\nRerun the old ones with the current oodbench, or move them out of the "
                "results folder.")


def layout_of(protocol: str, runs: Sequence[Run]) -> Layout:
    """Columns of a protocol's table, in the order the records list the sets."""
    first = runs[0].record
    ood, groups, shifted, sizes = [], [], [], {}
    id_set = ""
    for r in runs:
        for name, s in r.record.protocol.get("sets", {}).items():
            sizes.setdefault(name, s.get("n"))
            role = s.get("role")
            if role == "ood" and name not in ood:
                ood.append(name)
            elif role == "shifted-id" and name not in shifted:
                shifted.append(name)
            elif role == "id":
                id_set = id_set or name
        for name in r.record.metrics:
            if name not in ood:
                ood.append(name)
        for g, members in _group_members(r.record).items():
            if g not in groups and len(members) > 1 and set(members) != set(ood):
                groups.append(g)
        for name in r.record.shifted:
            if name not in shifted:
                shifted.append(name)
    return Layout(protocol, str(first.protocol.get("version")), str(first.metrics_schema), ood,
                  groups, shifted, id_set, sizes)


def _group_members(rec: ResultRecord) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, s in rec.protocol.get("sets", {}).items():
        if s.get("role") == "ood" and s.get("group"):
            out.setdefault(s["group"], []).append(name)
    return out


def backbone_label(backbone: dict) -> str:
    """A record's backbone as a leaderboard shows it: the spec, with the precision unless fp32,
    and the user's preprocessing when it replaced the detector's official recipe."""
    precision = backbone.get("precision", "fp32")
    label = backbone["spec"] + ("" if precision == "fp32" else f" ({precision})")
    recipe = backbone.get("recipe") or {}
    if recipe.get("official") is False:
        pp = recipe.get("overrides") or {}
        label += " [not the official recipe: " + ", ".join(f"{k}={v}" for k, v in pp.items()) + "]"
    return label


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """The tidy frame (:func:`oodbench.frames.tidy_frame`) of runs read from a results folder."""
    return tidy_frame((r.record, run_fields(r.record, r.label, backbone_label(r.record.backbone),
                                            r.variant, r.path)) for r in runs)


def row_stats(rows: Sequence[Row]) -> None:
    """Fill each row's ``stats``: mean and sample std (ddof=1) over its runs of every cell of
    :func:`oodbench.frames.cell_frame`, by one ``groupby``/``agg`` (missing values are skipped; a
    std of fewer than two values is None)."""
    runs = [r for row in rows for r in row.runs]
    if not runs:
        return
    cells = cell_frame(runs_frame(runs))
    which = {str(r.path): i for i, row in enumerate(rows) for r in row.runs}
    agg = cells.groupby([which[p] for p in cells.index]).agg(["mean", "std"])
    for i, row in enumerate(rows):
        line = agg.loc[i]
        row.stats = {k: (_num(line[(k, "mean")]), _num(line[(k, "std")]))
                     for k in cells.columns}


def _num(v: float) -> float | None:
    return None if pd.isna(v) else float(v)


def rows_of(runs: Sequence[Run]) -> list[Row]:
    """Runs grouped into rows (detector dir x backbone x detector version), best average first."""
    rows: dict[tuple[str, str, str], Row] = {}
    for r in runs:
        det = r.record.detector
        bb = backbone_label(r.record.backbone)
        key = (r.label, bb, str(det.get("version")), r.variant)
        row = rows.setdefault(key, Row(r.label, det["name"], str(det.get("version")),
                                       det.get("params", {}), bb,
                                       explicit=tuple(det.get("explicit_defaults", ())),
                                       variant=r.variant))
        row.runs.append(r)
    for row in rows.values():
        row.runs.sort(key=lambda r: r.record.seed)
    row_stats(list(rows.values()))
    return sorted(rows.values(), key=_sort_key)


def _sort_key(row: Row) -> tuple:
    fpr = row.mean("average/fpr95")
    auroc = row.mean("average/auroc")
    return (fpr if fpr is not None else math.inf, -(auroc or 0.0), row.label, row.backbone,
            row.variant)


def data_key(rec: ResultRecord) -> str:
    """12-hex fingerprint of every set's manifest hash: equal keys = the same images were used."""
    sets = {n: s.get("manifest_sha256") for n, s in sorted(rec.protocol.get("sets", {}).items())}
    return hashlib.sha256(json.dumps(sets, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- reported numbers

def read_reported(path: Path) -> list[Reported]:
    """Parse results/reported.csv, naming the line of any malformed entry."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(line for line in f if not line.lstrip().startswith("#"))
        missing = [c for c in REPORTED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LeaderboardError(f"{path}: missing column(s) {missing}; expected "
                                   f"{', '.join(REPORTED_COLUMNS)}")
        out = []
        for i, row in enumerate(reader, 2):
            out.append(_reported_entry(row, f"{path}, row {i}"))
    return out


def _reported_entry(row: dict, where: str) -> Reported:
    metric = row["metric"].strip()
    conv = (row["fpr95_convention"] or "").strip()
    if metric not in (*METRIC_KEYS, "id_accuracy") or metric == "fpr95_openood":
        raise LeaderboardError(f"{where}: metric {metric!r} is not one of fpr95, auroc, aupr_in, "
                               "aupr_out, id_accuracy (say the FPR95 convention in its own column)")
    if metric == "fpr95" and conv not in CONVENTIONS:
        raise LeaderboardError(f"{where}: an FPR95 needs fpr95_convention 'id' (ID positive, MCM "
                               f"rule) or 'ood' (OOD positive, OpenOOD), got {conv!r}")
    try:
        value = float(row["value"])
    except ValueError:
        raise LeaderboardError(f"{where}: value {row['value']!r} is not a number") from None
    return Reported(row["detector"].strip(), row["protocol"].strip(), row["backbone"].strip(),
                    row["ood_set"].strip(), metric, value, conv, row["source"].strip())


def default_reported_path(results_dir: Path) -> Path | None:
    """``<results>/reported.csv``, else the copy in the oodbench checkout's results/ folder."""
    for p in (Path(results_dir) / "reported.csv",
              Path(__file__).resolve().parents[1] / "results" / "reported.csv"):
        if p.is_file():
            return p
    return None


def reported_for(row: Row, layout: Layout, reported: Sequence[Reported]) -> list[Reported]:
    """Reported numbers for a row with the paper-default params (no '@' label) on its protocol."""
    if "@" in row.label or row.limit:  # a smoke run is not compared with a paper
        return []
    return [r for r in reported if r.detector == row.detector and r.protocol == layout.protocol
            and backbone_matches(r.backbone, row.backbone)]


def backbone_matches(reported: str, spec: str) -> bool:
    """Same backbone spec, or the same arch with a checkpoint file named like the reported weights
    (``ViT-B-16:CMA-ckpt`` matches ``ViT-B-16:/ckpts/CMA-ckpt.pt``)."""
    if reported == spec:
        return True
    arch, _, weights = spec.partition(":")
    r_arch, _, r_weights = reported.partition(":")
    is_file = "/" in weights or "\\" in weights
    return arch == r_arch and is_file and Path(weights).stem == r_weights


def differences(row: Row, entries: Sequence[Reported]) -> list[dict]:
    """Reproduced minus reported for each reported number, flagged outside the tolerance band."""
    out = []
    for e in entries:
        ours = row.mean(e.key)
        diff = None if ours is None else ours - e.value
        tol = TOLERANCE.get(e.key.rpartition("/")[2], 1.0)
        out.append({"detector": row.label, "backbone": row.backbone, "ood_set": e.ood_set,
                    "metric": e.metric, "fpr95_convention": e.convention,
                    "compared_with": e.key.rpartition("/")[2],
                    "reproduced": _r(ours), "reported": e.value, "difference": _r(diff),
                    "tolerance": tol,
                    "within_tolerance": "" if diff is None else str(abs(diff) <= tol).lower(),
                    "source": e.source})
    return out


# ----------------------------------------------------------------------------- CSV

def csv_columns(layout: Layout) -> list[str]:
    """Cell keys of the CSV, in order (the costs after the run's total time come last, added
    after the first tables were published)."""
    keys = []
    for where in (*layout.ood_sets, *layout.groups, "average"):
        keys += [f"{where}/{m}" for m in METRIC_KEYS]
    keys.append("id_accuracy")
    for s in layout.shifted:
        keys += [f"shifted:{s}/id_accuracy"] + [f"shifted:{s}/{m}" for m in METRIC_KEYS]
    keys += list(COST_CELLS)
    return keys


def leaderboard_frame(layout: Layout, rows: Sequence[Row]) -> pd.DataFrame:
    """The protocol's table as a DataFrame, one line per row: who (detector, params, backbone,
    seeds, data), then every cell of :func:`csv_columns` as a mean column and a ``_std`` column
    (NaN where missing), then ``stochastic``."""
    lines = []
    for row in rows:
        line = {"protocol": layout.protocol, "protocol_version": layout.version,
                "metrics_schema": layout.metrics_schema, "detector": row.label,
                "detector_name": row.detector, "detector_version": row.version,
                "params": json.dumps(row.params, sort_keys=True), "backbone": row.backbone,
                "n_seeds": len(row.seeds), "seeds": " ".join(map(str, row.seeds)),
                "limit": row.limit or "", "data": row.data, "skipped_unreadable": skipped_text(row)}
        for k in csv_columns(layout):
            m, s = row.mean_std(k)
            line[_csv_name(k)] = math.nan if m is None else m
            line[f"{_csv_name(k)}_std"] = math.nan if s is None else s
        line["stochastic"] = str(row.stochastic).lower()
        lines.append(line)
    return pd.DataFrame(lines)


def csv_text(layout: Layout, rows: Sequence[Row]) -> str:
    """The protocol's CSV (:func:`leaderboard_frame`, two decimals, empty where missing)."""
    return leaderboard_frame(layout, rows).to_csv(index=False, lineterminator="\n",
                                                  float_format="%.2f")


def skipped_text(row: Row) -> str:
    """'SUN=3 Places=1': unreadable images the row's runs left out, per set ('' when none)."""
    return " ".join(f"{k}={v}" for k, v in row.skipped.items())


def _csv_name(key: str) -> str:
    if key in COST_CELLS:
        return COST_CELLS[key]
    return key.replace("shifted:", "shifted_").replace("/", "_")


def comparison_csv_text(diffs: Sequence[dict]) -> str:
    """Long-format CSV of reproduced vs reported numbers."""
    buf = io.StringIO()
    cols = ["detector", "backbone", "ood_set", "metric", "fpr95_convention", "compared_with",
            "reproduced", "reported", "difference", "tolerance", "within_tolerance", "source"]
    w = csv.DictWriter(buf, cols, lineterminator="\n")
    w.writeheader()
    w.writerows(diffs)
    return buf.getvalue()


# ----------------------------------------------------------------------------- markdown

def _cell(row: Row, key: str) -> str:
    m, s = row.mean_std(key)
    if m is None:
        return "–"
    if s is None or (s == 0.0 and not row.stochastic and key not in COST_CELLS):
        return f"{m:.2f}"  # one seed, or a deterministic detector's repeats of one measurement
    return f"{m:.2f} ± {s:.2f}"


def seeds_text(row: Row) -> str:
    """'3 (0,1,2)'; 'deterministic (seed 0)' for a detector whose scores ignore the seed (its
    repeated seeds, from before it was run once: 'deterministic (3 runs: 0,1,2)')."""
    seeds = ",".join(map(str, row.seeds))
    n = len(row.seeds)
    if row.stochastic:
        return f"{n} ({seeds})"
    return f"deterministic (seed {seeds})" if n == 1 else f"deterministic ({n} runs: {seeds})"


def _pair(row: Row, where: str, fpr: str = "fpr95") -> str:
    return f"{_cell(row, f'{where}/{fpr}')} / {_cell(row, f'{where}/auroc')}"


def params_text(row: Row) -> str:
    """'default', or the hyperparameters that differ from the detector's registered defaults."""
    if "@" not in row.label:
        return "default"
    defaults = _default_params(row.detector)
    diff = {k: v for k, v in row.params.items()
            if defaults is None or defaults.get(k) != v or k in row.explicit}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(diff.items())) or "default"


def _default_params(detector: str) -> dict | None:
    try:
        from oodbench.registry import DETECTORS

        return DETECTORS.get(detector).Params().to_dict()
    except Exception:  # a detector no longer installed: show every param
        return None


def markdown_text(layout: Layout, rows: Sequence[Row], reported: Sequence[Reported],
                  plots: dict[str, list[tuple[str, str]]] | None = None) -> str:
    """The protocol's markdown page: conventions, the main table with reported rows, shifted-ID
    table, notes and plot links."""
    lines = [f"# {layout.protocol} (protocol v{layout.version})", ""]
    sizes = ", ".join(f"{n} {layout.set_sizes[n]:,}" if layout.set_sizes.get(n) is not None
                      else n for n in [layout.id_set, *layout.shifted, *layout.ood_sets])
    lines += [
        f"Metrics schema v{layout.metrics_schema}. Cells are FPR95↓ / AUROC↑ in %, mean ± sample "
        "standard deviation over seeds (no ± with one seed). Rows are sorted by average FPR95. "
        f"Images per set: {sizes}.", "",
        "A deterministic detector's scores do not depend on the seed: it runs once, and its "
        "cells have no ±. Costs are seconds per run: time/run is the record's total; extract is "
        "the feature extraction it paid for (the first detector of a command extracts what the "
        "others then reuse), setup+score the detector's own work.", "",
        FPR95_CONVENTION_TEXT, "",
    ]
    groups = [*layout.groups, "average"]
    head = (["detector", "backbone", "params", "seeds"] + layout.ood_sets
            + [g.capitalize() for g in groups] + ["ID acc.", "time/run (s)", "extract (s)",
                                                  "setup+score (s)"])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes, all_diffs = [], []
    for row in rows:
        seeds = seeds_text(row)
        name = row.label + (f" v{row.version}" if row.version != "1" else "")
        if row.limit:
            name += f" (smoke: ≤{row.limit} images/set)"
        train = [r.record.train or {} for r in row.runs]
        if any(t.get("paper_data") is False for t in train):
            name += " †"
            why = next((t["data_note"] for t in train if t.get("data_note")), "see its records")
            notes.append(f"† {row.label} on {row.backbone}: trained without the paper's data "
                         f"({why})")
        if row.skipped:
            name += f" ({sum(row.skipped.values())} unreadable skipped)"
            notes.append(f"{row.label} on {row.backbone}: unreadable images were left out "
                         f"(--skip-unreadable): {skipped_text(row)}; its image sets differ from "
                         "the full ones")
        cells = ([name, row.backbone, params_text(row), seeds]
                 + [_pair(row, s) for s in layout.ood_sets] + [_pair(row, g) for g in groups]
                 + [_cell(row, "id_accuracy")] + [_cell(row, k) for k in COST_CELLS])
        lines.append("| " + " | ".join(cells) + " |")
        if row.limit:
            notes.append(f"{row.label} on {row.backbone}: smoke run on at most {row.limit} images "
                         "per set; not comparable with full runs")
        entries = reported_for(row, layout, reported)
        if entries:
            lines += _reported_lines(row, layout, groups, entries)
            all_diffs += differences(row, entries)
    notes += data_notes(rows)
    if not all_diffs and any(r.protocol == layout.protocol for r in reported):
        notes.append("results/reported.csv has paper numbers for this protocol, but none for "
                     "these rows' detector and backbone with paper-default parameters")
    lines.append("")
    if all_diffs:
        lines += [f"↳ lines: the paper's reported numbers and reproduced − reported; {FLAG} "
                  "marks a difference outside the tolerance band "
                  f"(±{TOLERANCE['fpr95']:g} points FPR95, ±{TOLERANCE['auroc']:g} AUROC and "
                  "accuracy). Reported numbers compare with paper-default rows only.", ""]
    if layout.shifted:
        lines += _shifted_lines(layout, rows)
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    if plots:
        lines += ["## Plots", ""]
        for label, files in plots.items():
            links = " · ".join(f"[{what}]({path})" for what, path in files)
            lines.append(f"- {label}: {links}")
        lines.append("")
    return "\n".join(lines)


def data_notes(rows: Sequence[Row]) -> list[str]:
    """Warnings when rows (or the seeds of a row) were evaluated on different image lists."""
    out = [f"{r.label} on {r.backbone}: its seeds used different image lists (manifest hashes "
           "differ); its mean mixes datasets" for r in rows if r.data == "mixed"]
    keys = {r.data for r in rows if r.data != "mixed"}
    if len(keys) > 1:
        out.append("rows were evaluated on different image lists (CSV column `data`: "
                   + ", ".join(f"{r.label}/{r.backbone}={r.data}" for r in rows)
                   + "); compare only rows with the same key")
    return out


def _reported_lines(row: Row, layout: Layout, groups: list[str],
                    entries: Sequence[Reported]) -> list[str]:
    out = []
    for conv in sorted({e.convention for e in entries if e.metric == "fpr95"} or {"id"}):
        chosen = [e for e in entries if e.convention in (conv, "")]
        if not chosen:
            continue
        fpr = "fpr95_openood" if conv == "ood" else "fpr95"
        got = {(e.ood_set, e.metric): e for e in chosen}
        sources = "; ".join(sorted({e.source for e in chosen}))
        conv_text = ("FPR95 OOD-positive (OpenOOD)" if conv == "ood" else "FPR95 ID-positive")
        where = [*layout.ood_sets, *groups]
        if conv == "ood":
            ours = [_pair(row, w, fpr) for w in where]
            out.append("| " + " | ".join(["↳ reproduced, " + conv_text, "", "", ""] + ours
                                         + [""] * (1 + len(COST_CELLS))) + " |")
        rep = [_reported_pair(got, w) for w in where]
        acc = got.get(("", "id_accuracy")) or got.get(("ID", "id_accuracy"))
        out.append("| " + " | ".join([f"↳ reported ({conv_text}): {sources}", "", "", ""] + rep
                                     + [f"{acc.value:.2f}" if acc else ""]
                                     + [""] * len(COST_CELLS)) + " |")
        diffs = [_diff_pair(row, got, w, fpr) for w in where]
        acc_diff = _diff_one(row, acc, "id_accuracy") if acc else ""
        out.append("| " + " | ".join(["↳ reproduced − reported", "", "", ""] + diffs
                                     + [acc_diff] + [""] * len(COST_CELLS)) + " |")
    return out


def _reported_pair(got: dict, where: str) -> str:
    f, a = got.get((where, "fpr95")), got.get((where, "auroc"))
    if f is None and a is None:
        return ""
    return (f"{f.value:.2f}" if f else "–") + " / " + (f"{a.value:.2f}" if a else "–")


def _diff_pair(row: Row, got: dict, where: str, fpr: str) -> str:
    f, a = got.get((where, "fpr95")), got.get((where, "auroc"))
    if f is None and a is None:
        return ""
    return (_diff_one(row, f, f"{where}/{fpr}") if f else "–") + " / " + (
        _diff_one(row, a, f"{where}/auroc") if a else "–")


def _diff_one(row: Row, e: Reported, key: str) -> str:
    ours = row.mean(key)
    if ours is None:
        return "–"
    d = ours - e.value
    flag = f" {FLAG}" if abs(d) > TOLERANCE.get(key.rpartition("/")[2], 1.0) else ""
    return f"{d:+.2f}{flag}"


def _shifted_lines(layout: Layout, rows: Sequence[Row]) -> list[str]:
    head = ["detector", "backbone", f"{layout.id_set} acc."] + [
        f"{s}: acc. / FPR95 / AUROC" for s in layout.shifted]
    out = ["## Shifted ID sets", "",
           "Each shifted set counts as ID (its images must not be flagged): its top-1 accuracy, "
           "and FPR95 / AUROC averaged over the OOD sets with that set as ID.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.label, row.backbone, _cell(row, "id_accuracy")]
        for s in layout.shifted:
            cells.append(" / ".join(_cell(row, f"shifted:{s}/{m}")
                                    for m in ("id_accuracy", "fpr95", "auroc")))
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


# ----------------------------------------------------------------------------- LaTeX, terminal

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(c, c) for c in text)


def latex_frame(layout: Layout, rows: Sequence[Row]) -> pd.DataFrame:
    """The main table as LaTeX cells: (set or group, FPR95↓ / AUROC↑) column pairs, ID accuracy;
    ``mean$\\pm$std``, the mean alone where the markdown shows no ±."""
    groups = [*layout.groups, "average"]
    data = {}
    for row in rows:
        line = {("detector", ""): _latex_escape(row.label), ("backbone", ""):
                _latex_escape(row.backbone)}
        for where in [*layout.ood_sets, *groups]:
            name = _latex_escape(where if where in layout.ood_sets else where.capitalize())
            line[(name, "FPR95$\\downarrow$")] = _cell(row, f"{where}/fpr95")
            line[(name, "AUROC$\\uparrow$")] = _cell(row, f"{where}/auroc")
        line[("ID acc.", "")] = _cell(row, "id_accuracy")
        data[len(data)] = {k: v.replace(" ± ", "$\\pm$").replace("–", "--")
                           for k, v in line.items()}
    frame = pd.DataFrame.from_dict(data, orient="index")
    if len(frame):
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def latex_text(layout: Layout, rows: Sequence[Row]) -> str:
    """The protocol's main table as a LaTeX ``tabular`` (booktabs rules), via ``to_latex``."""
    frame = latex_frame(layout, rows)
    caption = (f"{_latex_escape(layout.protocol)} (protocol v{_latex_escape(layout.version)}): "
               "FPR95 / AUROC in \\%, mean $\\pm$ sample standard deviation over seeds")
    return frame.to_latex(index=False, escape=False, multicolumn=True, multicolumn_format="c",
                          column_format="ll" + "r" * (len(frame.columns) - 2), caption=caption,
                          label=f"tab:{_latex_escape(layout.protocol)}")


def terminal_table(layout: Layout, rows: Sequence[Row]):
    """A rich Table of the main columns (group averages, ID accuracy, costs) for the terminal."""
    from rich.table import Table

    groups = [*layout.groups, "average"]
    table = Table(title=f"{layout.protocol} (protocol v{layout.version}): FPR95↓ / AUROC↑ in %")
    for col in ["detector", "backbone", "seeds", *[g.capitalize() for g in groups], "ID acc.",
                "extract (s)", "setup+score (s)"]:
        table.add_column(col, justify="left" if col in ("detector", "backbone") else "right")
    for row in rows:
        table.add_row(row.label, row.backbone, seeds_text(row), *[_pair(row, g) for g in groups],
                      _cell(row, "id_accuracy"), _cell(row, "extract"), _cell(row, "detect"))
    return table


def frame_tables(tidy: pd.DataFrame) -> list[tuple[Layout, list[Row]]]:
    """(layout, rows) per protocol of a tidy frame (:func:`oodbench.frames.tidy_frame`, e.g. what
    :func:`oodbench.evaluate` returns): rows are detector x backbone x version x variant with
    the same statistics as the leaderboard's, sorted alike."""
    out = []
    for protocol, part in tidy.groupby("protocol", sort=True):
        main = part[part["id_role"] == "id"]
        ood = list(dict.fromkeys(main.loc[main["kind"] == "set", "set"]))
        members = main[main["kind"] == "set"].drop_duplicates("set").groupby("group")["set"]
        groups = [g for g, sets in members if g and len(sets) > 1 and set(sets) != set(ood)]
        shifted = list(dict.fromkeys(part.loc[part["id_role"] == "shifted-id", "id_set"]))
        id_set = main["id_set"].iloc[0] if len(main) else ""
        layout = Layout(str(protocol), str(part["protocol_version"].iloc[0]),
                        str(part["metrics_schema"].iloc[0]), ood, groups, shifted, id_set, {})
        cells = cell_frame(part)
        keys = ["detector", "backbone", "detector_version", "variant"]
        runs = part.drop_duplicates([*keys, "seed"])
        rows = []
        for key, who in runs.groupby(keys, sort=False):
            first = who.iloc[0]
            stoch = who["stochastic"].dropna()
            row = Row(key[0], first["detector_name"], key[2], json.loads(first["params"]),
                      key[1], variant=key[3],
                      declared_stochastic=bool(stoch.any()) if len(stoch) else None)
            row.stats = _frame_stats(cells, who)
            row.seed_list = sorted(int(x) for x in who["seed"])
            rows.append(row)
        out.append((layout, sorted(rows, key=_sort_key)))
    return out


def _frame_stats(cells: pd.DataFrame, who: pd.DataFrame) -> dict:
    key = list(cells.index.names)
    mine = cells.loc[pd.MultiIndex.from_frame(who[key]) if len(key) > 1 else who[key[0]]]
    agg = mine.agg(["mean", "std"])
    return {k: (_num(agg.loc["mean", k]), _num(agg.loc["std", k])) for k in cells.columns}


# ----------------------------------------------------------------------------- build

def random_weights(rec: ResultRecord) -> bool:
    """True for a smoke run on random weights (``ARCH:random``): never ranked."""
    return bool((rec.backbone.get("identity") or {}).get("random_weights"))


def build_leaderboards(results_dir: Path, out_dir: Path | None, plots: bool,
                       reported_path: Path | None = None,
                       include_limited: bool = False, formats: Sequence[str] = ("md", "csv"),
                       show: Callable[[Layout, list[Row]], None] | None = None) -> list[Path]:
    """Write ``<out>/<protocol>.csv`` and ``.md`` for every protocol with records; return the paths.

    ``out_dir`` defaults to ``<results_dir>/leaderboard``; reported numbers come from
    ``reported_path`` or :func:`default_reported_path`. With ``plots``, ROC curves and score
    histograms are written to ``<out>/<protocol>/`` and linked from the markdown. Smoke runs
    (``--limit``) are left out unless ``include_limited``; then they are rows of their own,
    marked as such. ``formats`` picks the tables written (:data:`FORMATS`: ``md``, ``csv``,
    ``tex``); ``show`` is called with each protocol's layout and rows (the CLI prints them).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise LeaderboardError(f"leaderboard format(s) {unknown or '(none)'} unknown; use some of "
                               f"{', '.join(FORMATS)}, comma-separated")
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir else results_dir / "leaderboard"
    rpath = reported_path or default_reported_path(results_dir)
    reported = read_reported(rpath) if rpath else []
    runs = [r for r in load_runs(results_dir) if not random_weights(r.record)]
    limited = [r for r in runs if r.record.limit]
    if limited and not include_limited:
        runs = [r for r in runs if not r.record.limit]
        print(f"oodbench: note: {len(limited)} smoke run(s) (--limit) left out of the "
              "leaderboard; pass --include-limited to show them as rows of their own",
              file=sys.stderr)
        if not runs:
            raise LeaderboardError(f"every result record under {Path(results_dir) / 'runs'} is "
                                   "a smoke run (--limit); pass --include-limited to tabulate them")
    grouped = by_protocol(runs)
    for protocol, runs in grouped.items():  # refuse before writing anything
        check_versions(protocol, runs)
    written = []
    for protocol, runs in grouped.items():
        layout = layout_of(protocol, runs)
        rows = rows_of(runs)
        links = None
        if plots:
            from oodbench.plots import plot_rows

            links = plot_rows(layout, rows, out)
        for fmt in ("csv", "md", "tex"):
            if fmt not in formats:
                continue
            text = (csv_text(layout, rows) if fmt == "csv" else latex_text(layout, rows)
                    if fmt == "tex" else markdown_text(layout, rows, reported, links))
            atomic_write_text(out / f"{protocol}.{fmt}", text)
            written.append(out / f"{protocol}.{fmt}")
        if show is not None:
            show(layout, rows)
        diffs = [d for row in rows for d in differences(row, reported_for(row, layout, reported))]
        if diffs:
            cmp_path = out / f"{protocol}.reported.csv"
            atomic_write_text(cmp_path, comparison_csv_text(diffs))
            written.append(cmp_path)
    return written


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
